"""Tests for uncond.data: emoji rendering and captions, imagefolder layout, the in-memory data set."""

import json
import os

import pytest
import torch
from PIL import Image, ImageDraw

from uncond import data
from uncond.data import (
    DEFAULT_FONT,
    SKIN_TONES,
    STYLES,
    ImageCaptionDataset,
    build_emoji,
    cldr_name,
    glyph_problem,
    main,
    repeat_factors,
    variant_base,
)
from uncond.sources import missing_reason

needs_font = pytest.mark.skipif(
    not os.path.isfile(DEFAULT_FONT), reason=f"{DEFAULT_FONT} missing: apt-get install fonts-noto-color-emoji"
)

SOME = ["red heart", "cat face", "waving hand: medium skin tone", "flag: Japan", "\U0001f469\U0001f3fd\u200d\U0001f680"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("emoji")
    stats = build_emoji(out, size=32, only=SOME)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    return out, stats, rows


def pixels(path):
    image = Image.open(path).convert("RGB")
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(32, 32, 3).float()  # (H, W, 3)


@pytest.mark.parametrize(
    "emoji_str, en, want",
    [
        ("\u2764\ufe0f", ":red_heart:", "red heart"),
        ("\U0001f44b\U0001f3fd", ":waving_hand_medium_skin_tone:", "waving hand: medium skin tone"),
        (
            "\U0001f469\U0001f3fd\u200d\U0001f680",
            ":woman_astronaut_medium_skin_tone:",
            "woman astronaut: medium skin tone",
        ),
        ("\U0001f1ef\U0001f1f5", ":Japan:", "flag: Japan"),
        ("\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", ":Scotland:", "flag: Scotland"),
        ("#\ufe0f\u20e3", ":keycap_#:", "keycap: #"),
        ("\U0001f468\U0001f3fb\u200d\U0001f9b0", ":man_light_skin_tone_red_hair:", "man: light skin tone, red hair"),
        ("\U0001f9d1\U0001f3ff\u200d\U0001f9b2", ":person_dark_skin_tone_bald:", "person: dark skin tone, bald"),
        ("\U0001f9d4", ":person_beard:", "person: beard"),
        (
            "\U0001faf1\U0001f3fb\u200d\U0001faf2\U0001f3ff",
            ":handshake_light_skin_tone_dark_skin_tone:",
            "handshake: light skin tone, dark skin tone",
        ),
        ("\U0001f468\u200d\U0001f469\u200d\U0001f466", ":family_man_woman_boy:", "family: man, woman, boy"),
        (
            "\U0001f468\U0001f3fb\u200d\u2764\ufe0f\u200d\U0001f48b\u200d\U0001f468\U0001f3fc",
            ":kiss_man_man_light_skin_tone_medium-light_skin_tone:",
            "kiss: man, man, light skin tone, medium-light skin tone",
        ),
        ("\U0001f201", ":Japanese_here_button:", "Japanese \u201chere\u201d button"),
        ("\U0001f197", ":OK_button:", "OK button"),
        ("\U0001f3ef", ":Japanese_castle:", "Japanese castle"),
    ],
)
def test_cldr_names(emoji_str, en, want):
    assert cldr_name(emoji_str, en) == want


def test_emoji_table_has_the_named_examples():
    captions = {caption for _, caption in data.emoji_table()}
    assert {"red heart", "cat face", "woman astronaut: medium skin tone", "flag: Japan"} <= captions
    assert len(captions) > 3000


@needs_font
def test_build_emoji_draws_real_glyphs(built):
    out, stats, rows = built
    assert stats["rendered"] == len(SOME) and stats["skipped"] == 0
    by_text = {row["text"]: out / row["file_name"] for row in rows}
    assert set(by_text) == {
        "red heart",
        "cat face",
        "waving hand: medium skin tone",
        "flag: Japan",
        "woman astronaut: medium skin tone",
    }
    for path in by_text.values():
        x = pixels(path)
        assert Image.open(path).size == (32, 32)
        assert x.std() > 40, f"{path.name} looks blank"
        assert (x[0, 0] > 250).all() and (x[-1, -1] > 250).all(), "corners are the white margin"
    centre = pixels(by_text["red heart"])[12:20, 12:20].mean((0, 1))  # (3,) mean RGB of the middle
    assert centre[0] > 180 and centre[1] < 90 and centre[2] < 90, f"red heart centre is not red: {centre}"


@needs_font
def test_metadata_is_imagefolder_layout(built):
    out, _, rows = built
    for row in rows:
        assert set(row) >= {"file_name", "text"} and (out / row["file_name"]).is_file()
    assert sorted(p.name for p in out.glob("*.png")) == sorted(row["file_name"] for row in rows)
    note = (out / "LICENSE").read_text(encoding="utf-8") + (out / "README.md").read_text(encoding="utf-8")
    assert "Noto Color Emoji" in note and "Open Font License" in note


@needs_font
def test_undrawable_glyphs_are_skipped_and_counted(tmp_path, monkeypatch):
    table = [("\U0001f600", "grinning face"), ("\U0010fffd", "private use"), ("\U0001f600\U0001f431", "two glyphs")]
    monkeypatch.setattr(data, "emoji_table", lambda: table)
    stats = build_emoji(tmp_path / "out", size=16)
    assert (stats["rendered"], stats["skipped"]) == (1, 2)
    assert stats["skipped_names"] == ["private use", "two glyphs"]
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


def test_glyph_problem_detects_blank_notdef_and_split():
    blank = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert glyph_problem(blank, 100, 100) == "blank"
    assert glyph_problem(Image.new("RGBA", (0, 0)), 100, 100) == "blank"
    box = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    ImageDraw.Draw(box).rectangle((2, 2, 17, 17), outline=(0, 0, 0, 255), width=2)
    assert glyph_problem(box, 100, 100, notdef=box.copy()) == "notdef"
    red = Image.new("RGBA", (20, 20), (255, 0, 0, 255))
    assert glyph_problem(red, 300, 100) == "split"
    assert glyph_problem(red, 100, 100, notdef=box) is None


@needs_font
def test_cli_and_rebuild_replace_old_images(tmp_path, capsys):
    out = tmp_path / "emoji"
    main(["build-emoji", "--size", "16", "--out", str(out), "--limit", "3"])
    assert "rendered 3, skipped 0" in capsys.readouterr().out
    main(["build-emoji", "--size", "16", "--out", str(out), "--only", "red heart,cat face"])
    assert "rendered 2" in capsys.readouterr().out
    assert len(list(out.glob("*.png"))) == 2


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"size": 4}, "size"),
        ({"size": 1024}, "size"),
        ({"size": "64"}, "size"),
        ({"font_path": "/no/such/font.ttf"}, "font_path"),
        ({"limit": 0}, "limit"),
        ({"only": "red heart,no such emoji"}, "only"),
    ],
)
def test_build_emoji_bad_arguments(tmp_path, kwargs, word):
    kwargs = {"font_path": __file__, **kwargs}  # arguments are checked before the font is loaded
    with pytest.raises(ValueError, match=word):
        build_emoji(tmp_path / "out", **kwargs)


