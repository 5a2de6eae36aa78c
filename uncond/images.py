"""Tensors <-> pictures: (B, C, H, W) in [-1, 1] to PIL images and back, and sample grids."""

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
