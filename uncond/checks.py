"""Argument checks, one set for the whole project: each raises a ValueError that names the argument and its range.

The pipelines check their arguments with these (names as in the signature: `num_inference_steps`); the app checks
the fields of a request with the same functions (names as on the page: "Steps") and turns the ValueError into the
message the page shows. Numbers may arrive as text from an API caller: the app's checks parse text
(`parse_text=True`); the pipelines' do not, so that a caller's "7" for a number is a bug they hear about.
"""

import unicodedata

MAX_SEED = 2**63 - 1  # a torch.Generator seed is a 64-bit integer; we keep it non-negative


def shown(value) -> str:
    """A short repr of a value for a message (a 100,000-character string must not fill the page)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_int(name: str, value, low: int, high: int, parse_text: bool = False) -> int:
    """A whole number in [low, high] (an int, an integral float, or with `parse_text` digits), else a ValueError."""
    message = f"{name} must be a whole number from {low} to {high}, got {shown(value)}."
    if isinstance(value, bool) or not isinstance(value, (int, float, str) if parse_text else (int, float)):
        raise ValueError(message)
    number = value
    if isinstance(value, str):
        try:
            number = int(value.strip())  # exact, also for seeds beyond float precision
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise ValueError(message) from None
    if isinstance(number, float):
        if not number.is_integer():  # also NaN and infinity
            raise ValueError(message)
        number = int(number)
    if not low <= number <= high:
        raise ValueError(message)
    return number


def check_float(name: str, value, low: float, high: float, parse_text: bool = False) -> float:
    """A number in [low, high] (so finite; with `parse_text` also as text), else a ValueError naming it."""
    message = f"{name} must be a number from {low:g} to {high:g}, got {shown(value)}."
    if isinstance(value, bool) or not isinstance(value, (int, float, str) if parse_text else (int, float)):
        raise ValueError(message)
    try:
        number = float(value)
    except ValueError:
        raise ValueError(message) from None
    if not low <= number <= high:  # also false for NaN
        raise ValueError(message)
    return number


def check_choice(name: str, value, choices):
    """`value` if it is one of `choices` (a dict: `choices[value]`), else a ValueError listing them."""
    try:
        known = value in choices
    except TypeError:  # unhashable: a list, a dict
        known = False
    if not known:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {shown(value)}.")
    return choices[value] if isinstance(choices, dict) else value


def check_text(name: str, text, max_chars: int) -> str:
    """Text of at most `max_chars` characters without control characters (tabs and line breaks allowed)."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be text, got {shown(text)}.")
    if len(text) > max_chars:
        raise ValueError(f"{name} must be at most {max_chars} characters, got {len(text)}.")
    for position, char in enumerate(text):
        if unicodedata.category(char) == "Cc" and char not in "\t\n\r":
            raise ValueError(
                f"{name} must not contain control characters, found U+{ord(char):04X} at position {position}."
            )
    return text
