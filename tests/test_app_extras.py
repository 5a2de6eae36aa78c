"""The generation tabs' extra controls through the handlers: variations, the Upscale stage and the history."""

import json

import gradio as gr
import numpy as np
import pytest
from PIL import Image
from test_upscale_pipeline import tiny_pipe

import app
from webapp.history import history_restorer, remember_and_show
from webapp.restore import TEXT_CONTROLS, UNCOND_CONTROLS

MODEL = app.MODELS.default_uncond


def run_unconditional(*args):
    return list(app.generate_unconditional(*args, progress=lambda *a, **k: None))


def pixels(gallery) -> np.ndarray:
    return np.stack([np.asarray(Image.open(path)) for path, _ in gallery])


def test_variation_strength_0_is_the_seed_and_1_the_variation_seed():
    plain = pixels(run_unconditional(MODEL, "DDIM", 3, 0.0, 2, 5)[-1][0])
    other = pixels(run_unconditional(MODEL, "DDIM", 3, 0.0, 2, 9)[-1][0])
    assert np.array_equal(pixels(run_unconditional(MODEL, "DDIM", 3, 0.0, 2, 5, 9, 0.0)[-1][0]), plain)
    assert np.array_equal(pixels(run_unconditional(MODEL, "DDIM", 3, 0.0, 2, 5, 9, 1.0)[-1][0]), other)
    between = run_unconditional(MODEL, "DDIM", 3, 0.0, 2, 5, 9, 0.3)[-1]
    assert not np.array_equal(pixels(between[0]), plain) and json.loads(between[1])["variation_seed"] == 9
    with pytest.raises(gr.Error, match="Variation strength must be a number from 0 to 1, got 1.5"):
        run_unconditional(MODEL, "DDIM", 3, 0.0, 1, 5, 9, 1.5)
    with pytest.raises(gr.Error, match="Variation seed must be a whole number"):
        run_unconditional(MODEL, "DDIM", 3, 0.0, 1, 5, -2, 0.5)


def test_without_an_upsampler_upscale_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(app.MODELS, "upscaler", None)
    monkeypatch.setattr(app, "MAX_NOISE_LEVEL", None)  # what the page reads at start without weights/upscale
    with pytest.raises(gr.Error, match="Upscale is not available"):
        run_unconditional(MODEL, "DDIM", 3, 0.0, 1, 5, 1, 0.0, True, 2, 0)
    assert len(run_unconditional(MODEL, "DDIM", 3, 0.0, 1, 5, 1, 0.0, False, 2, 0)[-1][0]) == 1


@pytest.fixture
def tiny_upscaler(monkeypatch):
    """An untrained 32 -> 128 px upsampler (tiny channels) in place of the shipped one (or of none)."""
    up = tiny_pipe(sample_size=128)  # max_noise_level 200, noise_level 20
    monkeypatch.setattr(app.MODELS, "upscaler", up)
    monkeypatch.setattr(app, "MAX_NOISE_LEVEL", 200)
    monkeypatch.setattr(app, "LIMITS", app.Limits(app.STYLE_NAMES, 200, app.LIMITS.models))
    return up


def test_upscale_on_gives_128_px_pictures_and_the_cascade_strip_off_gives_the_32_px_ones(tiny_upscaler):
    plain = run_unconditional(MODEL, "DDIM", 3, 0.0, 2, 5)[-1]
    off = run_unconditional(MODEL, "DDIM", 3, 0.0, 2, 5, 1, 0.0, False, 2, 20)[-1]
    assert np.array_equal(pixels(off[0]), pixels(plain[0])) and off[4] == []  # exactly today's results
    outputs = run_unconditional(MODEL, "DDIM", 3, 0.0, 2, 5, 1, 0.0, True, 2, 20)
    gallery, settings, seed, strip, cascade = outputs[-1]
    assert Image.open(gallery[0][0]).size == (128, 128) and Image.open(plain[0][0][0]).size == (128, 128)
    settings = json.loads(settings)
    assert settings["size"] == 128 and settings["base_size"] == 32 and settings["upscale_steps"] == 2
    assert [caption for _, caption in cascade] == [
        "base model's result (32 px)",
        "low-res input, noised (augmentation)",
        "upsampler x_t after step 1",
        "upsampler x_t after step 2",
    ]
    assert len(strip) == 2 * 3  # the base model's reverse process, as without upscaling
    # the noised input shown is the one the upsampler was given: the base result noised with the request's seed
    base = Image.open(cascade[0][0]).resize((32, 32), Image.NEAREST)
    assert np.array_equal(np.asarray(base), np.asarray(Image.open(plain[0][0][0]).resize((32, 32), Image.NEAREST)))
    with pytest.raises(gr.Error, match="Low-res noise level must be a whole number from 0 to 200, got 500"):
        run_unconditional(MODEL, "DDIM", 3, 0.0, 1, 5, 1, 0.0, True, 2, 500)
    with pytest.raises(gr.Error, match="Upscale steps must be a whole number from 1 to 100"):
        run_unconditional(MODEL, "DDIM", 3, 0.0, 1, 5, 1, 0.0, True, 0, 20)


