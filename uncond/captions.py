"""Captions: the Unicode (CLDR) name of every emoji, and the list of words people type for it.

Each image gets a list of captions (`caption_list`), of which training draws one per step:
the CLDR name ("automobile"), the short names of the `emoji` package ("car", "red car"), the CLDR keywords of
`emojibase-data` (npm; "driving", "vehicle"), the style in words alone and with the name ("line art",
"automobile, line art"), plain templates ("a picture of an automobile", "a red car"), and the names in the
other languages the `emoji` package ships ("coche", "voiture", "自動車"). The order is fixed, duplicates are
dropped, so the list is the same on every machine. `CaptionIndex` searches all of them (the app's suggestions).
"""

import bisect
import itertools
import json
import re
import unicodedata
from dataclasses import dataclass, field

from uncond.sources import NODE_MODULES, Style, sequence_key

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
# The `emoji` package's languages other than English, in its own order.
LANGUAGES = ("es", "ja", "ko", "pt", "it", "fr", "de", "fa", "id", "zh", "ru", "tr", "ar")
# Plain templates; {a} is the article ("a"/"an") of {x}, a name or short name.
TEMPLATES = ("{a} {x}", "an emoji of {a} {x}", "a picture of {a} {x}", "a drawing of {a} {x}", "{x} emoji")
EMOJIBASE = NODE_MODULES / "emojibase-data" / "en"


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


def _words(code: str) -> str:
    """ ":red_car:" or "red_car" -> "red car"."""
    return " ".join(code.strip(":").replace("_", " ").split())


@dataclass(frozen=True)
class EmojiWords:
    """What one emoji is called: its CLDR name, short names, keywords and names in other languages."""

    emoji: str
    name: str
    short_names: tuple = ()  # the `emoji` package's aliases ("car", "red car"): templates apply to them
    keywords: tuple = ()  # CLDR tags of emojibase-data ("driving", "vehicle")
    shortcodes: tuple = ()  # emojibase-data's own shortcodes as words ("flag jp", "person kneeling right")
    names: dict = field(default_factory=dict)  # language -> name


def load_emojibase() -> dict:
    """{sequence_key: (tags, shortcodes)} from emojibase-data's English data; {} when it is not installed.

    Skin-tone variants carry no tags of their own there and take their base emoji's.
    """
    if not (EMOJIBASE / "data.json").is_file():
        return {}
    shortcodes = json.loads((EMOJIBASE / "shortcodes" / "emojibase.json").read_text(encoding="utf-8"))
    table = {}
    for entry in json.loads((EMOJIBASE / "data.json").read_text(encoding="utf-8")):
        tags = tuple(entry.get("tags") or ())
        for item in [entry, *entry.get("skins", ())]:
            codes = shortcodes.get(item["hexcode"], ())
            codes = (codes,) if isinstance(codes, str) else tuple(codes)
            table[sequence_key(item["emoji"])] = (tags, codes)
    return table


def emoji_words(emoji_str: str, name: str, emojibase: dict | None = None) -> EmojiWords:
    """Everything `caption_list` needs about one emoji, from the `emoji` package and emojibase-data."""
    import emoji  # only the builder needs it

    emoji.config.load_language(list(LANGUAGES))
    data = emoji.EMOJI_DATA.get(emoji_str, {})
    tags, codes = (emojibase or {}).get(sequence_key(emoji_str), ((), ()))
    not_name = {name.casefold()}
    # GitHub's legacy codes for the second picture of an animal ("dog2", "cat2") say nothing a person types.
    short = _unique([_words(a) for a in data.get("alias", ()) if not re.fullmatch(r":[a-z]+2:", a)], not_name)
    keywords = _unique([_words(t) for t in tags], not_name | {s.casefold() for s in short})
    seen = not_name | {s.casefold() for s in (*short, *keywords)}
    shortcodes = _unique([_words(c) for c in codes], seen)
    names = {lang: _words(data[lang]) for lang in LANGUAGES if data.get(lang)}
    return EmojiWords(emoji_str, name, tuple(short), tuple(keywords), tuple(shortcodes), names)