@needs_font
def test_build_emoji_refuses_a_foreign_nonempty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="out_dir"):
        build_emoji(tmp_path, size=16, limit=1)


@pytest.fixture
def folder(tmp_path):
    """Four 24x24 images: left half coloured, right half white, one with transparency."""
    rows = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)]):
        image = Image.new("RGBA", (24, 24), (255, 255, 255, 0 if i == 3 else 255))
        ImageDraw.Draw(image).rectangle((0, 0, 11, 23), fill=colour + (255,))
        image.save(tmp_path / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"caption {i}"})
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_dataset_shapes_range_and_captions(folder):
    ds = ImageCaptionDataset(str(folder))
    assert len(ds) == 4 and ds.images.shape == (4, 3, 24, 24) and ds.images.dtype == torch.uint8
    assert ds.captions == [f"caption {i}" for i in range(4)]
    item = ds[0]
    assert item["text"] == "caption 0" and item["index"] == 0
    x = item["pixel_values"]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert torch.equal(x[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))  # red, left
    assert torch.equal(ds[3]["pixel_values"][:, 0, -1], torch.ones(3))  # transparent → white


def test_dataset_resize_channels_and_no_flip_of_its_own(folder):
    ds = ImageCaptionDataset(str(folder), image_size=8, channels=1)
    assert ds.images.shape == (4, 1, 8, 8) and ds[1]["pixel_values"].shape == (1, 8, 8)
    # the one random flip is training's (seeded by step); items come back as stored
    assert {ImageCaptionDataset(str(folder))[0]["pixel_values"][1, 0, 0].item() for _ in range(10)} == {-1.0}


