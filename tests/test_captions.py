"""Tests for uncond.captions: the words of an emoji, its caption list, and the caption search."""

import pytest

from uncond import captions as cap
from uncond.captions import (
    EMOJIBASE,
    CaptionIndex,
    EmojiWords,
    all_captions,
    article,
    caption_list,
    emoji_words,
    fill,
    load_emojibase,
    normalise,
    phrase,
    search_captions,
)
from uncond.sources import STYLES

needs_emojibase = pytest.mark.skipif(
    not (EMOJIBASE / "data.json").is_file(), reason="emojibase-data missing: npm ci --prefix uncond/sources"
)
CAR = "\U0001f697"
# What emojibase-data says of the automobile (its key is the code points without U+FE0F).
EMOJIBASE_CAR = {"1f697": (("car", "driving", "vehicle"), ("red_car",))}


def test_emoji_words_of_the_car():
    words = emoji_words(CAR, "automobile", EMOJIBASE_CAR)
    assert words.name == "automobile"
    assert words.short_names == ("car", "red car")  # the emoji package's :car: :red_car:, colons and _ gone
    assert words.keywords == ("driving", "vehicle")  # "car" is already a short name
    assert words.shortcodes == ()  # emojibase's red_car is already there
    assert words.names["es"] == "coche" and words.names["ja"] == "自動車" and words.names["fr"] == "voiture"
    assert set(words.names) == set(cap.LANGUAGES)


def test_caption_list_holds_name_keywords_styles_templates_and_languages():
    words = emoji_words(CAR, "automobile", EMOJIBASE_CAR)
    line = caption_list(words, STYLES["openmoji-line"])
    assert line[0] == "automobile"
    for want in (
        "car",
        "red car",
        "vehicle",
        "line art",
        "automobile, line art",
        "an automobile",
        "an emoji of a car",
        "a picture of a red car",
        "red car emoji",
        "coche",
        "自動車",
        "автомобиль",
    ):
        assert want in line, want
    assert len(line) == len(set(line)) == 36
    assert caption_list(words, STYLES["openmoji-line"]) == line  # deterministic
    three_d = caption_list(words, STYLES["fluent-3d"])
    assert "3D" in three_d and "automobile, 3D" in three_d and "line art" not in three_d
    assert "noto style" not in caption_list(words)  # no style: no style words


def test_heart_in_spanish_and_japanese():
    words = emoji_words("\u2764\ufe0f", "red heart", {})
    captions = caption_list(words, STYLES["twemoji"])
    assert "corazón rojo" in captions and "赤いハート" in captions and "red heart, twemoji style" in captions
    assert "heart" in captions  # the :heart: alias


def test_articles_phrases_and_plurals():
    assert article("owl") == "an" and article("cat") == "a" and article("sunglasses") == ""
    assert article("bus") == "a" and article("glass") == "a"
    assert fill("a picture of {a} {x}", "owl") == "a picture of an owl"
    assert fill("{a} {x}", "stars") == "stars" and fill("an emoji of {a} {x}", "stars") == "an emoji of stars"
    assert phrase("flag: Japan") == "flag of Japan" and phrase("cook: dark skin tone") == "cook, dark skin tone"
    flag = caption_list(EmojiWords("\U0001f1ef\U0001f1f5", "flag: Japan"))
    assert "a picture of a flag of Japan" in flag


@needs_emojibase
def test_emojibase_gives_tags_to_skin_tone_variants():
    table = load_emojibase()
    assert len(table) > 3000
    tags, codes = table["1f697"]
    assert {"car", "driving", "vehicle"} <= set(tags)
    assert table["1f44b-1f3fd"][0] == table["1f44b"][0] and "wave" in table["1f44b"][0]


def test_all_captions_is_the_sorted_set():
    assert all_captions([["b", "a"], ["a", "c"]]) == ["a", "b", "c"]


def test_normalise_folds_case_accents_and_spaces_but_keeps_kana():
    assert normalise("  Corazón   ROJO ") == "corazon rojo"
    assert normalise("ハート") == "ハート" and normalise("ガ") == "ガ"  # the voicing mark stays


def test_search_ranks_exact_then_prefix_then_word_then_substring():
    index = CaptionIndex(["police car", "car", "cartwheel", "red car", "scar", "automobile", "corazón rojo"])
    assert index.search("car", k=10) == ["car", "cartwheel", "red car", "police car", "scar"]
    assert index.search("CAR", k=2) == ["car", "cartwheel"]
    assert index.search("corazon") == ["corazón rojo"]
    assert index.search("   ") == [] and index.search("zebra") == []
    assert search_captions("auto", ["automobile", "auto"]) == ["auto", "automobile"]
    assert search_captions("auto", index) == ["automobile"]
    with pytest.raises(ValueError, match="k"):
        index.search("car", k=0)


def test_search_over_the_captions_of_several_emoji():
    lists = [caption_list(emoji_words(e, n, EMOJIBASE_CAR)) for e, n in ((CAR, "automobile"), ("\U0001f695", "taxi"))]
    index = CaptionIndex(all_captions(lists))
    assert index.search("coche")[0] == "coche"
    assert "a picture of a red car" in index.search("a picture of", k=50)
    assert index.search("タクシー")  # Japanese for taxi


def test_legacy_second_picture_codes_are_not_short_names():
    words = emoji_words("\U0001f415", "dog", {})
    assert "dog2" not in words.short_names and "dog2" not in caption_list(words)


def test_search_finds_words_at_the_ends_of_the_index():
    index = CaptionIndex(["zz top", "a", "bb"])  # first, middle and last key of the joined string
    assert index.search("a") == ["a"] and index.search("top") == ["zz top"] and index.search("b") == ["bb"]


def test_short_queries_match_word_starts_only():
    index = CaptionIndex(["bat", "acrobat", "at sign", "hat", "flat at"])
    assert index.search("at") == ["at sign", "flat at"]
    assert index.search("bat") == ["bat", "acrobat"]
