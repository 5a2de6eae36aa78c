"""Image-caption data: the emoji data set builder and the in-memory training data set.

    python -m uncond.data build-emoji --size 64 --out data/emoji

renders every fully-qualified emoji of the `emoji` package with a colour emoji font
(default: Debian's fonts-noto-color-emoji, SIL OFL 1.1), centred on white, captioned with
its Unicode (CLDR) short name ("red heart", "waving hand: medium skin tone", "flag: Japan").
The output is the Hugging Face `imagefolder` layout: PNG files plus `metadata.jsonl` with
`file_name` and `text`, so `datasets.load_dataset("imagefolder", data_dir=...)` reads it too.

`ImageCaptionDataset` reads such a folder (or a hub dataset name, when `datasets` and a
network are there) into one uint8 tensor (N, C, H, W) and serves pixels in [-1, 1].
"""

import argparse
import collections
import copy
import json
import math
import os
import re
import time
from pathlib import Path

import torch
from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageOps, features

DEFAULT_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
# CBDT bitmap fonts such as Noto Color Emoji only load at the size of their bitmap strike (109 px);
# outline (COLR) fonts load at any size, so 109 serves both.
RENDER_SIZES = (109, 136, 128, 160, 72)
MARGIN = 0.06  # empty border on each side, as a fraction of the image side
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}

# Licences of fonts we know by family name, for the attribution note written beside the images.
FONT_LICENSES = {
    "Noto Color Emoji": (
        "SIL Open Font License 1.1 (OFL-1.1), Copyright Google Inc.",
        "https://github.com/googlefonts/noto-emoji",
    ),
    "OpenMoji": ("Creative Commons Attribution-ShareAlike 4.0 (CC BY-SA 4.0)", "https://openmoji.org"),
    "Twemoji Mozilla": ("Creative Commons Attribution 4.0 (CC BY 4.0)", "https://github.com/mozilla/twemoji-colr"),
}

# Parts of CLDR names that go after the colon: "man: light skin tone, red hair".
SKIN_TONES = (
    "light skin tone",
    "medium-light skin tone",
    "medium skin tone",
    "medium-dark skin tone",
    "dark skin tone",
)
HAIR = ("red hair", "curly hair", "white hair", "blond hair", "bald", "beard")
HAIR_BASES = {"man", "woman", "person"}
GROUPS = ("kiss", "couple with heart", "family")  # "kiss: woman, man", "family: man, woman, boy"
GROUP_MEMBERS = {"man", "woman", "person", "boy", "girl", "adult", "child", "baby"}


VARIANT_WORDS = set(SKIN_TONES) | set(HAIR) | GROUP_MEMBERS  # qualifiers that make a variant of the same emoji


def variant_base(caption: str) -> str:
    """The emoji a caption is a variant of: "waving hand: medium skin tone" -> "waving hand"; "flag: Japan" stays."""
    base, _, qualifiers = caption.partition(": ")
    if qualifiers and all(word in VARIANT_WORDS for word in qualifiers.split(", ")):
        return base
    return caption


def repeat_factors(captions: list[str]) -> list[int]:
    """Repeat factor sampling (Gupta et al. 2019, LVIS, section 4): each item is repeated round(sqrt(n_max / n)) times
    per epoch, n being the size of its variant group (`variant_base`) and n_max the largest group's.

    The emoji set is long-tailed the other way round from what people type: 104 "kiss" and "couple with heart"
    variants, but one "pizza". Square-root repeats give the single emoji about 1.6x the share of training they
    have in a plain epoch while the skin-tone variants keep most of theirs.
    """
    bases = [variant_base(caption) for caption in captions]
    sizes = collections.Counter(bases)
    n_max = max(sizes.values(), default=1)
    return [max(1, round(math.sqrt(n_max / sizes[base]))) for base in bases]


def _strip_suffixes(text: str, suffixes: tuple[str, ...], most: int = 99) -> tuple[str, list[str]]:
    """Peel known words off the end of `text`; returns the rest and the peeled words in order."""
    found = []
    while len(found) < most:
        # The leading space keeps "medium-dark skin tone" from matching "dark skin tone".
        hit = next((s for s in suffixes if text.endswith(" " + s)), None)
        if hit is None:
            break
        text, found = text[: -len(hit) - 1], [hit] + found
    return text, found


