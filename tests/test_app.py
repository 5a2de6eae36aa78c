"""The web app: handlers, streaming and stopping, bad input, and the served API end to end."""

import json
import os
import subprocess
import sys
import warnings

import gradio as gr
import httpx
import pytest
import torch
from PIL import Image

import app
from tests.serving import ROOT, free_port, wait_for_port
from uncond.checks import MAX_SEED, check_int
from uncond.sampling import Step
from webapp.controls import SCHEDULER_CHOICES
from webapp.restore import TEXT_CONTROLS, UNCOND_CONTROLS
from webapp.streaming import PREVIEW_EVERY, ResultFolders, stream_to_page


def run_unconditional(*args):
    """Drain the streaming handler; return every yielded output."""
    return list(app.generate_unconditional(*args, progress=lambda *a, **k: None))


def is_tick(output) -> bool:
    """A yield that changes nothing on the page (it only lets Stop take effect)."""
    return all(value == gr.skip() for value in output)


def test_unconditional_streams_previews_then_pngs_with_settings():
    outputs = run_unconditional(app.MODELS.default_uncond, "DDIM", 12, 0.0, 2, 123)
    previews, final = [o for o in outputs[:-1] if not is_tick(o)], outputs[-1]
    assert len(previews) == 2  # after steps 5 and 10
    gallery, settings, seed, strip, cascade = final
    assert seed == 123 and len(gallery) == 2
    assert len(strip) == 2 * app.STRIP_FRAMES  # x_t row and predicted x_0 row
    # files, never PIL images: Gradio writes those into its cache in place, racing requests that make the same picture
    assert all(isinstance(path, str) for path in previews[0][0]) and all(
        isinstance(path, str) for path, _ in strip + gallery
    )
    assert strip[0][1] == "x_t after step 1" and strip[app.STRIP_FRAMES - 1][1] == "x_t after step 12"
    image = Image.open(gallery[0][0])
    assert image.text["seed"] == "123" and image.text["scheduler"] == "ddim" and image.text["steps"] == "12"
    assert '"seed": 123' in settings


def test_same_seed_same_pixels_through_the_handler():
    first = run_unconditional(app.MODELS.default_uncond, "DDPM", 6, 0.0, 1, 9)[-1][0][0][0]
    again = run_unconditional(app.MODELS.default_uncond, "DDPM", 6, 0.0, 1, 9)[-1][0][0][0]
    assert Image.open(first).tobytes() == Image.open(again).tobytes()


@pytest.mark.parametrize(
    "args, message",
    [
        (("DDIM", 0, 0.0, 1, 0), "Steps must be a whole number from 1 to 1000, got 0"),
        (("DDIM", -3, 0.0, 1, 0), "Steps .* got -3"),
        (("DDIM", 2.5, 0.0, 1, 0), "Steps .* got 2.5"),
        (("DDIM", 1001, 0.0, 1, 0), "Steps .* got 1001"),
        (("DDIM", float("inf"), 0.0, 1, 0), "Steps"),
        (("DDIM", "ten", 0.0, 1, 0), "Steps"),
        (("DDIM", None, 0.0, 1, 0), "Steps"),
        (("DDIM", 10, 0.0, 0, 0), "Number of images must be a whole number from 1 to 16, got 0"),
        (("DDIM", 10, 0.0, 17, 0), "Number of images .* got 17"),
        (("DDIM", 10, 0.0, 1.5, 0), "Number of images"),
        (("DDIM", 10, 0.0, 1, -1), "Seed must be a whole number from 0 to 9223372036854775807, got -1"),
        (("DDIM", 10, 0.0, 1, 2**63), "Seed"),
        (("DDIM", 10, 0.0, 1, 1e30), "Seed"),
        (("DDIM", 10, 0.0, 1, "abc"), "Seed .* got 'abc'"),
        (("DDIM", 10, 0.0, 1, True), "Seed"),
        (("DDIM", 10, 1.5, 1, 0), "Eta must be a number from 0 to 1, got 1.5"),
        (("DDIM", 10, -0.1, 1, 0), "Eta"),
        (("DDIM", 10, float("nan"), 1, 0), "Eta"),
        (("DDIM", 10, "x", 1, 0), "Eta"),
        (("Euler-ish", 10, 0.0, 1, 0), "Scheduler must be one of DDPM, DDIM, .* got 'Euler-ish'"),
        ((None, 10, 0.0, 1, 0), "Scheduler"),
    ],
)
def test_bad_input_gives_a_message_naming_the_field_and_range(args, message):
    with pytest.raises(gr.Error, match=message):
        run_unconditional(app.MODELS.default_uncond, *args)


