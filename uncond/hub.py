"""Where a model folder is: a local path, a subfolder of it, or a Hugging Face hub id fetched where a network is there.

The shipped models are local folders; hub ids (e.g. a diffusers DDPMPipeline, `openai/clip-vit-base-patch32`) work
wherever a network is, and fail with a message naming the id where none is (tests run with HF_HUB_OFFLINE=1).
"""

import os

CONFIG_NAME = "config.json"


def download(hub_id: str) -> str:
    """Fetch a hub repository's configs, safetensors and texts (never pickles) and return its local folder."""
    if not isinstance(hub_id, str) or hub_id.count("/") != 1:
        raise ValueError(f"{hub_id!r} is neither a local folder nor a hub id of the form 'owner/name'")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.md"])
    except Exception as error:  # offline, unknown repository, ...: say what was asked for
        raise ValueError(f"could not fetch {hub_id!r} from the hub ({type(error).__name__}: {error})") from error


def local_folder(path_or_hub_id: str) -> str:
    """The folder itself when it exists here, else the hub repository's download."""
    return path_or_hub_id if os.path.isdir(path_or_hub_id) else download(path_or_hub_id)


def resolve_model_dir(path_or_hub_id: str, subfolder: str | None = None) -> str:
    """A local folder holding config.json: the folder itself, its `subfolder`, or a pipeline's `unet/`."""
    directory = local_folder(path_or_hub_id)
    if subfolder:
        directory = os.path.join(directory, subfolder)
    if not os.path.isfile(os.path.join(directory, CONFIG_NAME)) and os.path.isfile(
        os.path.join(directory, "unet", CONFIG_NAME)
    ):
        directory = os.path.join(directory, "unet")  # a diffusers pipeline folder (model_index.json + unet/)
    if not os.path.isfile(os.path.join(directory, CONFIG_NAME)):
        raise ValueError(
            f"no {CONFIG_NAME} in {directory!r}: expected a folder written by save_pretrained or a diffusers UNet folder"
        )
    return directory