def test_dataset_without_metadata_has_empty_captions(folder):
    (folder / "metadata.jsonl").unlink()
    ds = ImageCaptionDataset(str(folder))
    assert len(ds) == 4 and ds.captions == [""] * 4


def test_dataset_bad_arguments(folder, tmp_path):
    with pytest.raises(ValueError, match="channels"):
        ImageCaptionDataset(str(folder), channels=2)
    with pytest.raises(ValueError, match="image_size"):
        ImageCaptionDataset(str(folder), image_size=0)
    with pytest.raises(ValueError, match="path_or_name"):
        ImageCaptionDataset(str(tmp_path / "no_such_folder"))
    Image.new("RGB", (10, 12)).save(folder / "odd.png")
    (folder / "metadata.jsonl").unlink()
    with pytest.raises(ValueError, match="image_size"):
        ImageCaptionDataset(str(folder))


def test_without_drops_the_named_captions_only(tmp_path):
    from PIL import Image

    from uncond.data import ImageCaptionDataset

    with open(tmp_path / "metadata.jsonl", "w") as f:
        for i, colour in enumerate(["red", "blue", "green", "red"]):
            Image.new("RGB", (8, 8), colour).save(tmp_path / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "text": colour}) + "\n")
    dataset = ImageCaptionDataset(str(tmp_path))
    subset = dataset.without(["red"])
    assert subset.captions == ["blue", "green"] and len(subset) == 2
    assert subset[0]["pixel_values"][2].mean() > 0.9  # blue stays blue
    assert len(dataset) == 4  # the original is untouched


def test_variant_base_groups_skin_tones_hair_and_members_but_not_flags():
    assert variant_base("waving hand: medium skin tone") == "waving hand"
    assert variant_base("man: light skin tone, red hair") == "man"
    assert variant_base("kiss: woman, man, dark skin tone, light skin tone") == "kiss"
    assert variant_base("flag: Japan") == "flag: Japan"
    assert variant_base("keycap: 1") == "keycap: 1"
    assert variant_base("pizza") == "pizza"


def test_repeat_factors_follow_the_square_root_of_group_sizes():
    captions = (
        ["kiss"]
        + [f"kiss: {tone}" for tone in SKIN_TONES] * 3
        + ["waving hand", "waving hand: dark skin tone"]
        + ["pizza"]
    )
    # groups: kiss 16, waving hand 2, pizza 1 -> round(sqrt(16 / n)): 1, 3 (2.83), 4
    assert repeat_factors(captions) == [1] * 16 + [3, 3] + [4]
    assert repeat_factors([]) == []


# ---- several styles and sizes ----

ALL_INSTALLED = all(missing_reason(style) is None for style in STYLES.values())
needs_all_sets = pytest.mark.skipif(
    not ALL_INSTALLED,
    reason="emoji sets missing: npm ci --prefix uncond/sources, apt-get install fonts-noto-color-emoji",
)
THREE = ["automobile", "red heart", "waving hand: medium skin tone"]


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    if not ALL_INSTALLED:
        pytest.skip("emoji sets missing: npm ci --prefix uncond/sources")
    out = tmp_path_factory.mktemp("multi")
    stats = build_emoji(out, sizes=[32, 40], styles="all", only=THREE)
    rows = {
        s: [json.loads(line) for line in (out / str(s) / "metadata.jsonl").read_text("utf-8").splitlines()]
        for s in (32, 40)
    }
    return out, stats, rows


@needs_all_sets
def test_multi_build_counts_every_style_and_skips_what_a_set_lacks(multi):
    out, stats, rows = multi
    # Fluent high contrast has no skin tones; OpenMoji's line art would repeat the base emoji for them
    assert stats["counts"] == {name: 3 for name in STYLES} | {"fluent-high-contrast": 2, "openmoji-line": 2}
    assert stats["skipped_by_style"]["fluent-high-contrast"] == 1 and stats["skipped"] == 2
    assert stats["rendered"] == 19 and set(stats["seconds_by_size"]) == {32, 40}
    assert len(rows[32]) == len(rows[40]) == 19
    assert [r["file_name"] for r in rows[32]] == [r["file_name"] for r in rows[40]]
    assert (out / "LICENSE").is_file() and (out / "32" / "README.md").is_file()