def test_a_restored_upscaled_png_turns_upscale_back_on(tiny_upscaler):
    gallery = run_unconditional(MODEL, "DDIM", 3, 0.0, 1, 5, 1, 0.0, True, 2, 30)[-1][0]
    values = dict(zip(UNCOND_CONTROLS, app.restore_settings(gallery[0][0], UNCOND_CONTROLS), strict=True))
    assert (values["upscale"], values["upscale_steps"], values["noise_level"]) == (True, 2, 30)


class Click:
    """What Gradio hands a .select handler: the clicked item's index."""

    def __init__(self, index):
        self.index = index


def test_history_keeps_each_generation_and_a_click_restores_its_pictures_and_controls():
    history = []
    first = run_unconditional(MODEL, "Euler (diffusers)", 3, 0.0, 2, 41, 7, 0.2)[-1]
    history, shown = remember_and_show(history, first[0], first[1])
    second = run_unconditional(MODEL, "DDIM", 4, 1.0, 1, 42)[-1]
    history, shown = remember_and_show(history, second[0], second[1])
    assert [caption for _, caption in shown] == ["ddim 4, seed 42", "euler 3, seed 41"]  # newest first
    restored = history_restorer(UNCOND_CONTROLS, app.LIMITS)(history, Click(1))
    controls, (gallery, settings, seed) = restored[: len(UNCOND_CONTROLS)], restored[len(UNCOND_CONTROLS) :]
    assert controls == [MODEL, "Euler (diffusers)", 3, 0.0, 41, 7, 0.2, False, gr.skip(), gr.skip()]
    assert gallery == [path for path, _ in first[0]] and seed == 41 and json.loads(settings)["seed"] == 41
    with pytest.raises(gr.Error, match="History has no entry 5"):
        history_restorer(UNCOND_CONTROLS, app.LIMITS)(history, Click(5))


def test_history_restores_the_prompt_and_the_style_apart(monkeypatch):
    from tests.txt2img_fixtures import tiny_text_encoder, tiny_unet
    from txt2img.pipeline import TextToImagePipeline

    pipe = TextToImagePipeline(tiny_unet(), tiny_text_encoder(), {"beta_schedule": "squaredcos_cap_v2"}, name="tiny")
    monkeypatch.setattr(app.MODELS, "txt2img", pipe)
    monkeypatch.setattr(app, "STYLE_NAMES", ["any", "openmoji-line"])
    monkeypatch.setattr(app, "LIMITS", app.Limits(["any", "openmoji-line"], app.MAX_NOISE_LEVEL, {}))
    args = ("owl", "", 3.0, "DDIM", 2, 0.0, 1, 3, True, 0.9, 2.0, "openmoji-line")
    final = list(app.generate_text_to_image(*args, progress=lambda *a, **k: None))[-1]
    assert json.loads(final[1])["prompt"] == "owl, line art"  # what the model was given
    history, _ = remember_and_show([], final[0], final[1])
    controls = history_restorer(TEXT_CONTROLS, app.LIMITS)(history, Click(0))[: len(TEXT_CONTROLS)]
    assert controls[:11] == ["owl", "", 3.0, "openmoji-line", True, 0.9, 2.0, "DDIM", 2, 0.0, 3]
