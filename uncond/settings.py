"""The settings a PNG of this project carries (tEXt chunks), and their safe reader.

    save_with_settings(image, "emoji.png", {"scheduler": "ddim", "steps": 50, "seed": 0})
    read_settings("emoji.png")  # {"scheduler": "ddim", "steps": 50, "seed": 0}

The app restores its controls from such a file, so the reader treats every file as hostile: it never decodes
pixels, caps sizes, verifies every chunk's checksum, and refuses with a ValueError that says why.
"""

import os

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def save_with_settings(image, path: str, settings: dict) -> None:
    """Save a PIL image as PNG with each setting in a tEXt chunk."""
    info = PngInfo()
    for key, value in settings.items():
        info.add_text(key, str(value))
    image.save(path, pnginfo=info)


def flag(value: str) -> bool:
    """A yes/no setting as written by `save_with_settings` ("True" or "False")."""
    if value not in ("True", "False"):
        raise ValueError(value)
    return value == "True"


# the settings a PNG of this project carries that can be restored, with their types
RESTORABLE = {
    "model": str,
    "scheduler": str,
    "steps": int,
    "eta": float,
    "seed": int,
    "prompt": str,
    "negative_prompt": str,
    "guidance_scale": float,
    "style": str,
    "thresholding": flag,
    "dynamic_thresholding_ratio": float,
    "sample_max_value": float,
    "variation_seed": int,
    "variation_strength": float,
    "upscale_steps": int,
    "noise_level": int,
}
MAX_SETTING_CHARS = 4096  # longer values are refused (prompts are cut at 32 tokens anyway)
MAX_SETTINGS_FILE_BYTES = 8 * 2**20  # larger files are refused unread (the app's PNGs are a few kB)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_settings(path: str) -> dict:
    """The settings written by `save_with_settings`, typed; ValueError for a file that is not such a PNG.

    The pixels are never decoded (a decompression bomb costs nothing): the text chunks before the pixel data are
    read, capped by Pillow (MAX_TEXT_CHUNK, MAX_TEXT_MEMORY), and every chunk's checksum is verified.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            signature = f.read(len(PNG_SIGNATURE))
    except OSError as error:
        raise ValueError(f"cannot read the file ({type(error).__name__})") from error
    if size > MAX_SETTINGS_FILE_BYTES:
        raise ValueError(f"the file is {size / 2**20:.1f} MB; at most {MAX_SETTINGS_FILE_BYTES // 2**20} MB are read")
    if signature != PNG_SIGNATURE:  # any other format is refused unparsed
        raise ValueError("not a PNG file")
    try:
        with Image.open(path, formats=["PNG"]) as image:
            info = dict(image.info)  # tEXt, zTXt and iTXt chunks before the pixel data, as str
            image.verify()  # every chunk's checksum through IEND: a truncated or damaged file is refused, pixels undecoded
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise ValueError(f"not a readable PNG file ({type(error).__name__})") from error
    settings = {}
    for key, kind in RESTORABLE.items():
        if key not in info:
            continue
        value = info[key]
        if not isinstance(value, str):
            raise ValueError(f"setting {key!r} is not text")
        if len(value) > MAX_SETTING_CHARS:
            raise ValueError(f"setting {key!r} is longer than {MAX_SETTING_CHARS} characters")
        try:
            settings[key] = kind(value)
        except ValueError:
            kind_name = "True or False" if kind is flag else f"a {kind.__name__}"
            raise ValueError(f"setting {key!r} should be {kind_name}, got {value[:40]!r}") from None
    if not settings:
        raise ValueError("this PNG carries no settings of this app")
    return settings