def _unique(items, skip=frozenset()) -> list:
    """`items` without blanks, repeats (case-insensitive) or anything in `skip`, in order."""
    seen, out = set(skip), []
    for item in items:
        if item and item.casefold() not in seen:
            seen.add(item.casefold())
            out.append(item)
    return out


def phrase(name: str) -> str:
    """A CLDR name as words in a sentence: "flag: Japan" -> "flag of Japan", "cook: dark skin tone" -> "cook, dark ..."."""
    if name.startswith("flag: "):
        return "flag of " + name[len("flag: ") :]
    return name.replace(": ", ", ")


def article(x: str) -> str:
    """ "a", "an", or "" before a plural ("sunglasses", "stars"; a guess from the last letters)."""
    if re.search(r"[^su]s$", x):
        return ""
    return "an" if x[:1].lower() in "aeiou" else "a"


def fill(template: str, x: str) -> str:
    """One template with its article: ("a picture of {a} {x}", "owl") -> "a picture of an owl"."""
    return " ".join(template.format(a=article(x), x=x).split())


def style_captions(x: str, style: Style) -> list:
    """The style in words, alone and after `x`: ["line art", "owl, line art", ...]."""
    return [*style.words, *(f"{x}, {w}" for w in style.words)]


def caption_list(words: EmojiWords, style: Style | None = None) -> list:
    """All captions of one image of `words.emoji` drawn in `style`; the CLDR name first."""
    captions = [words.name, *words.short_names, *words.keywords, *words.shortcodes]
    if style is not None:
        captions += style_captions(words.name, style)
    for x in (phrase(words.name), *words.short_names):
        captions += [fill(t, x) for t in TEMPLATES]
    captions += [words.names[lang] for lang in LANGUAGES if lang in words.names]
    return list(dict.fromkeys(captions))


def all_captions(caption_lists) -> list:
    """The sorted set of every caption string (e.g. to train the tokenizer on)."""
    return sorted({c for captions in caption_lists for c in captions})


# ---- search (the app's suggestions) ----


def normalise(text: str) -> str:
    """Case-folded, accents off, spaces collapsed: "Corazón  Rojo" -> "corazon rojo" (kana marks stay)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    kept = "".join(c for c in decomposed if not (unicodedata.combining(c) and ord(c) < 0x3000))
    return " ".join(unicodedata.normalize("NFC", kept).split())


class CaptionIndex:
    """Every caption string, searchable by what a person starts typing, in any language."""

    def __init__(self, captions):
        self.captions = sorted(set(captions), key=lambda c: (len(c), c))
        self.keys = [normalise(c) for c in self.captions]
        # One string of all keys, so that a search is one C-speed regex scan; starts[i] is where key i begins.
        self.joined = "\n".join(self.keys)
        self.starts = list(itertools.accumulate((len(k) + 1 for k in self.keys[:-1]), initial=0))

    def __len__(self) -> int:
        return len(self.captions)

    def search(self, query: str, k: int = 10) -> list:
        """Up to `k` captions: exact matches first, then those starting with the query, then a word starting
        with it, then containing it (queries of three letters or more); shorter first within each."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        q = normalise(query)
        if not q:
            return []
        # One or two letters match inside nearly every caption: then only at the start of a word.
        pattern = re.escape(q) if len(q) > 2 else r"(?:^|(?<=[\n ]))" + re.escape(q)
        hits = sorted({bisect.bisect_right(self.starts, m.start()) - 1 for m in re.finditer(pattern, self.joined)})
        ranked = [[], [], [], []]
        for i in hits:  # in index order: shorter first
            key = self.keys[i]
            rank = 0 if key == q else 1 if key.startswith(q) else 2 if (" " + q) in key else 3
            ranked[rank].append(self.captions[i])
        return [c for group in ranked for c in group][:k]


def search_captions(query: str, captions, k: int = 10) -> list:
    """`CaptionIndex(captions).search(query, k)`, for a one-off search (build the index once to search often)."""
    index = captions if isinstance(captions, CaptionIndex) else CaptionIndex(captions)
    return index.search(query, k)
