"""Tiny pictures and a tiny upsampler trained on them, shared by the upscale tests (built once per session)."""

import atexit
import functools
import shutil
import tempfile

import numpy as np
import torch
from PIL import Image, ImageDraw

from uncond.train_upscale import UpscaleTrainConfig, train_upscale
from uncond.upscale_pipeline import UpscalePipeline

COLOURS = [(230, 40, 40), (40, 90, 220), (250, 200, 30), (40, 170, 80)]
TINY_UNET = {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 4}


def pictures(n: int = 4, size: int = 32) -> torch.Tensor:
    """uint8 (n, 3, size, size): emoji-like shapes, a filled circle or square with a black outline and a white hole."""
    out = []
    for i in range(n):
        image = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(image)
        colour = COLOURS[i % len(COLOURS)]
        if i % 2 == 0:
            draw.ellipse([4, 4, size - 5, size - 5], fill=colour, outline=(0, 0, 0), width=2)
        else:
            draw.rectangle([6, 5, size - 7, size - 6], fill=colour, outline=(0, 0, 0), width=2)
        middle = size // 2
        draw.rectangle([middle - 3, middle - 3, middle + 2, middle + 2], fill=(255, 255, 255))
        out.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
    return torch.stack(out)


class TinyData:
    """The little of `ImageCaptionDataset` the upscale task reads: uint8 `images` and `captions`."""

    def __init__(self, images: torch.Tensor):
        self.images = images
        self.captions = [""] * len(images)

    def __len__(self) -> int:
        return len(self.images)


def tiny_train_config(**overrides) -> UpscaleTrainConfig:
    """32 px pictures from 8 px ones (scale 4), 16 px crops, a two-level UNet of 16-32 channels."""
    values = dict(
        image_size=32,
        crop_size=16,
        batch_size=8,
        max_steps=300,
        learning_rate=3e-3,
        warmup_steps=20,
        ema_decay=0.99,
        prediction_type="v_prediction",
        max_noise_level=100,
        sample_noise_level=0,
        checkpoint_every=10**6,
        sample_every=10**6,
        log_every=50,
        hold_out=False,
        num_sample_images=4,
        sample_steps=10,
        unet=dict(TINY_UNET),
    )
    values.update(overrides)
    return UpscaleTrainConfig(**values)


@functools.lru_cache(maxsize=1)
def trained_folder() -> str:
    """A tiny upsampler trained 300 steps on the four `pictures` (about 20 s on one core); its folder.

    One thread: a model this small gains nothing from two, and on a shared, loaded machine two threads wait on each
    other at every operation (measured here: 193 s of wall clock with two threads, 22 s with one)."""
    out = tempfile.mkdtemp(prefix="tiny_upscale_")
    atexit.register(shutil.rmtree, out, True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_upscale("", out, tiny_train_config(), dataset=TinyData(pictures()), log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)


def trained_pipeline() -> UpscalePipeline:
    return UpscalePipeline.from_pretrained(trained_folder(), device="cpu")


def to_unit(images) -> torch.Tensor:
    """PIL images or uint8 (B, C, H, W) -> float32 in [-1, 1]."""
    if not torch.is_tensor(images):
        images = torch.stack([torch.from_numpy(np.asarray(i).copy()).permute(2, 0, 1) for i in images])
    return images.float() / 127.5 - 1.0