def test_numbers_as_text_and_seeds_beyond_float_precision_are_taken_exactly():
    seed = 2**62 + 1  # a float would round it to 2**62
    assert check_int("Seed", seed, 0, MAX_SEED, parse_text=True) == seed
    assert check_int("Seed", str(seed), 0, MAX_SEED, parse_text=True) == seed
    assert check_int("Seed", MAX_SEED, 0, MAX_SEED) == MAX_SEED
    assert check_int("Steps", 12.0, 1, 1000) == 12 and check_int("Steps", " 7 ", 1, 1000, parse_text=True) == 7
    settings = json.loads(run_unconditional(app.MODELS.default_uncond, "DDIM", 2, 0.0, 1, seed)[-1][1])
    assert settings["seed"] == seed
    with pytest.raises(ValueError, match="Seed") as error:
        check_int("Seed", "x" * 100_000, 0, MAX_SEED, parse_text=True)
    assert len(str(error.value)) < 120  # a long value is cut in the message


def test_forward_process_tab_noises_the_picture():
    from uncond.images import from_pil

    path = os.path.join(app.EXAMPLES_DIR, "red_heart.png")  # the page hands over a file path
    clean = from_pil(Image.open(app.show_forward_process(path, 0, app.MODELS.default_uncond)), 32)
    noisy = from_pil(Image.open(app.show_forward_process(path, 999, app.MODELS.default_uncond)), 32)
    original = from_pil(Image.open(path), 32)
    assert (clean - original).abs().mean() < 0.05  # t = 0 keeps the picture
    assert (noisy - original).abs().mean() > 0.5  # t = 999 is nearly pure noise
    with pytest.raises(gr.Error, match="Timestep"):
        app.show_forward_process(path, 1000, app.MODELS.default_uncond)
    table = app.schedule_table(app.MODELS, app.MODELS.default_uncond)
    rescaled = "alpha-bar_t rescaled to zero terminal SNR (Lin et al. 2024)"
    assert (
        set(table["curve"]) == {"alpha-bar_t (signal kept)", "sqrt(1 - alpha-bar_t) (noise std)", "beta_t", rescaled}
        and len(table) == 4000
    )
    zero_snr = table[table["curve"] == rescaled]["value"].tolist()
    assert zero_snr[-1] == 0.0 and zero_snr[0] > 0.99  # pure noise at the last step, the picture at the first


def test_unknown_model_is_refused_and_never_read_as_a_path():
    for model in ["no such model", "weights/uncond", os.path.join(app.WEIGHTS_DIR, "uncond"), None]:
        with pytest.raises(gr.Error, match="Model must be one of emoji \\(shipped\\)"):
            run_unconditional(model, "DDIM", 5, 0.0, 1, 0)


