"""Checks of what a request sends: each bad value gets a gr.Error that names the field and what it accepts.

The app's handlers get the values as sent (preprocess=False), so these checks are the only ones, for the page
and for API callers alike; uploaded pictures are checked before their pixels are decoded.
"""

import unicodedata

import gradio as gr
from PIL import Image


def shown(value) -> str:
    """A short repr of a value for a message (a 100,000-character string must not fill the page)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_int(name: str, value, low: int, high: int) -> int:
    """A whole number in [low, high] (an int, an integral float or a string of digits), or a gr.Error naming the field."""
    message = f"{name} must be a whole number from {low} to {high}, got {shown(value)}."
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise gr.Error(message)
    number = value
    if isinstance(value, str):
        try:
            number = int(value.strip())  # exact, also for seeds beyond float precision
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise gr.Error(message) from None
    if isinstance(number, float):
        if not number.is_integer():  # also NaN and infinity
            raise gr.Error(message)
        number = int(number)
    if not low <= number <= high:
        raise gr.Error(message)
    return number


def check_float(name: str, value, low: float, high: float) -> float:
    """A number in [low, high] (so finite), or a gr.Error naming the field."""
    message = f"{name} must be a number from {low:g} to {high:g}, got {shown(value)}."
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise gr.Error(message)
    try:
        number = float(value)
    except ValueError:
        raise gr.Error(message) from None
    if not low <= number <= high:  # also false for NaN
        raise gr.Error(message)
    return number


def check_choice(name: str, value, choices: dict):
    """choices[value] for one of the keys of `choices`, or a gr.Error listing them."""
    if not isinstance(value, str) or value not in choices:
        raise gr.Error(f"{name} must be one of {', '.join(choices)}, got {shown(value)}.")
    return choices[value]


def check_prompt(name: str, prompt, max_chars: int) -> str:
    """Text of at most `max_chars` characters without control characters (tabs and line breaks allowed)."""
    if not isinstance(prompt, str):
        raise gr.Error(f"{name} must be text, got {shown(prompt)}.")
    if len(prompt) > max_chars:
        raise gr.Error(f"{name} must be at most {max_chars} characters, got {len(prompt)}.")
    for position, char in enumerate(prompt):
        if unicodedata.category(char) == "Cc" and char not in "\t\n\r":
            raise gr.Error(
                f"{name} must not contain control characters, found U+{ord(char):04X} at position {position}."
            )
    if prompt.strip() and not any(char.isalnum() for char in prompt):
        gr.Warning(
            f"{name} has no letters or digits: the model knows emoji by their names (e.g. 'red heart'), not as pictures."
        )
    return prompt


def load_picture(path: str, max_side: int) -> Image.Image:
    """An uploaded picture, decoded only when it is a PNG, JPEG, WebP or GIF of at most `max_side` pixels a side.

    Image.open reads the header alone, and refuses decompression bombs (Image.MAX_IMAGE_PIXELS) before any pixel.
    """
    try:
        with Image.open(path) as image:
            if image.format not in ("PNG", "JPEG", "WEBP", "GIF"):
                raise gr.Error(f"Picture must be a PNG, JPEG, WebP or GIF image, got {image.format}.")
            if max(image.size) > max_side:
                raise gr.Error(f"Picture must be at most {max_side} pixels a side, got {image.width}x{image.height}.")
            image.load()
            return image.copy()
    except gr.Error:  # a subclass of ValueError: one of the messages above
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise gr.Error(f"Picture could not be read ({type(error).__name__}).") from error