def cldr_name(emoji_str: str, en_name: str) -> str:
    """Rebuild the Unicode short name ("flag: Japan") from the emoji package's ':Japan:' form."""
    name = en_name.strip(":").replace("_", " ")
    codes = [ord(c) for c in emoji_str]
    # The package drops "flag: " and every colon and comma; put them back where CLDR has them.
    if all(0x1F1E6 <= c <= 0x1F1FF for c in codes) or (
        codes[0] == 0x1F3F4 and len(codes) > 1 and all(0xE0020 <= c <= 0xE007F for c in codes[1:])
    ):
        return "flag: " + name
    if name.startswith("keycap "):
        return "keycap: " + name[len("keycap ") :]
    match = re.fullmatch(r"Japanese (.+) button", name)
    if match and (0x1F200 <= codes[0] <= 0x1F2FF or codes[0] in (0x3297, 0x3299)):
        return f"Japanese \u201c{match.group(1)}\u201d button"  # CLDR quotes the meaning
    base, hair = _strip_suffixes(name, HAIR, most=1)
    base, tones = _strip_suffixes(base, SKIN_TONES)
    if hair and base not in HAIR_BASES:  # not a hair style after all: undo
        base, tones = _strip_suffixes(name, SKIN_TONES)
        hair = []
    members = []
    for group in GROUPS:
        rest = base[len(group) + 1 :].split(" ")
        if base.startswith(group + " ") and all(word in GROUP_MEMBERS for word in rest):
            base, members = group, rest
            break
    qualifiers = members + tones + hair
    return f"{base}: {', '.join(qualifiers)}" if qualifiers else base


def emoji_table() -> list[tuple[str, str]]:
    """All fully-qualified emoji of the `emoji` package as (emoji, caption) pairs."""
    import emoji  # only the builder needs it

    full = emoji.STATUS["fully_qualified"]
    return [(e, cldr_name(e, d["en"])) for e, d in emoji.EMOJI_DATA.items() if d["status"] == full]


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
    box = canvas.getchannel("A").getbbox()
    return canvas.crop(box) if box else canvas.crop((0, 0, 0, 0))


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


def square_on_white(glyph: Image.Image, size: int) -> Image.Image:
    """Centre a cropped RGBA glyph in a square with a small margin, on white, resized to `size`."""
    side = math.ceil(max(glyph.size) / (1 - 2 * MARGIN))
    square = Image.new("RGB", (side, side), (255, 255, 255))
    # Composite at full resolution, then shrink the opaque RGB image: no premultiplied-alpha fringes.
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2), mask=glyph)
    return square.resize((size, size), Image.Resampling.LANCZOS)


def _license_note(font_path: str, family: str) -> str:
    """Attribution text naming the font and its licence."""
    licence, url = FONT_LICENSES.get(family, ("unknown: check the font's own licence before sharing", ""))
    return (
        f'Images rendered from the font "{family}" ({os.path.basename(font_path)}){" " + url if url else ""}.\n'
        f"Font licence: {licence}.\n"
        "Captions: Unicode CLDR emoji short names (Unicode License v3), via the Python `emoji` package.\n"
    )


