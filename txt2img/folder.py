"""The text-to-image pipeline folder: what is in it and where its text encoder is.

unet/                   TextUNet.save_pretrained (config.json + model.safetensors)
text_encoder/           a CLIP folder: tokenizer files + CLIPTextModel (config.json + model.safetensors)
scheduler_config.json   the training noise schedule
captions.json           the training captions (for the app's suggestions), optional
names.json              the emoji names among them (the suggestions' nearest neighbours in text space), optional
pipeline.json           {"text_encoder": "text_encoder"}, or a path / hub id used instead of a copy,
                        e.g. {"text_encoder": "openai/clip-vit-base-patch32"}
"""

import json
import os
import shutil

from txt2img.clip import TextEncoder

PIPELINE_CONFIG_NAME = "pipeline.json"
UNET_FOLDER = "unet"
CAPTIONS_NAME = "captions.json"  # the training captions, written by txt2img.train
NAMES_NAME = "names.json"  # the images' primary captions (CLDR names), written by txt2img.train
TEXT_ENCODER_FOLDER = "text_encoder"


def save_text_encoder(text_encoder: TextEncoder, directory: str) -> None:
    """Write the tokenizer and the text tower (safetensors) to `directory`, via a temporary folder renamed at the end."""
    tmp = directory.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    text_encoder.tokenizer.save_pretrained(tmp)
    text_encoder.text_model.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def write_pipeline_config(directory: str, text_encoder: str = TEXT_ENCODER_FOLDER) -> None:
    """pipeline.json: where the text encoder is (the copy in text_encoder/, or a path / hub id)."""
    with open(os.path.join(directory, PIPELINE_CONFIG_NAME), "w") as f:
        json.dump({"_class_name": "TextToImagePipeline", "text_encoder": text_encoder}, f, indent=2)


def text_encoder_location(directory: str) -> str:
    """The text encoder of a pipeline folder: a folder inside it, a folder elsewhere, or a hub id."""
    reference = TEXT_ENCODER_FOLDER
    config_path = os.path.join(directory, PIPELINE_CONFIG_NAME)
    if os.path.isfile(config_path):
        with open(config_path) as f:
            reference = json.load(f).get("text_encoder", TEXT_ENCODER_FOLDER)
    inside = os.path.join(directory, reference)
    return inside if os.path.isdir(inside) else reference
