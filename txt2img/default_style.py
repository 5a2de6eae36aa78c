"""Colour unless asked: a prompt that names no style gets a colour style's words, a different one per image.

The training captions name a style in a fixed form ("red heart, noto style", `uncond.captions`); a prompt without
one is drawn in whatever style the model finds likeliest, and for many prompts that is black line art (OpenMoji's
line art and Fluent's high contrast are 16% of the pictures but share one look, so a bare prompt drifts to it).
Adding a colour style's words keeps line art and high contrast for those who ask. Image i of a prompt gets colour
style i mod 5, so the four images of the tab differ in style too.
"""

import re

from uncond.sources import STYLES

COLOUR_STYLES = ("noto", "twemoji", "openmoji", "fluent-flat", "fluent-3d")
# every style's words, longest first (so "black and white line art" is found before "line art")
_STYLE_WORDS = sorted({w.lower() for s in STYLES.values() for w in s.words}, key=len, reverse=True)
_NAMES_A_STYLE = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in _STYLE_WORDS) + r")(?!\w)", re.IGNORECASE)


def names_style(prompt: str) -> bool:
    """Whether a prompt already names a style by its caption words ("owl, line art", "cat 3D", "Noto style")."""
    return bool(_NAMES_A_STYLE.search(prompt))


def colour_style(index: int) -> str:
    """The colour style added to image `index` of a prompt."""
    return COLOUR_STYLES[index % len(COLOUR_STYLES)]


def with_colour_style(prompt: str, index: int) -> tuple[str, str | None]:
    """(the prompt to draw, the style added or None): an empty prompt or one naming a style is left as it is."""
    if not prompt.strip() or names_style(prompt):
        return prompt, None
    style = colour_style(index)
    return f"{prompt}, {STYLES[style].words[0]}", style


def image_prompts(prompts: list, num_images: int, add_style: bool, too_long=None) -> tuple[list, list]:
    """One prompt per image (prompt-major, P I) and the style added to each (None where none was). `too_long(rows)`:
    which rows the tokenizer would cut; a style that does not fit is not added (it would push out the prompt's end)."""
    bare = [p for p in prompts for _ in range(num_images)]
    rows = [(p, None) if not add_style else with_colour_style(p, i % num_images) for i, p in enumerate(bare)]
    if too_long is not None and any(style for _, style in rows):
        rows = [(p, None) if cut else row for p, row, cut in zip(bare, rows, too_long([r[0] for r in rows]))]
    return [r[0] for r in rows], [r[1] for r in rows]
