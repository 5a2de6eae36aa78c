"""Tests for uncond.splits: held-out (emoji, skin tone), (emoji, style), keywords and templates."""

import random
import zlib

import torch

from uncond.captions import SKIN_TONES, emoji_table
from uncond.dataset import ImageCaptionDataset
from uncond.splits import (
    HELD_OUT_TEMPLATES,
    held_out,
    held_out_indices,
    held_out_keywords,
    held_out_skin_tones,
    held_out_style_pairs,
    keyword_forms,
    skin_tone_pair,
    template_pattern,
    training_subset,
)

STYLES = ["noto", "twemoji", "openmoji", "fluent-3d"]


def fake_dataset(n_emoji=160, styles=STYLES):
    """An in-memory data set: emoji i in every style, plus five skin tones of a few hands; 2x2 images."""
    names = [f"thing {i}" for i in range(n_emoji)] + [f"hand {i}: {t}" for i in range(12) for t in SKIN_TONES]
    rows = [(name, style) for name in names for style in styles]
    ds = ImageCaptionDataset.__new__(ImageCaptionDataset)
    ds.images = torch.arange(len(rows), dtype=torch.int64).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).to(torch.uint8)
    ds.captions = [name for name, _ in rows]
    ds.styles = [style for _, style in rows]
    ds.emojis = [f"e{names.index(name)}" for name, _ in rows]
    ds.keyword_lists = [
        [f"word {chr(97 + names.index(name) // 26)}{chr(97 + names.index(name) % 26)}", "shared"] for name, _ in rows
    ]
    ds.short_name_lists = [[] for _ in rows]
    ds.caption_lists = [
        [name, *kw, f"a drawing of a {name}", f"a picture of a {name}", *(f"{k}, line art" for k in kw)]
        for (name, _), kw in zip(rows, ds.keyword_lists)
    ]
    return ds


def test_skin_tone_split_is_pinned():
    # the membership the shipped models were trained and evaluated with (it equalled txt2img.evaluate's before the
    # held-out split moved here): a change here would mix held-out pairs into training
    names = [name for _, name in emoji_table()]
    mine = held_out_skin_tones(names)
    assert len(mine) == 81 and zlib.crc32("\n".join(mine).encode()) == 1481636488
    assert all(name.rsplit(": ", 1)[1] in SKIN_TONES for name in mine)


def test_skin_tones_are_picked_over_the_names_noto_draws():
    ds = fake_dataset()
    noto = [c for c, s in zip(ds.captions, ds.styles) if s == "noto"]
    # emoji only the other sets draw (newer than the font) add names, but not held-out captions
    extra = [f"newer {i}: {t}" for i in range(40) for t in SKIN_TONES]
    ds.captions += extra
    ds.styles += ["twemoji"] * len(extra)
    assert held_out(ds)["skin_tone_captions"] == held_out_skin_tones(noto) != held_out_skin_tones(ds.captions)


def test_style_pairs_keep_each_emoji_and_style_elsewhere():
    ds = fake_dataset()
    pairs = held_out_style_pairs(ds.captions, ds.styles)
    assert 3 <= len(pairs) <= 25  # about one emoji in sixteen of 160
    assert len({name for name, _ in pairs}) == len(pairs)  # one style per emoji at most
    assert all(":" not in name for name, _ in pairs)  # skin-tone variants take no part
    assert held_out_style_pairs(list(reversed(ds.captions)), list(reversed(ds.styles))) == pairs  # order-free
    assert held_out_style_pairs(ds.captions, ds.styles, exclude=[pairs[0][0]]) == pairs[1:]
    # an emoji in only two styles never gives one up
    names = [f"thing {i}" for i in range(160) for _ in range(2)]
    assert held_out_style_pairs(names, ["noto", "twemoji"] * 160) == []


def test_training_subset_is_disjoint_from_every_held_out_part():
    ds = fake_dataset()
    split = held_out(ds)
    train = training_subset(ds, split)
    indices = held_out_indices(ds, split)
    assert split["skin_tone_captions"] and split["style_pairs"] and split["keywords"]
    assert len(train) == len(ds) - len(indices["skin_tone"]) - len(indices["style_pair"])
    assert not set(split["skin_tone_captions"]) & set(train.captions)
    trained_pairs = set(zip(train.captions, train.styles))
    assert not set(split["style_pairs"]) & trained_pairs
    for name, style in split["style_pairs"]:  # the emoji and the style are still seen elsewhere
        assert any(c == name for c, s in trained_pairs) and any(s == style for c, s in trained_pairs)
    for base_tone in split["skin_tone_captions"]:
        base, tone = base_tone.split(": ")
        assert any(c.startswith(base + ": ") for c in train.captions) and any(c.endswith(tone) for c in train.captions)
    everything = {c for captions in train.caption_lists for c in captions}
    assert not everything & set().union(*map(keyword_forms, split["keywords"]))
    assert not any(c.startswith("a drawing of") for c in everything)
    assert all(captions[0] == name for captions, name in zip(train.caption_lists, train.captions))
    assert len(ds.caption_lists) == len(ds.images)  # the original is untouched