def build_emoji(out_dir, size=64, font_path=None, limit=None, only=None) -> dict:
    """Render emoji into an imagefolder data set at `out_dir`; returns counts and seconds."""
    start = time.perf_counter()
    if not isinstance(size, int) or not 8 <= size <= 512:
        raise ValueError(f"size must be an int in 8..512, got {size!r}")
    font_path = str(font_path or DEFAULT_FONT)
    if not os.path.isfile(font_path):
        raise ValueError(
            f"font_path {font_path!r} does not exist (apt-get install fonts-noto-color-emoji, "
            "or pass --font PATH to a colour emoji font)"
        )
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    table = emoji_table()
    if only is not None:
        wanted = [w.strip() for w in (only.split(",") if isinstance(only, str) else only) if w.strip()]
        known = {key for pair in table for key in pair}
        unknown = [w for w in wanted if w not in known]
        if not wanted or unknown:
            raise ValueError(
                f"only: unknown emoji names {unknown or only!r} (use captions like 'red heart' or the emoji itself)"
            )
        table = [(e, c) for e, c in table if e in wanted or c in wanted]
    table = table[:limit]

    font = load_emoji_font(font_path)
    family = font.getname()[0] or Path(font_path).stem
    notdef = render_glyph(font, "\U0010fffd")  # a private-use code point no font maps: glyph 0
    notdef = notdef if notdef.width else None
    if glyph_problem(render_glyph(font, "\U0001f600"), 1, 1, notdef):
        raise ValueError(f"font_path {font_path!r} cannot draw U+1F600; is it a colour emoji font?")

    out = Path(out_dir)
    meta_path = out / "metadata.jsonl"
    if out.is_dir() and any(out.iterdir()) and not meta_path.is_file():
        raise ValueError(f"out_dir {str(out)!r} is not empty and holds no earlier build; pick a new folder")
    if meta_path.is_file():  # a rebuild: drop the earlier images so no stale file outlives its caption
        for line in meta_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                (out / json.loads(line)["file_name"]).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    rendered, skipped = [], []
    with open(meta_path, "w", encoding="utf-8") as meta:
        for emoji_str, caption in table:
            glyph = render_glyph(font, emoji_str)
            widest = max(font.getlength(c) for c in emoji_str)
            if glyph_problem(glyph, font.getlength(emoji_str), widest, notdef):
                skipped.append(caption)
                continue
            file_name = "emoji_u" + "_".join(f"{ord(c):04x}" for c in emoji_str) + ".png"
            square_on_white(glyph, size).save(out / file_name, optimize=False)
            meta.write(
                json.dumps({"file_name": file_name, "text": caption, "emoji": emoji_str}, ensure_ascii=False) + "\n"
            )
            rendered.append(caption)

    note = _license_note(font_path, family)
    (out / "LICENSE").write_text(note, encoding="utf-8")
    (out / "README.md").write_text(
        f"# Emoji {size}x{size}\n\n{len(rendered)} fully-qualified emoji, centred on white, one PNG each; "
        "`metadata.jsonl` holds `file_name` and `text` (the caption), the Hugging Face `imagefolder` layout.\n"
        f"Built with `python -m uncond.data build-emoji --size {size}`; {len(skipped)} emoji the font "
        f"cannot draw were skipped.\n\n## Attribution\n\n{note}",
        encoding="utf-8",
    )
    return {
        "rendered": len(rendered),
        "skipped": len(skipped),
        "skipped_names": skipped,
        "seconds": time.perf_counter() - start,
        "out_dir": str(out),
        "font": family,
        "raqm": features.check("raqm"),
    }


def _to_uint8(image: Image.Image, image_size: int | None, mode: str) -> torch.Tensor:
    """PIL image → uint8 (C, H, W): transparency onto white, centre-cropped and resized if asked."""
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    image = image.convert(mode)
    if image_size is not None and image.size != (image_size, image_size):
        image = ImageOps.fit(image, (image_size, image_size), Image.Resampling.LANCZOS)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(image.height, image.width, len(mode)).permute(2, 0, 1)  # (C, H, W)


def _read_folder(folder: Path) -> tuple[list[Path], list[str]]:
    """Image paths and captions from every metadata.jsonl under `folder`, or all images with ""."""
    metas = sorted(folder.rglob("metadata.jsonl"))
    if not metas:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        return files, [""] * len(files)
    files, captions = [], []
    for meta in metas:
        for line in meta.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            # Caption: "text", else the first other string column, as imagefolder users name it freely.
            text = row.get("text", next((v for k, v in row.items() if k != "file_name" and isinstance(v, str)), ""))
            files.append(meta.parent / row["file_name"])
            captions.append(text)
    return files, captions


