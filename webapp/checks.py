"""What the page does with bad input: field checks' ValueErrors become the message shown, pictures are checked first.

The field checks themselves are `uncond.checks` (one set for the project), called with the field's label; the
handlers get the values as sent (preprocess=False), so these checks are the only ones, for the page and for API
callers alike. Uploaded pictures are checked before their pixels are decoded.
"""

import functools
import inspect

import gradio as gr
from PIL import Image


def page_errors(handler):
    """`handler` (a function or a generator function) with its ValueErrors shown on the page as gr.Error messages."""
    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def stream(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except ValueError as error:
                raise gr.Error(str(error)) from None

        return stream

    @functools.wraps(handler)
    def call(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except ValueError as error:
            raise gr.Error(str(error)) from None

    return call


def warn_without_letters(name: str, prompt: str) -> None:
    """A warning (not an error) for a prompt of symbols only: the model knows emoji by their names."""
    if prompt.strip() and not any(char.isalnum() for char in prompt):
        gr.Warning(
            f"{name} has no letters or digits: the model knows emoji by their names (e.g. 'red heart'), not as pictures."
        )


def load_picture(path: str, max_side: int) -> Image.Image:
    """An uploaded picture, decoded only when it is a PNG, JPEG, WebP or GIF of at most `max_side` pixels a side.

    Image.open reads the header alone, and refuses decompression bombs (Image.MAX_IMAGE_PIXELS) before any pixel.
    """
    try:
        with Image.open(path) as image:
            kind, size = image.format, image.size
            if kind in ("PNG", "JPEG", "WEBP", "GIF") and max(size) <= max_side:
                image.load()
                return image.copy()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise ValueError(f"Picture could not be read ({type(error).__name__}).") from error
    if kind not in ("PNG", "JPEG", "WEBP", "GIF"):
        raise ValueError(f"Picture must be a PNG, JPEG, WebP or GIF image, got {kind}.")
    raise ValueError(f"Picture must be at most {max_side} pixels a side, got {size[0]}x{size[1]}.")
