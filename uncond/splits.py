"""Held-out splits, to measure generalisation: what training (CLIP and the UNets) never sees.

Three kinds, each picked by CRC-32 of names (the same on every machine and run, and independent of the rest of
the data set wherever it can be):
- (emoji, skin tone) pairs: the split the evaluation has always used (`held_out_captions` of the old
  `txt2img/evaluate.py`), same membership (it is computed over the names Noto draws, the data set it was defined
  on); every image of such a caption is held out, in all styles.
- (emoji, style) pairs: about one emoji in `STYLE_PAIR_EVERY` loses one of its styles; the emoji keeps its other
  styles and the style keeps its other emoji, so each held-out image pairs a known emoji with a known style.
- keywords and templates: about one English CLDR keyword in `KEYWORD_EVERY` (plain words only, never an emoji's
  CLDR name or short name, so "car" stays), and the template "a drawing of {a} {x}", are left out of every caption
  list; their images stay, under their other captions.

    from uncond.splits import training_subset, held_out
    train = training_subset(dataset)   # what the trainers fit
    split = held_out(dataset)          # what the evaluation asks for
"""

import re
import zlib
from collections import Counter, defaultdict

from uncond.captions import SKIN_TONES, TEMPLATES, fill
from uncond.dataset import variant_base
from uncond.sources import STYLES

SKIN_TONE_EVERY = 4  # about one emoji in four with skin tones loses one tone (as before the multi-style data)
STYLE_PAIR_EVERY = 16  # about one emoji in sixteen loses one style
KEYWORD_EVERY = 20  # about one keyword in twenty is never a training caption
SKIN_TONE_REFERENCE_STYLE = "noto"  # the skin-tone split is computed over this style's names where there is one
WORD = re.compile(r"[a-z][a-z' -]+[a-z]")  # plain English words: no digits, codes, capitals or emoticons
HELD_OUT_TEMPLATES = ("a drawing of {a} {x}",)  # never a training caption; prompts may use it
MIN_STYLES_LEFT = 2  # an emoji gives up a style only if it keeps at least this many


def stable_hash(text: str) -> int:
    """A hash that is the same in every run and on every machine (Python's hash() is salted)."""
    return zlib.crc32(text.encode("utf-8"))


def skin_tone_pair(caption: str) -> tuple[str, str] | None:
    """("waving hand", "medium skin tone") for "waving hand: medium skin tone"; None unless one emoji with one tone."""
    base, colon, qualifier = caption.rpartition(": ")
    return (base, qualifier) if colon and qualifier in SKIN_TONES else None


def held_out_skin_tones(captions: list, every: int = SKIN_TONE_EVERY) -> list:
    """The held-out (emoji, skin tone) captions, the same as the old `txt2img/evaluate.py` held out.

    Among emoji with at least three single-tone captions, about one in `every` (picked by a CRC-32 of its name)
    loses one tone (also picked by CRC-32); each held-out tone keeps other emoji.
    """
    tones_of = defaultdict(list)
    for caption in sorted(set(captions)):
        pair = skin_tone_pair(caption)
        if pair is not None:
            tones_of[pair[0]].append(pair[1])
    picked = []
    for base, tones in sorted(tones_of.items()):
        if len(tones) >= 3 and stable_hash(base) % every == 0:
            tones = sorted(tones, key=SKIN_TONES.index)
            picked.append((base, tones[stable_hash(base + " | tone") % len(tones)]))
    left = Counter(tone for base, tones in tones_of.items() for tone in tones) - Counter(tone for _, tone in picked)
    return [f"{base}: {tone}" for base, tone in picked if left[tone] > 0]


