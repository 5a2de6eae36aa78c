"""The emoji data set builder (and, re-exported here, the data set it feeds: `uncond.dataset`).

    python -m uncond.data build-emoji --size 64 --out data/emoji                       # Noto only, as before
    python -m uncond.data build-emoji --sizes 32 64 128 --styles all --out data/emoji-multi

renders every fully-qualified emoji of the `emoji` package in each style (`uncond.sources.STYLES`: Noto, Twemoji,
OpenMoji colour and line art, Fluent flat, high contrast and 3D), centred on white, and captions each image
(`uncond.captions`). With `--sizes` each size gets its own folder (data/emoji-multi/32, /64, /128), each style a
subfolder; every picture is drawn once, large, and downsampled to each size. The layout is Hugging Face's
`imagefolder`: PNG files plus `metadata.jsonl` with `file_name`, `text` (the CLDR name), `captions`, `keywords`
(CLDR tags), `short_names`, `emoji`, `style`, `license` and `attribution`, so `datasets.load_dataset("imagefolder", data_dir=...)` reads it too.
An emoji a set has no picture of is skipped and counted (so are skin-tone variants in a set that draws no skin
tones: OpenMoji's line art).
"""

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import features

from uncond.captions import SKIN_TONES, caption_list, cldr_name, emoji_table, emoji_words, load_emojibase
from uncond.credits import credits_text
from uncond.dataset import (
    IMAGE_EXTENSIONS,
    ImageCaptionDataset,
    read_caption_lists,
    read_metadata,
    repeat_factors,
    variant_base,
)
from uncond.sources import (
    DEFAULT_FONT,
    MARGIN,
    STYLES,
    glyph_problem,
    has_skin_tone,
    load_emoji_font,
    open_source,
    parse_styles,
    render_glyph,
    square_on_white,
)

__all__ = [
    "DEFAULT_FONT",
    "IMAGE_EXTENSIONS",
    "MARGIN",
    "SKIN_TONES",
    "STYLES",
    "ImageCaptionDataset",
    "build_emoji",
    "cldr_name",
    "emoji_table",
    "glyph_problem",
    "load_emoji_font",
    "main",
    "read_caption_lists",
    "read_metadata",
    "recaption",
    "render_glyph",
    "repeat_factors",
    "square_on_white",
    "variant_base",
]
CHUNK = 256  # emoji per job when rendering with several workers

_SOURCES = {}  # (style, font_path) -> open source, one per process


def file_stem(emoji_str: str) -> str:
    """The file name of an emoji's image, as Noto's own files are named: "emoji_u1f44b_1f3fd"."""
    return "emoji_u" + "_".join(f"{ord(c):04x}" for c in emoji_str)


def metadata_row(file_name: str, words, style) -> dict:
    """One image's line of metadata.jsonl."""
    return {
        "file_name": file_name,
        "text": words.name,
        "captions": caption_list(words, style),
        "keywords": list(words.keywords),
        "short_names": [*words.short_names, *words.shortcodes],
        "emoji": words.emoji,
        "style": style.name,
        "license": style.license,
        "attribution": style.attribution,
    }


def recaption(folder) -> int:
    """Rewrite `captions`, `keywords` and `short_names` in every metadata.jsonl under `folder` by today's caption rules, without
    rendering again; returns the number of rows rewritten."""
    emojibase, n = load_emojibase(), 0
    for meta in sorted(Path(folder).rglob("metadata.jsonl")):
        rows = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not all(row.get("emoji") and row.get("style") in STYLES for row in rows):
            raise ValueError(f"folder {str(folder)!r}: {meta} was not written by build-emoji (no emoji or style)")
        words = {}
        with open(meta, "w", encoding="utf-8") as f:
            for row in rows:
                key = (row["emoji"], row["text"])
                if key not in words:
                    words[key] = emoji_words(*key, emojibase)
                f.write(
                    json.dumps(metadata_row(row["file_name"], words[key], STYLES[row["style"]]), ensure_ascii=False)
                    + "\n"
                )
        n += len(rows)
    return n


def _render_job(job) -> tuple[list, dict]:
    """Render one style's share of emoji into every root; returns [(index, drawn)] and seconds per size."""
    style, font_path, items, roots, prefix = job
    key = (style, font_path)
    if key not in _SOURCES:
        _SOURCES[key] = open_source(STYLES[style], font_path)
    source, done = _SOURCES[key], []
    tones = STYLES[style].skin_tones
    seconds = {size: 0.0 for size in roots}
    for index, emoji_str, name in items:
        glyph = source.glyph(emoji_str, name) if tones or not has_skin_tone(emoji_str) else None
        if glyph is not None:
            for size, root in roots.items():
                start = time.perf_counter()
                square_on_white(glyph, size).save(Path(root) / prefix / (file_stem(emoji_str) + ".png"), optimize=False)
                seconds[size] += time.perf_counter() - start
        done.append((index, glyph is not None))
    return done, seconds