def test_closing_the_page_stream_closes_the_pipelines_loop_at_once():
    steps_run, closed = [], []

    def events():
        try:
            for step in range(1000):
                steps_run.append(step)
                yield Step(step, 999 - step, torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
        finally:
            closed.append(len(steps_run))

    page = stream_to_page(events(), 1000, 0, 1, lambda *a, **k: None, ResultFolders(keep=2))
    outputs = [next(page) for _ in range(PREVIEW_EVERY)]
    assert is_tick(outputs[0]) and not is_tick(outputs[-1])  # the first preview after PREVIEW_EVERY steps
    page.close()  # what Stop or a vanished client does
    assert closed == [PREVIEW_EVERY]  # the loop ended where it stood: no step ran after the close


@pytest.mark.slow
def test_served_app_answers_the_api(tmp_path):
    from gradio_client import Client

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for_port(server, port)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        gallery, settings, seed, strip, _ = client.predict(
            app.MODELS.default_uncond, "DDIM", 5, 0.0, 2, 77, api_name="/unconditional"
        )
        assert seed == 77 and len(gallery) == 2 and '"seed": 77' in settings
        assert Image.open(gallery[0]["image"]).text["seed"] == "77"
        gallery, settings, seed, strip, _ = client.predict(
            "red heart", "", 3.0, "DDIM", 4, 0.0, 2, 5, api_name="/text_to_image"
        )
        assert seed == 5 and len(gallery) == 2 and json.loads(settings)["prompt"] == "red heart"
        # out-of-range slider values get our message, naming the field and its range, not Gradio's anonymous one
        for args, message in [
            ((app.MODELS.default_uncond, "DDIM", 5, 0.0, 1, -5), "Seed must be a whole number from 0 to"),
            (
                (app.MODELS.default_uncond, "DDIM", 5000, 0.0, 1, 0),
                "Steps must be a whole number from 1 to 1000, got 5000",
            ),
            ((app.MODELS.default_uncond, "DDIM", 5, 2.0, 1, 0), "Eta must be a number from 0 to 1, got 2.0"),
            (
                (app.MODELS.default_uncond, "DDIM", 5, 0.0, 99, 0),
                "Number of images must be a whole number from 1 to 16, got 99",
            ),
            ((app.MODELS.default_uncond, "PLMS", 5, 0.0, 1, 0), "Scheduler must be one of"),
            (("../../etc/passwd", "DDIM", 5, 0.0, 1, 0), "Model must be one of"),
        ]:
            with pytest.raises(Exception, match=message):
                client.predict(*args, api_name="/unconditional")
        for args, message in [
            (("red heart", "", -2.0, "DDIM", 4, 0.0, 1, 5), "Guidance scale must be a number from 0 to 20, got -2.0"),
            (("red heart", "", 3.0, "DDIM", 0, 0.0, 1, 5), "Steps must be a whole number from 1 to 1000, got 0"),
            (("x" * 100_000, "", 3.0, "DDIM", 4, 0.0, 1, 5), "Prompt must be at most 1000 characters, got 100000"),
            (
                ("red\x1b[31m", "", 3.0, "DDIM", 4, 0.0, 1, 5),
                "Prompt must not contain control characters, found U\\+001B",
            ),
        ]:
            with pytest.raises(Exception, match=message):
                client.predict(*args, api_name="/text_to_image")
        # still up, and serving no file outside Gradio's own folders
        assert client.predict(app.MODELS.default_uncond, "DDIM", 2, 0.0, 1, 1, api_name="/unconditional")[2] == 1
        for path in (
            os.path.join(ROOT, "app.py"),
            os.path.join(ROOT, "weights", "uncond", "config.json"),
            "/etc/passwd",
        ):
            response = httpx.get(f"http://127.0.0.1:{port}/gradio_api/file={path}")
            assert response.status_code == 403, (path, response.status_code)
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_text_to_image(*args):
    return list(app.generate_text_to_image(*args, progress=lambda *a, **k: None))


def test_text_to_image_handler_writes_prompt_and_guidance_into_the_pngs(tiny_txt2img):
    outputs = run_text_to_image("red heart", "blue", 3.0, "DDIM", 6, 0.0, 2, 11)
    gallery, settings, seed, strip, _ = outputs[-1]
    assert (
        seed == 11 and len(gallery) == 2 and len(strip) == 2 * 6
    )  # one frame per step when there are fewer steps than frames
    image = Image.open(gallery[1][0])
    assert (
        image.text["prompt"] == "red heart"
        and image.text["negative_prompt"] == "blue"
        and image.text["guidance_scale"] == "3.0"
    )


def test_the_style_picker_adds_the_styles_words_to_the_prompt(tiny_txt2img, monkeypatch):
    monkeypatch.setattr(app, "STYLE_NAMES", ["any", "openmoji-line"])
    outputs = run_text_to_image("red heart", "", 3.0, "DDIM", 2, 0.0, 1, 0, False, 0.995, 1.5, "openmoji-line")
    assert Image.open(outputs[-1][0][0][0]).text["prompt"] == "red heart, line art"  # as the training captions say it
    outputs = run_text_to_image("red heart", "", 3.0, "DDIM", 2, 0.0, 1, 0, False, 0.995, 1.5, "any")
    assert Image.open(outputs[-1][0][0][0]).text["prompt"] == "red heart"
    with pytest.raises(gr.Error, match="Style must be one of any, openmoji-line, got 'fluent-3d'"):
        run_text_to_image("red heart", "", 3.0, "DDIM", 2, 0.0, 1, 0, False, 0.995, 1.5, "fluent-3d")


def test_the_styles_offered_are_those_the_model_was_trained_on(tiny_txt2img):
    from webapp.models import styled

    tiny_txt2img.captions = ["owl", "line art", "owl, line art", "3D"]
    assert app.MODELS.styles() == {
        "any colour style": "any",
        "OpenMoji line art": "openmoji-line",
        "Fluent 3D": "fluent-3d",
        "none added (line art too)": "none",
    }
    tiny_txt2img.captions = ["owl", "red heart"]
    assert app.MODELS.styles() == {}  # one style only: no picker
    assert (
        styled("owl", "fluent-3d") == "owl, 3D" and styled(" ", "fluent-3d") == "3D" and styled("owl", "any") == "owl"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (("heart", "", float("nan"), "DDIM", 5, 0.0, 1, 0), "Guidance scale must be a number from 0 to 20, got nan"),
        (("heart", "", float("inf"), "DDIM", 5, 0.0, 1, 0), "Guidance scale .* got inf"),
        (("heart", "", -1.0, "DDIM", 5, 0.0, 1, 0), "Guidance scale .* got -1.0"),
        (("heart", "", "strong", "DDIM", 5, 0.0, 1, 0), "Guidance scale"),
        (("heart", "", 3.0, "DDIM", 0, 0.0, 1, 0), "Steps"),
        (("heart", "", 3.0, "PNDM", 5, 0.0, 1, 0), "Scheduler"),
        (("heart", "", 3.0, "DDIM", 5, 0.0, 1, 0.5), "Seed"),
        ((None, "", 3.0, "DDIM", 5, 0.0, 1, 0), "Prompt must be text"),
        ((["heart"], "", 3.0, "DDIM", 5, 0.0, 1, 0), "Prompt must be text"),
        (("x" * 100_000, "", 3.0, "DDIM", 5, 0.0, 1, 0), "Prompt must be at most 1000 characters, got 100000"),
        (
            ("\x00\x07\x1b[31m", "", 3.0, "DDIM", 5, 0.0, 1, 0),
            "Prompt must not contain control characters, found U\\+0000 at position 0",
        ),
        (
            ("heart", "a\x7fb", 3.0, "DDIM", 5, 0.0, 1, 0),
            "Negative prompt must not contain control characters, found U\\+007F at position 1",
        ),
        (("heart", 5, 3.0, "DDIM", 5, 0.0, 1, 0), "Negative prompt must be text"),
    ],
)
def test_text_to_image_bad_input_names_the_field(tiny_txt2img, args, message):
    with pytest.raises(gr.Error, match=message):
        run_text_to_image(*args)