def held_out_style_pairs(captions: list, styles: list, every: int = STYLE_PAIR_EVERY, exclude=()) -> list:
    """Sorted (CLDR name, style) pairs held out: `captions[i]` and `styles[i]` describe image i.

    Only emoji that are not variants (no skin tone or hair qualifier) with at least `MIN_STYLES_LEFT` + 1 styles
    take part; about one in `every` gives up the style with the smallest CRC-32 of "name | style". Names in
    `exclude` (already held out) take no part.
    """
    styles_of = defaultdict(set)
    for caption, style in zip(captions, styles):
        if style:
            styles_of[caption].add(style)
    skip = set(exclude)
    picked = []
    for name, have in sorted(styles_of.items()):
        if name in skip or variant_base(name) != name or len(have) <= MIN_STYLES_LEFT:
            continue
        if stable_hash(name + " | style pair") % every == 0:
            picked.append((name, min(have, key=lambda s: (stable_hash(f"{name} | {s}"), s))))
    # Each style keeps other emoji (with seven sets and one pick in sixteen this never binds; it is checked anyway).
    images_of = Counter(s for have in styles_of.values() for s in have)
    lost = Counter(s for _, s in picked)
    return [(name, s) for name, s in picked if images_of[s] - lost[s] > 0]


def held_out_keywords(keyword_lists: list, captions: list, short_name_lists=(), every: int = KEYWORD_EVERY) -> list:
    """Sorted English keywords never used as training captions: about one plain word (`WORD`) in `every` by CRC-32,
    leaving out CLDR names (`captions`) and short names, which people type most."""
    taken = {c.casefold() for c in captions} | {s.casefold() for names in short_name_lists for s in names}
    keywords = {k for keywords in keyword_lists for k in keywords if WORD.fullmatch(k)}
    return sorted(k for k in keywords if k.casefold() not in taken and stable_hash(k) % every == 0)


def keyword_forms(keyword: str) -> set:
    """Every caption string built from `keyword`: itself, its templates, and it followed by a style."""
    forms = {keyword, *(fill(t, keyword) for t in TEMPLATES)}
    return forms | {f"{keyword}, {w}" for style in STYLES.values() for w in style.words}


def template_pattern(templates=HELD_OUT_TEMPLATES) -> re.Pattern:
    """A regex matching every caption made from one of `templates`."""
    parts = [re.escape(t).replace(r"\{a\}", "(?:a|an)").replace(r"\{x\}", ".+") for t in templates]
    return re.compile("|".join(f"(?:{p})" for p in parts))


def held_out(dataset) -> dict:
    """What training leaves out of `dataset` (an `ImageCaptionDataset`): the three kinds of split, by name."""
    reference = [c for c, s in zip(dataset.captions, dataset.styles) if s == SKIN_TONE_REFERENCE_STYLE]
    skin_tones = held_out_skin_tones(reference or dataset.captions)
    pairs = held_out_style_pairs(dataset.captions, dataset.styles, exclude=skin_tones)
    keywords = held_out_keywords(dataset.keyword_lists, dataset.captions, dataset.short_name_lists)
    return {
        "skin_tone_captions": skin_tones,
        "style_pairs": pairs,
        "keywords": keywords,
        "templates": list(HELD_OUT_TEMPLATES),
    }


def held_out_indices(dataset, split: dict | None = None) -> dict:
    """Indices of the held-out images: {"skin_tone": [...], "style_pair": [...]}."""
    split = split or held_out(dataset)
    tones, pairs = set(split["skin_tone_captions"]), set(map(tuple, split["style_pairs"]))
    return {
        "skin_tone": [i for i, c in enumerate(dataset.captions) if c in tones],
        "style_pair": [i for i, (c, s) in enumerate(zip(dataset.captions, dataset.styles)) if (c, s) in pairs],
    }


def training_subset(dataset, split: dict | None = None):
    """A view of `dataset` for training: held-out images gone, held-out keywords and templates out of every list."""
    split = split or held_out(dataset)
    drop_images = {i for indices in held_out_indices(dataset, split).values() for i in indices}
    drop_captions = set().union(*map(keyword_forms, split["keywords"]))
    pattern = template_pattern(split["templates"])
    keep, lists = [], []
    for i, captions in enumerate(dataset.caption_lists):
        if i in drop_images:
            continue
        kept = [c for c in captions if c not in drop_captions and not pattern.fullmatch(c)]
        keep.append(i)
        lists.append(kept or [dataset.captions[i]])  # the CLDR name is never a held-out keyword
    return dataset.subset(keep, caption_lists=lists)
