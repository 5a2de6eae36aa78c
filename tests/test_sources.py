"""Tests for uncond.sources: style names, code-point keys, the SVG/Iconify/raster sources and the common framing."""

import json

import pytest
import torch
from PIL import Image

from uncond import sources
from uncond.sources import (
    MARGIN,
    STYLES,
    FileSource,
    IconifySource,
    file_key,
    missing_reason,
    open_source,
    parse_styles,
    sequence_key,
    square_on_white,
)

RED_SQUARE = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36"><rect x="9" y="9" width="18" height="18" fill="#f00"/></svg>'
# Three emoji every set draws: a plain one, one with U+FE0F, and a ZWJ sequence with a skin tone.
THREE = [
    ("\U0001f431", "cat face"),
    ("\u2764\ufe0f", "red heart"),
    ("\U0001f469\U0001f3fd\u200d\U0001f680", "woman astronaut: medium skin tone"),
]


def pixels(image):
    return torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8).view(
        image.height, image.width, 3
    )


def test_parse_styles_all_lists_and_unknown():
    assert parse_styles("all") == list(STYLES)
    assert parse_styles("noto, twemoji,noto") == ["noto", "twemoji"]
    assert parse_styles(["fluent-3d"]) == ["fluent-3d"]
    for bad in ("nope", "noto,wingdings", "", []):
        with pytest.raises(ValueError, match="styles"):
            parse_styles(bad)


def test_every_style_has_words_licence_and_attribution():
    assert len(STYLES) == 7
    for style in STYLES.values():
        assert style.words and style.attribution and style.url.startswith("https://")
        assert style.license in {"OFL-1.1", "CC-BY-4.0", "CC-BY-SA-4.0", "MIT"}
    assert "line art" in STYLES["openmoji-line"].words and "3D" in STYLES["fluent-3d"].words


@pytest.mark.parametrize(
    "emoji_str, key",
    [
        ("\U0001f44b\U0001f3fd", "1f44b-1f3fd"),
        ("\u2764\ufe0f", "2764"),
        ("1\ufe0f\u20e3", "31-20e3"),
        ("\u2764\ufe0f\u200d\U0001f525", "2764-200d-1f525"),
    ],
)
def test_sequence_key_drops_fe0f(emoji_str, key):
    assert sequence_key(emoji_str) == key


def test_file_key_matches_each_sets_spelling():
    # Twemoji, OpenMoji, Fluent 3D and Iconify spell the same keycap four ways.
    assert {file_key(s) for s in ("31-20e3", "0031-FE0F-20E3", "0031-fe0f-20e3", "0031-20e3")} == {"31-20e3"}
    assert file_key("readme") is None and file_key("1F600") == "1f600"


def test_file_source_matches_by_code_points_and_crops(tmp_path):
    (tmp_path / "2764-FE0F.svg").write_text(RED_SQUARE)
    (tmp_path / "notes.txt").write_text("not an emoji")
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(tmp_path / "1f600.png")  # blank: no picture
    source = FileSource(tmp_path)
    glyph = source.glyph("\u2764\ufe0f")
    assert glyph.mode == "RGBA" and glyph.size == (160, 160)  # 18/36 of the 320 px render, transparency cropped
    assert pixels(glyph)[80, 80].tolist() == [255, 0, 0]
    assert source.glyph("\U0001f600") is None and source.glyph("\U0001f431") is None


def test_iconify_source_resolves_chars_aliases_and_names(tmp_path):
    body = '<rect x="0" y="8" width="16" height="8" fill="#00f"/>'
    icons = {
        "icons": {"left-thing": {"body": body}},
        "aliases": {"right-thing": {"parent": "left-thing", "hFlip": True}},
        "width": 32,
        "height": 32,
    }
    (tmp_path / "icons.json").write_text(json.dumps(icons))
    (tmp_path / "chars.json").write_text(json.dumps({"0031-20e3": "left-thing"}))
    source = IconifySource(tmp_path)
    left = source.glyph("1\ufe0f\u20e3")
    assert left.size == (160, 80)  # half of 32 wide, a quarter high, at 320 px
    svg = source.svg("right-thing")
    assert 'viewBox="0 0 32 32"' in svg and "scale(-1 1)" in svg
    # chars.json misses mirrored aliases; the CLDR name finds them
    assert source.glyph("\U0001f449", "right thing") is not None
    assert source.glyph("\U0001f449") is None


def test_square_on_white_frames_any_glyph_the_same_way():
    for w, h in ((50, 50), (80, 40), (30, 90)):
        glyph = Image.new("RGBA", (w, h), (0, 0, 0, 255))
        x = pixels(square_on_white(glyph, 64)).float()  # (64, 64, 3)
        dark = (x.mean(-1) < 128).nonzero()
        rows, cols = dark[:, 0], dark[:, 1]
        border = round(64 * MARGIN)
        assert rows.min() >= border - 1 and cols.min() >= border - 1
        long_side = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
        assert abs(long_side - 64 * (1 - 2 * MARGIN)) <= 2  # the long side fills the frame
        assert abs((rows.min() + rows.max()) / 2 - 31.5) <= 1 and abs((cols.min() + cols.max()) / 2 - 31.5) <= 1


def test_missing_sets_are_reported_with_the_install_step(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "NODE_MODULES", tmp_path)
    assert "npm ci --prefix uncond/sources" in missing_reason(STYLES["twemoji"])
    with pytest.raises(ValueError, match="styles"):
        open_source(STYLES["twemoji"])


@pytest.mark.parametrize("name", list(STYLES))
def test_real_sets_draw_three_emoji_centred_on_white(name):
    style = STYLES[name]
    if missing_reason(style):
        pytest.skip(missing_reason(style))
    source = open_source(style)
    for emoji_str, caption in THREE:
        glyph = source.glyph(emoji_str, caption)
        if glyph is None:
            assert name == "fluent-high-contrast" and "skin tone" in caption  # it has no skin tones
            continue
        x = pixels(square_on_white(glyph, 32)).float()
        assert (x[0] > 245).all() and (x[-1] > 245).all() and (x[:, 0] > 245).all() and (x[:, -1] > 245).all()
        ink = (x.min(-1).values < 200).nonzero().float()
        assert len(ink) > 40, f"{name} {caption} is nearly blank"
        centre = (ink.min(0).values + ink.max(0).values) / 2
        assert (centre - 15.5).abs().max() <= 2.5, f"{name} {caption} off centre: {centre}"