def test_long_emoji_and_multiline_prompts_still_give_images(tiny_txt2img):
    for prompt in ["heart " * 166, "❤️🐱🍕", "red\nheart\t"]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gallery, settings, *_ = run_text_to_image(prompt, "", 2.0, "DDIM", 2, 0.0, 1, 0)[-1]
        assert len(gallery) == 1
        assert json.loads(settings)["truncated"] == (len(prompt) > 100)  # 166 words: past the tokenizer's 32 tokens
        # an emoji-only prompt gets a hint: the model knows emoji by their names
        assert any("no letters or digits" in str(w.message) for w in caught) == (prompt == "❤️🐱🍕")


@pytest.mark.parametrize("scheduler", ["DPM-Solver++ (diffusers)", "Euler (diffusers)"])
def test_diffusers_samplers_from_the_picker(scheduler):
    gallery, settings, seed, strip, _ = run_unconditional(app.MODELS.default_uncond, scheduler, 6, 0.0, 1, 5)[-1]
    assert len(gallery) == 1 and json.loads(settings)["scheduler"] == SCHEDULER_CHOICES[scheduler][0]


def test_dropping_a_generated_png_restores_its_settings(tiny_txt2img, tmp_path):
    gallery, *_ = run_text_to_image("cat face", "dog", 2.5, "DDIM", 7, 0.3, 1, 4242)[-1]
    restored = dict(zip(TEXT_CONTROLS, app.restore_settings(gallery[0][0], TEXT_CONTROLS), strict=True))
    assert restored == {
        "prompt": "cat face",
        "negative_prompt": "dog",
        "guidance_scale": 2.5,
        "style": "any",
        "thresholding": False,
        "dynamic_thresholding_ratio": gr.skip(),  # thresholding off: its settings are not in the PNG
        "sample_max_value": gr.skip(),
        "scheduler": "DDIM",
        "steps": 7,
        "eta": 0.3,
        "seed": 4242,
        "variation_seed": gr.skip(),  # no variation: strength 0, the variation seed left as it is
        "variation_strength": 0.0,
        "upscale": False,
        "upscale_steps": gr.skip(),
        "noise_level": gr.skip(),
        "num_candidates": 1,  # best of N at its default
    }
    gallery, *_ = run_unconditional(app.MODELS.default_uncond, "Euler (diffusers)", 3, 0.0, 1, 99, 5, 0.25)[-1]
    assert app.restore_settings(gallery[0][0], UNCOND_CONTROLS) == [
        app.MODELS.default_uncond,
        "Euler (diffusers)",
        3,
        0.0,
        99,
        5,
        0.25,
        False,
        gr.skip(),
        gr.skip(),
    ]
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(gr.Error, match="Settings file: not a PNG file"):
        app.restore_settings(str(tmp_path / "bad.png"), UNCOND_CONTROLS)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"steps": "5000"}, "Steps must be a whole number from 1 to 1000, got 5000"),
        ({"seed": "-1"}, "Seed"),
        ({"scheduler": "plms"}, "Scheduler must be one of"),
        ({"eta": "inf"}, "Eta"),
        ({"guidance_scale": "nan"}, "Guidance scale"),
        ({"prompt": "a\x1bb"}, "Prompt must not contain control characters"),
        ({"prompt": "x" * 2000}, "Prompt must be at most 1000 characters"),
    ],
)
def test_restored_settings_out_of_range_name_the_field(tmp_path, settings, message):
    from uncond.settings import save_with_settings

    path = str(tmp_path / "crafted.png")
    save_with_settings(Image.new("RGB", (8, 8)), path, {"steps": 5, "seed": 1, **settings})
    with pytest.raises(gr.Error, match=f"Settings file: {message}"):
        app.restore_settings(path, TEXT_CONTROLS)