@needs_all_sets
def test_multi_build_records_style_licence_and_captions(multi):
    out, _, rows = multi
    for row in rows[32]:
        style = STYLES[row["style"]]
        assert row["file_name"].startswith(row["style"] + "/") and (out / "32" / row["file_name"]).is_file()
        assert (row["license"], row["attribution"]) == (style.license, style.attribution)
        assert row["captions"][0] == row["text"] in THREE and row["emoji"]
        assert style.words[0] in row["captions"] and f"{row['text']}, {style.words[0]}" in row["captions"]
    car = next(r for r in rows[32] if r["text"] == "automobile" and r["style"] == "openmoji-line")
    assert {"car", "vehicle", "line art", "a picture of a red car", "coche", "自動車"} <= set(car["captions"])
    assert "vehicle" in car["keywords"]
    note = (out / "32" / "LICENSE").read_text("utf-8")
    for style in STYLES.values():
        assert style.name in note and style.license in note and style.attribution in note
    assert "Permission is hereby granted" in note and "ShareAlike" in note and "CLDR" in note


@needs_all_sets
def test_multi_build_frames_every_style_the_same_way(multi):
    out, _, rows = multi
    for row in rows[32]:
        x = pixels(out / "32" / row["file_name"])
        assert (x[0] > 245).all() and (x[-1] > 245).all() and (x[:, 0] > 245).all() and (x[:, -1] > 245).all()
        ink = (x.min(-1).values < 200).nonzero().float()
        centre = (ink.min(0).values + ink.max(0).values) / 2
        assert (centre - 15.5).abs().max() <= 2.5, row["file_name"]
        assert Image.open(out / "40" / row["file_name"]).size == (40, 40)


@needs_all_sets
def test_dataset_reads_caption_lists_styles_and_emojis(multi):
    out, _, rows = multi
    ds = ImageCaptionDataset(str(out / "32"))
    assert len(ds) == 19 and ds.images.shape == (19, 3, 32, 32)
    assert ds.captions == [r["text"] for r in rows[32]] and ds.caption_lists == [r["captions"] for r in rows[32]]
    assert ds.styles == [r["style"] for r in rows[32]] and ds.emojis == [r["emoji"] for r in rows[32]]
    assert data.read_caption_lists(out / "32") == ds.caption_lists
    sub = ds.without(["red heart"])
    assert len(sub) == 12 and "red heart" not in sub.captions and len(sub.caption_lists) == len(sub.styles) == 12


@needs_font
def test_workers_give_the_same_files(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    build_emoji(one, sizes=[16], limit=6)
    build_emoji(two, sizes=[16], limit=6, workers=2)
    assert (one / "16" / "metadata.jsonl").read_bytes() == (two / "16" / "metadata.jsonl").read_bytes()
    for png in (one / "16").glob("*.png"):
        assert png.read_bytes() == (two / "16" / png.name).read_bytes()


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"styles": "wingdings"}, "styles"),
        ({"styles": "all,noto"}, "styles"),
        ({"sizes": [32, 4]}, "sizes"),
        ({"sizes": []}, "sizes"),
        ({"workers": 0}, "workers"),
    ],
)
def test_multi_build_bad_arguments(tmp_path, kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_emoji(tmp_path / "out", **kwargs)


def test_old_single_caption_folder_gets_one_caption_list_each(folder):
    ds = ImageCaptionDataset(str(folder))
    assert ds.caption_lists == [[f"caption {i}"] for i in range(4)] and ds.emojis == [""] * 4


@needs_font
def test_recaption_rewrites_captions_without_rendering(tmp_path, capsys):
    out = tmp_path / "emoji"
    build_emoji(out, sizes=[16], only=["automobile", "red heart"])
    meta = out / "16" / "metadata.jsonl"
    png = out / "16" / "emoji_u1f697.png"
    before, stamp = meta.read_text("utf-8"), png.stat().st_mtime_ns
    rows = [json.loads(line) for line in before.splitlines()]
    for row in rows:
        row["captions"], row["keywords"] = [row["text"]], []
    meta.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    main(["recaption", str(out)])
    assert "rewrote the captions of 2 images" in capsys.readouterr().out
    assert meta.read_text("utf-8") == before and png.stat().st_mtime_ns == stamp
    (out / "16" / "metadata.jsonl").write_text('{"file_name": "x.png", "text": "x"}\n')
    with pytest.raises(ValueError, match="folder"):
        data.recaption(out)
