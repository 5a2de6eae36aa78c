"""What the page does with bad input: field checks' ValueErrors become the message shown, pictures are checked first.

The field checks themselves are `uncond.checks` (one set for the project), called with the field's label; the
handlers get the values as sent (preprocess=False), so these checks are the only ones, for the page and for API
callers alike. Uploaded pictures are checked before their pixels are decoded; masks painted on an image editor
become the pipelines' masks (`painted_mask`).
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


def painted_mask(layers: list, size: tuple[int, int]) -> Image.Image | None:
    """What a person painted on an image editor's layers (gr.ImageEditor's `layers`, RGBA, transparent where not
    painted) as the pipelines' mask: an L image of the picture's `size`, white where painted; None if no layer.

    Any opaque stroke counts, whatever its colour. Layers of another size than the picture are refused (the
    strokes would land elsewhere); an empty or full mask is for the pipelines to refuse, by the name `mask`.
    """
    layers = [layer for layer in layers or [] if layer is not None]
    if not layers:
        return None
    mask = Image.new("L", size, 0)
    for layer in layers:
        if not isinstance(layer, Image.Image):
            raise ValueError(f"Mask layers must be pictures, got {type(layer).__name__}.")
        if layer.size != size:
            raise ValueError(
                f"Mask must be painted on the picture ({size[0]}x{size[1]}), got {layer.size[0]}x{layer.size[1]}."
            )
        alpha = layer.convert("RGBA").getchannel("A").point(lambda a: 255 if a > 0 else 0)
        mask.paste(255, mask=alpha)
    return mask