def test_suggestions_are_the_closest_training_captions(tiny_txt2img, monkeypatch):
    monkeypatch.setattr(tiny_txt2img, "captions", ["red", "blue", "green", "red heart"])
    monkeypatch.setattr(tiny_txt2img, "_caption_features", None)
    assert tiny_txt2img.closest_captions("red", k=1) == ["red"]  # the same text is its own nearest caption
    assert len(tiny_txt2img.closest_captions("something", k=3)) == 3
    assert tiny_txt2img.closest_captions("   ") == []
    update = app.suggest_captions("blue")
    assert "blue" in update["choices"] and len(update["choices"]) == 4


def test_suggestions_search_typed_text_then_the_nearest_names(tiny_txt2img, monkeypatch, tmp_path):
    captions = ["cat face", "a cat face", "gato", "red heart", "corazón rojo", "rocket"]
    monkeypatch.setattr(tiny_txt2img, "captions", captions)
    monkeypatch.setattr(tiny_txt2img, "names", ["cat face", "red heart", "rocket"])
    assert tiny_txt2img.closest_captions("corazon", k=1) == ["corazón rojo"]  # accents aside, any language
    nearest = tiny_txt2img.closest_captions("zzz", k=3)  # nothing holds it: the names nearest in text space
    assert sorted(nearest) == ["cat face", "red heart", "rocket"]
    # names.json and captions.json are read back from a folder
    tiny_txt2img.save_pretrained(str(tmp_path))
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    (tmp_path / "names.json").write_text(json.dumps(["rocket"]))
    loaded = type(tiny_txt2img).from_pretrained(str(tmp_path))
    assert loaded.captions == captions and loaded.names == ["rocket"]


def test_dynamic_thresholding_reaches_the_scheduler_and_euler_refuses_it(monkeypatch):
    seen = {}
    original = app.MODELS.txt2img.stream

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(app.MODELS.txt2img, "stream", spy)
    outputs = list(
        app.generate_text_to_image(
            "red heart", "", 7.0, "DDIM", 3, 0.0, 1, 0, True, 0.9, 2.0, progress=lambda *a, **k: None
        )
    )
    assert json.loads(outputs[-1][1])["thresholding"] is True and seen["dynamic_thresholding_ratio"] == 0.9
    with pytest.raises(gr.Error, match="thresholding is not available with the euler scheduler"):
        list(
            app.generate_text_to_image(
                "red heart", "", 7.0, "Euler (diffusers)", 3, 0.0, 1, 0, True, 0.9, 2.0, progress=lambda *a, **k: None
            )
        )
    with pytest.raises(gr.Error, match="Thresholding percentile must be a number from 0.5 to 1"):
        list(
            app.generate_text_to_image(
                "red", "", 7.0, "DDIM", 3, 0.0, 1, 0, True, 2.0, 2.0, progress=lambda *a, **k: None
            )
        )