class ImageCaptionDataset(torch.utils.data.Dataset):
    """Images and captions held in memory as uint8 (N, C, H, W); items are pixels in [-1, 1]."""

    def __init__(self, path_or_name: str, image_size: int | None = None, random_flip: bool = False, channels: int = 3):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
        mode = "RGB" if channels == 3 else "L"
        self.random_flip = random_flip
        if os.path.isdir(path_or_name):
            files, self.captions = _read_folder(Path(path_or_name))
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise ValueError(f"path_or_name {path_or_name!r}: metadata names missing files, e.g. {missing[:3]}")
            images = []
            for f in files:
                with Image.open(f) as image:
                    images.append(_to_uint8(image, image_size, mode))
        else:
            pil_images, self.captions = _load_hub(path_or_name)
            images = [_to_uint8(image, image_size, mode) for image in pil_images]
        if not images:
            raise ValueError(f"path_or_name {path_or_name!r} holds no images")
        sizes = {tuple(x.shape) for x in images}
        if len(sizes) > 1:
            raise ValueError(f"images differ in size {sorted(sizes)[:3]}...; pass image_size to resize them")
        self.images = torch.stack(images)  # (N, C, H, W) uint8

    def __len__(self) -> int:
        return len(self.images)

    def without(self, captions) -> "ImageCaptionDataset":
        """A view of this data set without the items whose caption is in `captions` (e.g. a held-out split)."""
        drop = set(captions)
        keep = [i for i, caption in enumerate(self.captions) if caption not in drop]
        subset = copy.copy(self)
        subset.images = self.images[keep]
        subset.captions = [self.captions[i] for i in keep]
        return subset

    def __getitem__(self, i: int) -> dict:
        x = self.images[i].float() / 127.5 - 1.0  # (C, H, W) in [-1, 1]
        if self.random_flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return {"pixel_values": x, "text": self.captions[i], "index": i}


def _load_hub(name: str) -> tuple[list[Image.Image], list[str]]:
    """PIL images and captions of a Hugging Face dataset's train split."""
    try:
        import datasets  # optional: only hub names need it
    except ImportError as err:
        raise ValueError(
            f"path_or_name {name!r} is not a folder, and `datasets` is not installed to load it from the hub"
        ) from err
    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as err:  # noqa: BLE001 - any loading failure means the same to the caller
        raise ValueError(f"path_or_name {name!r} is neither an existing folder nor a loadable dataset: {err}") from err
    image_col = (
        "image"
        if "image" in ds.column_names
        else next((k for k, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    )
    if image_col is None:
        raise ValueError(f"path_or_name {name!r}: no image column in {ds.column_names}")
    text_col = (
        "text"
        if "text" in ds.column_names
        else next((k for k, f in ds.features.items() if getattr(f, "dtype", None) == "string"), None)
    )
    captions = [str(t) for t in ds[text_col]] if text_col else [""] * len(ds)
    return list(ds[image_col]), captions


def main(argv=None) -> None:
    """Command line: `python -m uncond.data build-emoji --size 64 --out data/emoji`."""
    parser = argparse.ArgumentParser(prog="python -m uncond.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-emoji", help="render the emoji data set (imagefolder layout)")
    build.add_argument("--size", type=int, default=64, help="image side in pixels (8..512)")
    build.add_argument("--out", default="data/emoji", help="output folder")
    build.add_argument("--font", default=None, help=f"colour emoji font (default {DEFAULT_FONT})")
    build.add_argument("--limit", type=int, default=None, help="render only the first N emoji")
    build.add_argument(
        "--only",
        default=None,
        help="comma-separated captions or emoji, e.g. 'red heart,cat face' (captions that "
        "contain commas: give the emoji itself)",
    )
    args = parser.parse_args(argv)
    if args.command == "build-emoji":
        stats = build_emoji(args.out, size=args.size, font_path=args.font, limit=args.limit, only=args.only)
        print(
            f"rendered {stats['rendered']}, skipped {stats['skipped']} (font cannot draw them), "
            f"{stats['seconds']:.1f} s -> {stats['out_dir']} ({stats['font']})"
        )
        if stats["skipped_names"]:
            print("skipped e.g.:", "; ".join(stats["skipped_names"][:5]))
        if not stats["raqm"]:
            print("note: Pillow lacks raqm, so sequences (ZWJ, flags) could not be shaped and were skipped")


if __name__ == "__main__":
    main()
