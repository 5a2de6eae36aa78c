"""Tensors <-> pictures: (B, C, H, W) in [-1, 1] to PIL images and back, sample grids, animations."""

import os

import numpy as np
import torch
from PIL import Image


def to_pil(images: torch.Tensor) -> list:
    """(B, C, H, W) in [-1, 1] -> list of PIL images (RGB, or L for one channel)."""
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    out = []
    for image in images:
        array = image.permute(1, 2, 0).numpy()
        out.append(Image.fromarray(array[:, :, 0]) if array.shape[2] == 1 else Image.fromarray(array[:, :, :3]))
    return out


def from_pil(image: Image.Image, size: int, channels: int = 3) -> torch.Tensor:
    """PIL image -> (1, C, size, size) in [-1, 1]; transparency goes on white, like the training data."""
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(background, image)
    image = image.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BICUBIC)
    array = torch.from_numpy(np.asarray(image).copy()).float()
    array = array[:, :, None] if array.ndim == 2 else array
    return (array.permute(2, 0, 1)[None] / 127.5 - 1.0).clamp(-1, 1)


def save_grid(images: list, path: str, columns: int | None = None) -> None:
    """Tile PIL images into one grid PNG."""
    columns = columns or max(1, int(len(images) ** 0.5 + 0.999))
    rows = (len(images) + columns - 1) // columns
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height), "white")
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((i % columns) * width, (i // columns) * height))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)


ANIMATION_FORMATS = {".gif": "GIF", ".webp": "WEBP"}


def save_animation(images: list, path: str, duration_ms: int = 150, scale: int = 1, boomerang: bool = False) -> None:
    """Frames as one looping animated GIF or WebP (by `path`'s extension), each enlarged `scale` times (nearest).

    boomerang: play forward then back (without repeating the end frames), so the loop has no jump.
    """
    extension = os.path.splitext(path)[1].lower()
    if extension not in ANIMATION_FORMATS:
        raise ValueError(f"path must end in {' or '.join(ANIMATION_FORMATS)}, got {path!r}")
    if not images:
        raise ValueError("images must hold at least one frame")
    frames = [image.convert("RGB") for image in images]
    if scale > 1:
        frames = [f.resize((f.width * scale, f.height * scale), Image.Resampling.NEAREST) for f in frames]
    if boomerang and len(frames) > 2:
        frames = frames + frames[-2:0:-1]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    options = {"lossless": True} if extension == ".webp" else {"disposal": 1}
    frames[0].save(
        path, format=ANIMATION_FORMATS[extension], save_all=True, append_images=frames[1:], duration=duration_ms,
        loop=0, **options
    )  # fmt: skip
