"""The credits written beside the rendered images: every emoji set, its licence and attribution, and what was changed.

The texts are facts about each set's licence (see README.md, "Credits"); the MIT notice is reproduced because the
MIT License asks that it travel with copies of the work.
"""

from uncond.sources import STYLES

LICENSE_URLS = {
    "OFL-1.1": "https://openfontlicense.org",
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "MIT": "https://opensource.org/license/mit",
}
CHANGES = "rasterised, cropped to the drawn pixels, centred on white with a 6% margin and resized"
MIT_NOTICE = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated "
    'documentation files (the "Software"), to deal in the Software without restriction, including without limitation '
    "the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and "
    "to permit persons to whom the Software is furnished to do so, subject to the following conditions: The above "
    "copyright notice and this permission notice shall be included in all copies or substantial portions of the "
    'Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT '
    "NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO "
    "EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN "
    "ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR "
    "OTHER DEALINGS IN THE SOFTWARE."
)
CAPTION_SOURCES = (
    "Captions: Unicode CLDR emoji names and keywords (Unicode License v3, https://www.unicode.org/license.txt), "
    "via the Python `emoji` package (BSD licence; names in es, ja, ko, pt, it, fr, de, fa, id, zh, ru, tr, ar) "
    "and the npm package `emojibase-data` (MIT, Copyright (c) Miles Johnson; English tags and shortcodes)."
)


def credits_text(counts: dict, family: str | None = None) -> str:
    """Markdown naming each style in `counts` ({style: images}), its source, licence, attribution and changes."""
    lines = ["## Credits", ""]
    for name, n in counts.items():
        style = STYLES[name]
        source = f'the font "{family}"' if style.kind == "font" and family else style.package
        lines.append(
            f"- **{name}** ({n} images): {style.attribution}. Source: {source}, {style.url}. "
            f"Licence: {style.license} ({LICENSE_URLS[style.license]}). Changes: {CHANGES}."
        )
    licences = {STYLES[name].license for name in counts}
    if "CC-BY-SA-4.0" in licences:
        lines.append(
            "- The OpenMoji images here are adapted material: they are shared under CC BY-SA 4.0 as well (ShareAlike)."
        )
    if "MIT" in licences:
        lines += ["", "MIT License, Copyright (c) Microsoft Corporation:", "", MIT_NOTICE]
    lines += ["", CAPTION_SOURCES, ""]
    return "\n".join(lines)
