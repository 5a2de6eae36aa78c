"""Where emoji pictures come from: a colour font or a set of SVG/raster files, one `Style` each.

Every source answers `glyph(emoji_str)` with the emoji drawn in colour on a transparent canvas, cropped to
what was drawn (RGBA), or None when the set has no picture of it; `square_on_white` then frames every style
the same way. The sets are installed from the package registries (`npm ci --prefix uncond/sources`, Debian's
fonts-noto-color-emoji) and read offline. Each set names its files differently; all are matched by code
points with the emoji presentation selector U+FE0F left out (`sequence_key`), which is how Twemoji, OpenMoji,
Iconify and Fluent 3D all spell ZWJ sequences, keycaps and skin tones once FE0F is dropped.

SVGs are rasterised with resvg (`resvg-py`): a maintained, spec-conformant renderer shipped as a wheel, so
no system library is needed; the sets use no <text>, so system fonts are skipped (faster, same on every machine).
"""

import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont, features

DEFAULT_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
NODE_MODULES = Path(__file__).resolve().parent / "sources" / "node_modules"  # npm ci --prefix uncond/sources
# CBDT bitmap fonts such as Noto Color Emoji only load at the size of their bitmap strike (109 px);
# outline (COLR) fonts load at any size, so 109 serves both.
RENDER_SIZES = (109, 136, 128, 160, 72)
SVG_RENDER_PX = 320  # width SVGs are rasterised at: 2.5x the largest data set size, downsampled with LANCZOS
MARGIN = 0.06  # empty border on each side, as a fraction of the image side


@dataclass(frozen=True)
class Style:
    """One emoji set: where its pictures are, how captions name it, and its licence."""

    name: str  # the data set's `style` value: "twemoji"
    words: tuple  # the style in captions: ("twemoji style",)
    kind: str  # "font", "files" (one SVG/raster per emoji) or "iconify" (an Iconify JSON set)
    location: str  # font path, or a folder under NODE_MODULES
    license: str  # SPDX id
    attribution: str
    url: str
    package: str  # what installs it
    skin_tones: bool = True  # False: the set draws no skin tones, so its tone variants would repeat the base emoji


STYLES = {
    s.name: s
    for s in (
        Style(
            "noto",
            ("noto style",),
            "font",
            DEFAULT_FONT,
            "OFL-1.1",
            "Noto Color Emoji, Copyright Google Inc., SIL Open Font License 1.1",
            "https://github.com/googlefonts/noto-emoji",
            "Debian fonts-noto-color-emoji",
        ),
        Style(
            "twemoji",
            ("twemoji style",),
            "files",
            "@twemoji/svg",
            "CC-BY-4.0",
            "Twemoji graphics by Twitter, Inc and other contributors, CC-BY 4.0",
            "https://github.com/jdecked/twemoji",
            "npm @twemoji/svg",
        ),
        Style(
            "openmoji",
            ("openmoji style",),
            "files",
            "openmoji/color/svg",
            "CC-BY-SA-4.0",
            "All emojis designed by OpenMoji - the open-source emoji and icon project. License: CC BY-SA 4.0",
            "https://openmoji.org",
            "npm openmoji",
        ),
        Style(
            "openmoji-line",
            ("line art", "black and white line art"),
            "files",
            "openmoji/black/svg",
            "CC-BY-SA-4.0",
            "All emojis designed by OpenMoji - the open-source emoji and icon project. License: CC BY-SA 4.0",
            "https://openmoji.org",
            "npm openmoji",
            skin_tones=False,  # the black files of the tone variants are copies of the base emoji's
        ),
        Style(
            "fluent-flat",
            ("fluent style", "flat style"),
            "iconify",
            "@iconify-json/fluent-emoji-flat",
            "MIT",
            "Fluent Emoji, Copyright (c) Microsoft Corporation, MIT License",
            "https://github.com/microsoft/fluentui-emoji",
            "npm @iconify-json/fluent-emoji-flat",
        ),
        Style(
            "fluent-high-contrast",
            ("high contrast style", "monochrome"),
            "iconify",
            "@iconify-json/fluent-emoji-high-contrast",
            "MIT",
            "Fluent Emoji, Copyright (c) Microsoft Corporation, MIT License",
            "https://github.com/microsoft/fluentui-emoji",
            "npm @iconify-json/fluent-emoji-high-contrast",
        ),
        Style(
            "fluent-3d",
            ("3D", "3d render"),
            "files",
            "@lobehub/fluent-emoji-3d/assets",
            "MIT",
            "Fluent Emoji 3D, Copyright (c) Microsoft Corporation, MIT License (packaged by LobeHub)",
            "https://github.com/microsoft/fluentui-emoji",
            "npm @lobehub/fluent-emoji-3d",
        ),
    )
}


