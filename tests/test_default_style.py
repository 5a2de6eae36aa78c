"""Tests for txt2img.default_style: a colour style added to prompts that name none, one per image."""

import pytest
import torch
from transformers import CLIPTextModel
from txt2img_fixtures import tiny_text_encoder, tiny_tokenizer, tiny_unet

from txt2img.clip import TextEncoder
from txt2img.default_style import COLOUR_STYLES, image_prompts, names_style, with_colour_style
from txt2img.pipeline import TextToImagePipeline
from uncond.sources import STYLES

SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}


def test_style_words_are_found_as_words():
    for prompt in ("owl, line art", "cat 3D", "a heart in Noto Style", "sun, black and white line art", "monochrome"):
        assert names_style(prompt), prompt
    for prompt in ("blue heart", "3Dprinter", "line artist", "coffee", ""):
        assert not names_style(prompt), prompt


def test_colour_styles_are_the_colour_sets():
    assert set(COLOUR_STYLES) <= set(STYLES)
    assert "openmoji-line" not in COLOUR_STYLES and "fluent-high-contrast" not in COLOUR_STYLES


def test_each_image_gets_the_next_colour_style():
    assert with_colour_style("blue heart", 0) == ("blue heart, noto style", "noto")
    assert with_colour_style("blue heart", 6) == ("blue heart, twemoji style", "twemoji")
    assert with_colour_style("owl, line art", 0) == ("owl, line art", None)
    assert with_colour_style(" ", 0) == (" ", None)
    rows, added = image_prompts(["a", "b, 3D"], 2, True)
    assert rows == ["a, noto style", "a, twemoji style", "b, 3D", "b, 3D"]
    assert added == ["noto", "twemoji", None, None]
    assert image_prompts(["a"], 2, False) == (["a", "a"], [None, None])


def test_a_style_that_would_be_cut_is_not_added():
    rows, added = image_prompts(["a", "b"], 1, True, too_long=lambda rows: [r.startswith("b") for r in rows])
    assert rows == ["a, noto style", "b"] and added == ["noto", None]


@pytest.fixture(scope="module")
def pipe():
    """The tiny pipeline with a text tower of 40 positions, room for the style words (one token per letter)."""
    encoder = tiny_text_encoder()
    config = encoder.text_model.config
    config.max_position_embeddings = 40
    torch.manual_seed(0)
    encoder = TextEncoder(tiny_tokenizer(), CLIPTextModel(config))
    encoder.tokenizer.model_max_length = 40
    return TextToImagePipeline(tiny_unet(), encoder, SCHEDULE)


def test_the_pipeline_adds_and_records_the_style(pipe, monkeypatch):
    encoded = []
    encode = pipe.text_encoder.encode
    monkeypatch.setattr(pipe.text_encoder, "encode", lambda prompts: encoded.append(list(prompts)) or encode(prompts))
    result = pipe("sun", num_images=2, num_inference_steps=1, guidance_scale=1.0)
    assert encoded[-1] == ["sun, noto style", "sun, twemoji style"]
    assert result.settings["added_style"] == ["noto", "twemoji"] and result.settings["prompt"] == "sun"
    for kwargs in (dict(prompt="sun, line art"), dict(prompt="sun", add_style=False)):
        result = pipe(num_images=2, num_inference_steps=1, guidance_scale=1.0, **kwargs)
        assert encoded[-1] == [kwargs["prompt"]] and "added_style" not in result.settings
    with pytest.raises(ValueError, match="add_style"):
        pipe("sun", add_style="yes", num_inference_steps=1)