def test_training_subset_keeps_images_and_rows_aligned():
    ds = fake_dataset()
    train = training_subset(ds)
    row_of = {(c, s): i for i, (c, s) in enumerate(zip(ds.captions, ds.styles))}
    for j in range(0, len(train), 37):
        i = row_of[(train.captions[j], train.styles[j])]
        assert torch.equal(train.images[j], ds.images[i]) and train.emojis[j] == ds.emojis[i]


def test_keywords_never_hold_out_a_name_and_forms_cover_templates():
    keywords = [["cat", "kitty", "pet", "AD", "11:00"], ["car", "vehicle"]] * 50
    held = held_out_keywords(keywords, ["cat", "automobile"], [["kitten"], ["car", "red car"]] * 50, every=1)
    assert held == ["kitty", "pet", "vehicle"]  # "cat" is a name, "car" a short name, "AD" and "11:00" no words
    forms = keyword_forms("kitty")
    assert {"kitty", "a kitty", "a picture of a kitty", "kitty, line art", "kitty, 3D"} <= forms


def test_template_pattern_matches_only_the_held_out_template():
    pattern = template_pattern()
    assert HELD_OUT_TEMPLATES == ("a drawing of {a} {x}",)
    assert pattern.fullmatch("a drawing of an owl") and pattern.fullmatch("a drawing of a red car")
    assert not pattern.fullmatch("a picture of an owl") and not pattern.fullmatch("drawing")


def test_old_single_caption_folders_split_too(tmp_path):
    from PIL import Image

    names = [f"cook: {t}" for t in SKIN_TONES] + [f"x{i}: {t}" for i in range(40) for t in SKIN_TONES]
    lines = []
    for i, name in enumerate(names):
        Image.new("RGB", (4, 4), "white").save(tmp_path / f"{i}.png")
        lines.append(f'{{"file_name": "{i}.png", "text": "{name}"}}\n')
    (tmp_path / "metadata.jsonl").write_text("".join(lines))
    ds = ImageCaptionDataset(str(tmp_path))
    assert ds.caption_lists == [[c] for c in ds.captions] and ds.styles == [""] * len(ds)
    split = held_out(ds)
    assert split["style_pairs"] == [] and split["keywords"] == []
    train = training_subset(ds)
    assert len(train) == len(ds) - len(split["skin_tone_captions"]) > 0


BASES = ["waving hand", "thumbs up", "ear", "nose", "baby", "farmer", "cook", "artist", "pilot", "judge"]


def emoji_captions(tones=SKIN_TONES):
    return [f"{base}: {tone}" for base in BASES for tone in tones] + ["rocket", "red heart"]


def test_held_out_pairs_are_fixed_and_each_part_stays_in_training():
    captions = emoji_captions()
    held_out = held_out_skin_tones(captions)
    assert held_out and len(held_out) <= len(BASES) // 2  # about one emoji in four
    assert held_out == held_out_skin_tones(random.Random(0).sample(captions, len(captions)))  # order does not matter
    assert held_out == held_out_skin_tones(captions + ["rocket", "pizza", "ninja: dark skin tone"])  # nor other emoji
    training = [c for c in captions if c not in held_out]
    for caption in held_out:
        base, tone = skin_tone_pair(caption)
        assert caption in captions
        assert (
            sum(skin_tone_pair(c) is not None and skin_tone_pair(c)[0] == base for c in training) == len(SKIN_TONES) - 1
        )
        assert any(c.endswith(": " + tone) for c in training)
    assert len({skin_tone_pair(c)[0] for c in held_out}) == len(held_out)  # one tone per emoji at most


def test_held_out_needs_three_tones_and_skips_mixed_tones():
    assert held_out_skin_tones(emoji_captions(tones=SKIN_TONES[:2]), every=1) == []
    assert len(held_out_skin_tones(emoji_captions(), every=1)) == len(BASES)
    assert skin_tone_pair("handshake: light skin tone, dark skin tone") is None
    assert skin_tone_pair("man: red hair") is None and skin_tone_pair("cook: dark skin tone") == (
        "cook",
        "dark skin tone",
    )