def parse_styles(styles) -> list:
    """Style names from "all", "noto,twemoji" or a list; raises ValueError naming `styles` for unknown ones."""
    names = styles.split(",") if isinstance(styles, str) else list(styles)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return list(STYLES)
    unknown = [n for n in names if n not in STYLES]
    if not names or unknown:
        raise ValueError(f"styles: unknown {unknown or styles!r}; choose from {['all', *STYLES]}")
    return list(dict.fromkeys(names))


def has_skin_tone(emoji_str: str) -> bool:
    """Whether the sequence holds a skin-tone modifier (U+1F3FB..U+1F3FF)."""
    return any(0x1F3FB <= ord(c) <= 0x1F3FF for c in emoji_str)


def sequence_key(emoji_str: str) -> str:
    """Lower-case hex code points joined by "-", U+FE0F left out: "👋🏽" -> "1f44b-1f3fd", "❤️" -> "2764"."""
    return "-".join(f"{ord(c):x}" for c in emoji_str if c != "\ufe0f")


def file_key(stem: str) -> str | None:
    """`sequence_key` of a file or table name: "0031-FE0F-20E3" -> "31-20e3"; None when it is not code points."""
    try:
        codes = [int(part, 16) for part in stem.split("-")]
    except ValueError:
        return None
    return "-".join(f"{c:x}" for c in codes if c != 0xFE0F)


def missing_reason(style: Style) -> str | None:
    """Why a style's pictures are not installed here (None when they are)."""
    if style.kind == "font":
        return (
            None
            if Path(style.location).is_file()
            else f"{style.location} missing: apt-get install fonts-noto-color-emoji"
        )
    if (NODE_MODULES / style.location).is_dir():
        return None
    return f"{NODE_MODULES / style.location} missing: npm ci --prefix uncond/sources"


# ---- fonts ----


def load_emoji_font(font_path: str) -> ImageFont.FreeTypeFont:
    """Open a colour font at the first pixel size it accepts (bitmap fonts accept only their strike)."""
    engine = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC
    for px in RENDER_SIZES:
        try:
            return ImageFont.truetype(font_path, px, layout_engine=engine)
        except OSError as err:
            last = err
    raise ValueError(f"font_path {font_path!r}: cannot load at sizes {RENDER_SIZES}: {last}")


def render_glyph(font: ImageFont.FreeTypeFont, text: str) -> Image.Image:
    """Draw `text` in colour on a transparent canvas, cropped to what was drawn (may be 0x0)."""
    left, top, right, bottom = font.getbbox(text)
    pad = font.size // 4  # colour bitmaps may overhang the outline bbox a little
    canvas = Image.new("RGBA", (right - left + 2 * pad, max(bottom - top, font.size) + 2 * pad), (0, 0, 0, 0))
    # Black ink shows monochrome fallback glyphs, which colour glyphs (embedded_color) ignore.
    ImageDraw.Draw(canvas).text((pad - left, pad - top), text, font=font, fill=(0, 0, 0, 255), embedded_color=True)
    return crop_to_ink(canvas)


def glyph_problem(
    glyph: Image.Image, advance: float, one_glyph: float, notdef: Image.Image | None = None
) -> str | None:
    """Why a rendered glyph is unusable ("blank", "notdef", "split") or None when it is fine."""
    # Blank: nothing drawn with more than faint opacity.
    if not (glyph.width and glyph.height) or glyph.getchannel("A").point(lambda a: 255 * (a >= 32)).getbbox() is None:
        return "blank"
    # A sequence the font has no ligature for falls apart into several glyphs side by side;
    # `one_glyph` is the widest advance of its code points drawn alone (notdef boxes included).
    if advance > 1.5 * one_glyph:
        return "split"
    if notdef is not None and notdef.size == glyph.size and ImageChops.difference(notdef, glyph).getbbox() is None:
        return "notdef"
    return None


class FontSource:
    """Emoji drawn with a colour font; sequences the font cannot draw as one glyph are None."""

    def __init__(self, font_path: str):
        self.font = load_emoji_font(font_path)
        self.family = self.font.getname()[0] or Path(font_path).stem
        notdef = render_glyph(self.font, "\U0010fffd")  # a private-use code point no font maps: glyph 0
        self.notdef = notdef if notdef.width else None
        if glyph_problem(render_glyph(self.font, "\U0001f600"), 1, 1, self.notdef):
            raise ValueError(f"font_path {font_path!r} cannot draw U+1F600; is it a colour emoji font?")

    def glyph(self, emoji_str: str, name: str | None = None) -> Image.Image | None:
        glyph = render_glyph(self.font, emoji_str)
        widest = max(self.font.getlength(c) for c in emoji_str)
        return None if glyph_problem(glyph, self.font.getlength(emoji_str), widest, self.notdef) else glyph


