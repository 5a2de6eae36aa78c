"""Natural prompts for the evaluation: what people type that is not an emoji's English name, each with the emoji
that are right answers.

    python -m uncond.prompts --data data/emoji-multi/32 --out assets/eval/natural_prompts.json

Four kinds, all drawn deterministically (CRC-32 order) from the caption data (`uncond.captions`): CLDR keywords
("vehicle"; 100 seen in training and 30 held out of it), short names ("red car"), short sentences built on them
("draw a red car", "a drawing of a cop"), and names in other languages ("corazón rojo", "自動車"). A keyword shared by several emoji accepts any of them, and
each emoji accepts its skin-tone and hair variants (the prompt names none). Prompts whose keyword or template is
held out of training (`uncond.splits`) are marked `held_out` ("keyword" or "template").
"""

import argparse
import json
import re
from collections import defaultdict

from uncond.captions import LANGUAGES, SKIN_TONES, emoji_table, emoji_words, fill, load_emojibase
from uncond.dataset import read_metadata, variant_base
from uncond.splits import HELD_OUT_TEMPLATES, WORD, held_out_keywords, stable_hash

# Sentences around a keyword or short name; the first is the held-out training template.
SENTENCES = (*HELD_OUT_TEMPLATES, "draw {a} {x}", "I want {a} {x}", "show me {a} {x}", "{a} {x}, please")
COUNTS = {"keyword": 100, "held out": 30, "short name": 40, "sentence": 60, "language": 65}  # "held out": keywords
MAX_GROUPS = 6  # a prompt accepting more distinct emoji than this says too little to judge


def plain(text: str) -> str:
    """Letters and digits only, case-folded: "Eight-Spoked Asterisk" -> "eight spoked asterisk"."""
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


def lexicon(emojis: set | None = None) -> list:
    """`EmojiWords` of every emoji of the `emoji` package (or only those in `emojis`), in its order."""
    emojibase = load_emojibase()
    return [emoji_words(e, name, emojibase) for e, name in emoji_table() if emojis is None or e in emojis]


def _accepting(words: list) -> dict:
    """{English keyword or short name: set of CLDR names of the emoji it describes (by any of its words)}."""
    table = defaultdict(set)
    for w in words:
        for k in (*w.short_names, *w.keywords, *w.shortcodes):
            table[k].add(w.name)
    return table


def _groups(names: set) -> set:
    return {variant_base(n) for n in names}


def tone_base(name: str) -> str:
    """A CLDR name without its skin tones: "man: light skin tone, red hair" -> "man: red hair"."""
    base, _, qualifiers = name.partition(": ")
    rest = [q for q in qualifiers.split(", ") if q and q not in SKIN_TONES]
    return f"{base}: {', '.join(rest)}" if rest else base


def _first(candidates, n: int) -> list:
    """The first `n` of `candidates` in CRC-32 order (stable whatever else the data set holds)."""
    return sorted(set(candidates), key=lambda c: (stable_hash(c), c))[:n]


def natural_prompts(words: list, counts: dict = COUNTS) -> list:
    """The prompts: dicts with prompt, kind, language, acceptable (CLDR names), emoji and held_out (None or why)."""
    names = {plain(w.name) for w in words}
    emoji_of = {w.name: w.emoji for w in words}
    tones = defaultdict(set)  # an emoji and its skin-tone variants
    for w in words:
        tones[tone_base(w.name)].add(w.name)
    held = set(
        held_out_keywords(
            [w.keywords for w in words], [w.name for w in words], [[*w.short_names, *w.shortcodes] for w in words]
        )
    )
    accepting = _accepting(words)
    usable = {
        k: v
        for k, v in accepting.items()
        if WORD.fullmatch(k) and plain(k) not in names and 1 <= len(_groups(v)) <= MAX_GROUPS
    }
    shorts = {s for w in words for s in w.short_names if s in usable}
    keywords = set(usable) - shorts - held

    def entry(prompt, kind, accepted, language="en", held_out=None):
        accepted = sorted({n for name in accepted for n in tones[tone_base(name)]} | set(accepted))
        emoji = [emoji_of[n] for n in accepted]
        return {
            "prompt": prompt,
            "kind": kind,
            "language": language,
            "acceptable": accepted,
            "emoji": emoji,
            "held_out": held_out,
        }

    prompts = [entry(k, "keyword", usable[k]) for k in _first(keywords, counts["keyword"])]
    prompts += [
        entry(k, "keyword", usable[k], held_out="keyword") for k in _first(held & set(usable), counts["held out"])
    ]
    prompts += [entry(s, "short name", usable[s]) for s in _first(shorts, counts["short name"])]
    # Sentences: on short names ("cop", "red car"), nouns more often than the tags are.
    for i, x in enumerate(_first(shorts, counts["sentence"])):
        template = SENTENCES[i % len(SENTENCES)]
        why = "template" if template in HELD_OUT_TEMPLATES else None
        prompts.append(entry(fill(template, x), "sentence", usable[x], held_out=why))
    by_language = defaultdict(lambda: defaultdict(set))  # language -> name there -> CLDR names
    for w in words:
        if variant_base(w.name) == w.name:  # names of variants repeat the tone words; the base names suffice
            for language, name in w.names.items():
                by_language[language][name].add(w.name)
    taken = {plain(p["prompt"]) for p in prompts}
    for i, language in enumerate(LANGUAGES):
        n = counts["language"] // len(LANGUAGES) + (i < counts["language"] % len(LANGUAGES))
        pool = {name: v for name, v in by_language[language].items() if plain(name) not in names | taken}
        chosen = _first(pool, n)
        taken |= {plain(name) for name in chosen}  # "auto" is Italian and German: asked once
        prompts += [entry(name, "language", pool[name], language=language) for name in chosen]
    return prompts


def main(argv=None) -> dict:
    """Command line: write the prompts file (JSON) for the emoji in `--data`, or all emoji of the `emoji` package."""
    parser = argparse.ArgumentParser(prog="python -m uncond.prompts", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="a built data set: only its emoji are used")
    parser.add_argument("--out", default="assets/eval/natural_prompts.json")
    args = parser.parse_args(argv)
    emojis = {row.get("emoji") for row in read_metadata(args.data)[1]} if args.data else None
    prompts = natural_prompts(lexicon(emojis))
    report = {
        "about": __doc__.split("\n\n")[0].replace("\n", " "),
        "made_by": "python -m uncond.prompts" + (" --data DATA" if args.data else ""),
        "counts": {
            kind: sum(p["kind"] == kind for p in prompts) for kind in ("keyword", "short name", "sentence", "language")
        },
        "held_out": sum(p["held_out"] is not None for p in prompts),
        "prompts": prompts,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(prompts)} prompts ({report['counts']}, {report['held_out']} held out) -> {args.out}")
    return report


if __name__ == "__main__":
    main()
