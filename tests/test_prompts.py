"""Tests for uncond.prompts and the prompts file it wrote (assets/eval/natural_prompts.json)."""

import json
import os

import pytest

from uncond.captions import EMOJIBASE, SKIN_TONES, EmojiWords, emoji_table
from uncond.prompts import lexicon, natural_prompts, plain, tone_base
from uncond.splits import held_out_keywords

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = os.path.join(ROOT, "assets", "eval", "natural_prompts.json")
needs_emojibase = pytest.mark.skipif(
    not (EMOJIBASE / "data.json").is_file(), reason="emojibase-data missing: npm ci --prefix uncond/sources"
)


@pytest.fixture(scope="module")
def shipped():
    with open(PROMPTS, encoding="utf-8") as f:
        return json.load(f)


def test_the_file_has_200_natural_prompts_of_four_kinds(shipped):
    prompts = shipped["prompts"]
    assert len(prompts) >= 200 and len({p["prompt"] for p in prompts}) == len(prompts)
    kinds = {p["kind"] for p in prompts}
    assert kinds == {"keyword", "short name", "sentence", "language"}
    assert len({p["language"] for p in prompts}) >= 12
    assert sum(p["held_out"] == "keyword" for p in prompts) >= 30
    assert sum(p["held_out"] == "template" for p in prompts) >= 10


def test_no_prompt_is_an_english_name_and_every_answer_is_an_emoji(shipped):
    table = dict(emoji_table())  # emoji -> CLDR name
    names = {plain(n) for n in table.values()}
    for p in shipped["prompts"]:
        assert plain(p["prompt"]) not in names, p["prompt"]
        assert p["acceptable"] and len(p["acceptable"]) == len(p["emoji"])
        assert all(table[e] == n for e, n in zip(p["emoji"], p["acceptable"])), p["prompt"]
        if p["held_out"] == "template":
            assert p["prompt"].startswith("a drawing of")


@needs_emojibase
def test_held_out_marks_match_the_split(shipped):
    words = lexicon()
    held = set(
        held_out_keywords(
            [w.keywords for w in words], [w.name for w in words], [[*w.short_names, *w.shortcodes] for w in words]
        )
    )
    marked = {p["prompt"] for p in shipped["prompts"] if p["held_out"] == "keyword"}
    assert marked <= held
    plain_keywords = [p["prompt"] for p in shipped["prompts"] if p["kind"] == "keyword" and not p["held_out"]]
    assert not set(plain_keywords) & held


def test_keywords_accept_every_emoji_they_describe_and_its_skin_tones():
    words = [
        EmojiWords("\U0001f697", "automobile", ("red car",), ("vehicle", "driving")),
        EmojiWords("\U0001f695", "taxi", (), ("vehicle", "cab")),
        EmojiWords("\U0001f44b", "waving hand", (), ("wave",), names={"es": "mano saludando"}),
        *(EmojiWords(f"\U0001f44b{chr(0x1F3FB + i)}", f"waving hand: {t}") for i, t in enumerate(SKIN_TONES)),
    ]
    counts = {"keyword": 10, "held out": 0, "short name": 5, "sentence": 5, "language": 13}
    prompts = {p["prompt"]: p for p in natural_prompts(words, counts)}
    assert prompts["vehicle"]["acceptable"] == ["automobile", "taxi"]
    assert len(prompts["wave"]["acceptable"]) == 6 and prompts["wave"]["emoji"][0] == "\U0001f44b"
    assert prompts["red car"]["kind"] == "short name"
    assert prompts["mano saludando"]["language"] == "es"
    assert any(p.endswith("red car") and p != "red car" for p in prompts)  # a sentence around it
    assert natural_prompts(words, counts) == natural_prompts(list(reversed(words)), counts)  # order-free
    assert tone_base("man: light skin tone, red hair") == "man: red hair"