# ---- SVG and raster files ----


def crop_to_ink(image: Image.Image) -> Image.Image:
    """An RGBA image cropped to its non-transparent pixels (0x0 when there are none)."""
    box = image.getchannel("A").getbbox()
    return image.crop(box) if box else image.crop((0, 0, 0, 0))


def rasterise_svg(svg: str | None = None, path: str | None = None, width: int = SVG_RENDER_PX) -> Image.Image:
    """An SVG (markup or file) drawn `width` pixels wide, aspect kept, as RGBA, with resvg."""
    import resvg_py  # only the builder needs it

    if svg is not None:
        png = resvg_py.svg_to_bytes(svg_string=svg, width=width, skip_system_fonts=True)
    else:
        png = resvg_py.svg_to_bytes(svg_path=str(path), width=width, skip_system_fonts=True)
    with Image.open(io.BytesIO(bytes(png))) as image:
        return image.convert("RGBA")


class FileSource:
    """One file per emoji in a folder, named by code points ("1f44b-1f3fd.svg", "1F44B-1F3FD.svg", ".webp")."""

    def __init__(self, folder: Path):
        self.files = {}
        for path in sorted(folder.iterdir()):
            key = file_key(path.stem) if path.suffix.lower() in (".svg", ".png", ".webp") else None
            if key is not None:
                self.files.setdefault(key, path)

    def glyph(self, emoji_str: str, name: str | None = None) -> Image.Image | None:
        path = self.files.get(sequence_key(emoji_str))
        if path is None:
            return None
        if path.suffix.lower() == ".svg":
            image = rasterise_svg(path=path)
        else:
            with Image.open(path) as raw:
                image = raw.convert("RGBA")
        image = crop_to_ink(image)
        return image if image.width and image.height else None


class IconifySource:
    """An Iconify JSON icon set: `icons.json` holds SVG bodies by name, `chars.json` maps code points to names."""

    def __init__(self, folder: Path):
        self.icons = json.loads((folder / "icons.json").read_text(encoding="utf-8"))
        chars = json.loads((folder / "chars.json").read_text(encoding="utf-8"))
        self.names = {file_key(key): name for key, name in chars.items()}
        self.known = set(self.icons["icons"]) | set(self.icons.get("aliases", {}))

    def svg(self, name: str) -> str:
        """The full SVG of icon `name`, aliases resolved (Iconify's defaults: left = top = 0, width = height = 16)."""
        flip = False
        alias = self.icons.get("aliases", {}).get(name)
        while alias is not None:  # an alias names its parent and may mirror it
            flip ^= bool(alias.get("hFlip"))
            name = alias["parent"]
            alias = self.icons.get("aliases", {}).get(name)
        icon = self.icons["icons"][name]
        left, top = icon.get("left", self.icons.get("left", 0)), icon.get("top", self.icons.get("top", 0))
        width = icon.get("width", self.icons.get("width", 16))
        height = icon.get("height", self.icons.get("height", 16))
        body = icon["body"]
        if flip:
            body = f'<g transform="translate({2 * left + width} 0) scale(-1 1)">{body}</g>'
        return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{left} {top} {width} {height}">{body}</svg>'

    def glyph(self, emoji_str: str, name: str | None = None) -> Image.Image | None:
        """The picture of `emoji_str`; icons that chars.json misses (mirrored aliases) are found by CLDR `name`."""
        icon = self.names.get(sequence_key(emoji_str))
        if icon is None and name is not None:
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-").replace("-skin-tone", "")
            icon = slug if slug in self.known else None
        if icon is None:
            return None
        image = crop_to_ink(rasterise_svg(svg=self.svg(icon)))
        return image if image.width and image.height else None


def open_source(style: Style, font_path: str | None = None):
    """The picture source of `style` (`font_path` overrides the font of a font style)."""
    if style.kind == "font":
        return FontSource(str(font_path or style.location))
    reason = missing_reason(style)
    if reason:
        raise ValueError(f"styles: {style.name!r} is not installed ({reason})")
    folder = NODE_MODULES / style.location
    return IconifySource(folder) if style.kind == "iconify" else FileSource(folder)


def square_on_white(glyph: Image.Image, size: int) -> Image.Image:
    """Centre a cropped RGBA glyph in a square with a small margin, on white, resized to `size`."""
    side = math.ceil(max(glyph.size) / (1 - 2 * MARGIN))
    square = Image.new("RGB", (side, side), (255, 255, 255))
    # Composite at full resolution, then shrink the opaque RGB image: no premultiplied-alpha fringes.
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2), mask=glyph)
    return square.resize((size, size), Image.Resampling.LANCZOS)
