"""Starting the app: the shipped models at the device's precision, the queue's size, and one clear message when weights are broken.

models, txt2img = load_models("weights", extra=[])   # or SystemExit naming the folder and the command that rebuilds it
"""

import os

import torch

from uncond.pipeline import UnconditionalPipeline, default_device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# each shipped model folder: what it is, and the command that rebuilds it (the data first: README "The data")
MODEL_FOLDERS = {
    "uncond": (
        "unconditional model",
        "python -m uncond.train --data data/emoji-colour/32 --config configs/uncond_cpu32.json --out {folder}",
    ),
    "txt2img": (
        "text-to-image model",
        "python -m txt2img.train --data data/emoji-multi/32 --clip {clip} --config configs/txt2img_cpu32.json --out {folder}",
    ),
    "clip": ("CLIP text encoder", "python -m txt2img.train_clip --data data/emoji-multi/32 --out {folder}"),
}

MAX_UPLOAD = "5mb"  # any uploaded file (the PNG whose settings are restored, the picture of "How it works")


# ---- device, precision and queue ----


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on the CPU (half precision is slower there); fp16 on CUDA, where quality holds: DDIM-20 pixels of the shipped
    unconditional model move by 0.47/255 on average against fp32 (bf16: 6/255, up to 154/255, visibly different images)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def env_int(name: str, default: int) -> int:
    """A positive whole number from the environment variable `name`, or `default` when it is unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"{name} must be a positive whole number, got {value!r}.")
    return int(value)


def queue_settings(device: torch.device) -> tuple[int, int]:
    """(sampling jobs at once, most requests waiting): one job on the CPU (it takes every core), four on a GPU;
    EMOJI_CONCURRENCY and EMOJI_QUEUE_SIZE override them."""
    if torch.device(device).type == "cuda":
        return env_int("EMOJI_CONCURRENCY", 4), env_int("EMOJI_QUEUE_SIZE", 64)
    return env_int("EMOJI_CONCURRENCY", 1), env_int("EMOJI_QUEUE_SIZE", 32)


def device_note(device: torch.device, dtype: torch.dtype, concurrency: int, queue_size: int) -> str:
    """What the page says about where and how it samples."""
    where = f"**{device.type.upper()}**" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    return f"Running on {where} in {str(dtype).replace('torch.', '')}; {concurrency} generation(s) at a time, up to {queue_size} waiting."


# ---- the models, or one clear message and a non-zero exit ----


def display_path(path: str) -> str:
    """A path as a person would type it: relative to the project's folder when inside it."""
    return os.path.relpath(path, ROOT) if os.path.abspath(path).startswith(ROOT + os.sep) else path


def cannot_start(key: str, folder: str, error: Exception, weights_dir: str) -> SystemExit:
    """The startup failure for a missing or unreadable model folder: the folder, the cause and the command that rebuilds it."""
    what, command = MODEL_FOLDERS[key]
    folder = display_path(folder)
    rebuild = command.format(folder=folder, clip=display_path(os.path.join(weights_dir, "clip")))
    return SystemExit(
        f"Cannot start: the {what} in {folder} is missing or unreadable ({type(error).__name__}: {error}).\n"
        f"Restore the shipped files (git checkout -- {folder}) or rebuild them with:\n    {rebuild}"
    )


def load_uncond(weights_dir: str, device: torch.device, dtype: torch.dtype) -> UnconditionalPipeline:
    """The shipped unconditional model, or SystemExit naming its folder."""
    folder = os.path.join(weights_dir, "uncond")
    try:
        if not os.path.isdir(folder):  # checked first: from_pretrained would take a missing folder for a hub id
            raise FileNotFoundError("no such folder")
        return UnconditionalPipeline.from_pretrained(folder, device=device, dtype=dtype)
    except Exception as error:  # any failure to read the files is reported the same way
        raise cannot_start("uncond", folder, error, weights_dir) from error


def load_txt2img(weights_dir: str, device: torch.device, dtype: torch.dtype):
    """The shipped text-to-image pipeline (its UNet and the CLIP it names), or SystemExit naming the folder at fault."""
    from txt2img.clip import TextEncoder
    from txt2img.folder import text_encoder_location
    from txt2img.pipeline import TextToImagePipeline

    folder = os.path.join(weights_dir, "txt2img")
    try:
        if not os.path.isdir(folder):
            raise FileNotFoundError("no such folder")
        return TextToImagePipeline.from_pretrained(folder, device=device, dtype=dtype)
    except Exception as error:
        # which folder is at fault: the CLIP folder the pipeline names (relative to itself), or the pipeline's own
        try:
            clip = os.path.normpath(os.path.join(folder, text_encoder_location(folder)))
        except Exception:  # an unreadable pipeline.json: the pipeline folder is at fault
            raise cannot_start("txt2img", folder, error, weights_dir) from error
        try:
            if not os.path.isdir(clip):
                raise FileNotFoundError("no such folder")
            TextEncoder.from_pretrained(clip)
        except Exception as clip_error:
            raise cannot_start("clip", clip, clip_error, weights_dir) from error
        raise cannot_start("txt2img", folder, error, weights_dir) from error


def load_models(weights_dir: str, extra: list[str]) -> tuple[dict, object]:
    """The unconditional models (shipped first, then each one named on the command line) and the text-to-image pipeline."""
    device = default_device()
    dtype = default_dtype(device)
    models = {"emoji (shipped)": load_uncond(weights_dir, device, dtype)}
    for name in extra:
        try:
            models[name] = UnconditionalPipeline.from_pretrained(name, device=device, dtype=dtype)
        except (ValueError, OSError) as error:
            raise SystemExit(f"--uncond-model {name!r} could not be loaded: {error}") from None
    return models, load_txt2img(weights_dir, device, dtype)


def launch_options(args) -> dict:
    """How the app is served: loopback unless GRADIO_SERVER_NAME says otherwise, no public link unless --share,
    uploads size-limited, no extra folders served (no allowed_paths)."""
    return {
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        "share": bool(args.share),
        "max_file_size": MAX_UPLOAD,
        "show_error": False,  # only gr.Error messages reach the page, never a stack trace
    }