def _prepare(root: Path) -> None:
    """Make `root` ready for a build: drop an earlier build's images, refuse a foreign non-empty folder."""
    meta_path = root / "metadata.jsonl"
    if root.is_dir() and any(root.iterdir()) and not meta_path.is_file():
        raise ValueError(f"out_dir {str(root)!r} is not empty and holds no earlier build; pick a new folder")
    if meta_path.is_file():  # a rebuild: drop the earlier images so no stale file outlives its caption
        for line in meta_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                (root / json.loads(line)["file_name"]).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def _check_arguments(size, sizes, limit, workers) -> list:
    """The sizes to build; ValueErrors name the argument that is wrong."""
    wanted = [size] if sizes is None else list(sizes)
    if not wanted or any(isinstance(s, bool) or not isinstance(s, int) or not 8 <= s <= 512 for s in wanted):
        name = "size" if sizes is None else "sizes"
        raise ValueError(f"{name} must be ints in 8..512, got {size if sizes is None else sizes!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    return list(dict.fromkeys(wanted))


def _select(table: list, only, limit) -> list:
    """The emoji of `table` named in `only` (captions or emoji), then the first `limit` of them."""
    if only is not None:
        wanted = [w.strip() for w in (only.split(",") if isinstance(only, str) else only) if w.strip()]
        known = {key for pair in table for key in pair}
        unknown = [w for w in wanted if w not in known]
        if not wanted or unknown:
            raise ValueError(
                f"only: unknown emoji names {unknown or only!r} (use captions like 'red heart' or the emoji itself)"
            )
        table = [(e, c) for e, c in table if e in wanted or c in wanted]
    return table[:limit]


def build_emoji(
    out_dir, size=64, font_path=None, limit=None, only=None, styles=("noto",), sizes=None, workers=1
) -> dict:
    """Render emoji in each of `styles` into imagefolder data sets (one per size); returns counts and seconds."""
    start = time.perf_counter()
    nested = sizes is not None  # --sizes: one folder per size
    sizes = _check_arguments(size, sizes, limit, workers)
    styles = parse_styles(styles)
    if "noto" in styles and not os.path.isfile(str(font_path or DEFAULT_FONT)):
        raise ValueError(
            f"font_path {str(font_path or DEFAULT_FONT)!r} does not exist (apt-get install fonts-noto-color-emoji, "
            "or pass --font PATH to a colour emoji font)"
        )
    table = _select(emoji_table(), only, limit)
    emojibase = load_emojibase()
    words = [emoji_words(e, name, emojibase) for e, name in table]

    out = Path(out_dir)
    roots = {s: (out / str(s) if nested else out) for s in sizes}
    sources = {name: open_source(STYLES[name], font_path) for name in styles}  # fail early on a missing set
    family = getattr(sources.get("noto"), "family", None)
    for root in roots.values():
        _prepare(root)
        for name in styles:
            (root / (name if len(styles) > 1 else "")).mkdir(exist_ok=True)
    del sources

    rows = {s: [] for s in sizes}
    counts, skipped, seconds_by_style = {}, {}, {}
    seconds_by_size = {s: 0.0 for s in sizes}
    items = [(i, e, name) for i, (e, name) in enumerate(table)]
    for name in styles:
        style_start = time.perf_counter()
        prefix = name if len(styles) > 1 else ""
        jobs = [
            (name, font_path, items[i : i + CHUNK], {s: str(r) for s, r in roots.items()}, prefix)
            for i in range(0, len(items), CHUNK)
        ]
        if workers == 1:
            results = [_render_job(job) for job in jobs]
        else:
            with ProcessPoolExecutor(workers) as pool:
                results = list(pool.map(_render_job, jobs))
        drawn = [index for done, _ in results for index, ok in done if ok]
        for _, seconds in results:
            for s, t in seconds.items():
                seconds_by_size[s] += t
        style = STYLES[name]
        for index in drawn:
            row = metadata_row(
                (f"{prefix}/" if prefix else "") + file_stem(words[index].emoji) + ".png", words[index], style
            )
            for s in sizes:
                rows[s].append(row)
        counts[name] = len(drawn)
        drawn_set = set(drawn)
        skipped[name] = [words[i].name for i, _, _ in items if i not in drawn_set]
        seconds_by_style[name] = time.perf_counter() - style_start

    credits = credits_text(counts, family)
    for s, root in roots.items():
        with open(root / "metadata.jsonl", "w", encoding="utf-8") as meta:
            for row in rows[s]:
                meta.write(json.dumps(row, ensure_ascii=False) + "\n")
        _write_notes(root, s, counts, skipped, credits)
    if nested:
        (out / "LICENSE").write_text(credits, encoding="utf-8")
    skipped_names = [n for name in styles for n in skipped[name]]
    return {
        "rendered": sum(counts.values()),
        "skipped": len(skipped_names),
        "skipped_names": skipped_names,
        "counts": counts,
        "skipped_by_style": {name: len(names) for name, names in skipped.items()},
        "seconds": time.perf_counter() - start,
        "seconds_by_style": seconds_by_style,
        "seconds_by_size": seconds_by_size,
        "out_dir": str(out),
        "roots": {s: str(r) for s, r in roots.items()},
        "font": family,
        "keywords": bool(emojibase),
        "raqm": features.check("raqm"),
    }


def _write_notes(root: Path, size: int, counts: dict, skipped: dict, credits: str) -> None:
    """LICENSE (the credits) and README.md beside the images."""
    (root / "LICENSE").write_text(credits, encoding="utf-8")
    per_style = "\n".join(
        f"| {name} | {n} | {len(skipped[name])} | {STYLES[name].license} |" for name, n in counts.items()
    )
    (root / "README.md").write_text(
        f"# Emoji {size}x{size}\n\n{sum(counts.values())} images of fully-qualified emoji, centred on white, one PNG "
        "each; `metadata.jsonl` holds `file_name`, `text` (the CLDR name), `captions` (all training captions), "
        "`keywords`, `short_names`, `emoji`, `style`, `license` and `attribution`: the Hugging Face `imagefolder` layout.\n"
        f"Built with `python -m uncond.data build-emoji`; emoji a set has no picture of were skipped.\n\n"
        f"| style | images | skipped | licence |\n| --- | --- | --- | --- |\n{per_style}\n\n{credits}",
        encoding="utf-8",
    )


def main(argv=None) -> None:
    """Command line: `python -m uncond.data build-emoji --sizes 32 64 128 --styles all --out data/emoji-multi`."""
    parser = argparse.ArgumentParser(prog="python -m uncond.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-emoji", help="render the emoji data set (imagefolder layout)")
    build.add_argument("--size", type=int, default=64, help="image side in pixels (8..512), one flat folder")
    build.add_argument("--sizes", type=int, nargs="+", default=None, help="several sizes, one subfolder each")
    build.add_argument("--styles", default="noto", help=f"'all' or comma-separated, from {', '.join(STYLES)}")
    build.add_argument("--out", default="data/emoji", help="output folder")
    build.add_argument("--font", default=None, help=f"colour emoji font of the noto style (default {DEFAULT_FONT})")
    build.add_argument("--limit", type=int, default=None, help="render only the first N emoji")
    build.add_argument(
        "--only",
        default=None,
        help="comma-separated captions or emoji, e.g. 'red heart,cat face' (captions that "
        "contain commas: give the emoji itself)",
    )
    build.add_argument("--workers", type=int, default=1, help="processes rendering in parallel")
    again = sub.add_parser("recaption", help="rewrite the captions of a built data set (no rendering)")
    again.add_argument("folder", help="a folder build-emoji wrote (all metadata.jsonl under it are rewritten)")
    args = parser.parse_args(argv)
    if args.command == "recaption":
        print(f"rewrote the captions of {recaption(args.folder)} images under {args.folder}")
    if args.command == "build-emoji":
        stats = build_emoji(
            args.out,
            size=args.size,
            font_path=args.font,
            limit=args.limit,
            only=args.only,
            styles=args.styles,
            sizes=args.sizes,
            workers=args.workers,
        )
        print(
            f"rendered {stats['rendered']}, skipped {stats['skipped']} (the set has no picture), "
            f"{stats['seconds']:.1f} s -> {stats['out_dir']}"
        )
        for name, n in stats["counts"].items():
            print(
                f"  {name}: {n} images, {stats['skipped_by_style'][name]} skipped, {stats['seconds_by_style'][name]:.1f} s"
            )
        print("  seconds framing and saving per size:", {s: round(t, 1) for s, t in stats["seconds_by_size"].items()})
        if stats["skipped_names"]:
            print("skipped e.g.:", "; ".join(stats["skipped_names"][:5]))
        if not stats["keywords"]:
            print(
                "note: emojibase-data is not installed (npm ci --prefix uncond/sources): no CLDR keywords in captions"
            )
        if not stats["raqm"]:
            print("note: Pillow lacks raqm, so sequences (ZWJ, flags) could not be shaped and were skipped")


if __name__ == "__main__":
    main()
