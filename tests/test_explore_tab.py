"""The Explore tab's handlers and Live mode: strip ends and grid cells are the plain generations, bad fields are
named, and a burst of live requests draws only the newest."""

import json
import os
import threading
import time

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

import app
from uncond.pipeline import SampleOutput, UnconditionalPipeline
from uncond.sampling import Step
from uncond.unet import UNet, UNetConfig
from webapp.explore_tab import MAX_STRIP_STEPS
from webapp.grid_picture import CELL_SCALE, cell_box
from webapp.live import LIVE_STEPS, Newest


@pytest.fixture
def tiny(monkeypatch):
    """Tiny random pipelines (8 px) in place of the shipped ones."""
    from tests.txt2img_fixtures import tiny_text_encoder, tiny_unet
    from txt2img.pipeline import TextToImagePipeline

    torch.manual_seed(0)
    config = UNetConfig(sample_size=8, block_out_channels=(8, 16), layers_per_block=1, attention_resolutions=(4,),
                        norm_num_groups=4, attention_head_dim=8)  # fmt: skip
    schedule = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
    monkeypatch.setitem(app.MODELS.uncond, app.MODELS.default_uncond, UnconditionalPipeline(UNet(config), schedule))
    monkeypatch.setattr(app.MODELS, "txt2img", TextToImagePipeline(tiny_unet(), tiny_text_encoder(), schedule))


MODEL = app.MODELS.default_uncond
NO_PROGRESS = dict(progress=lambda *a, **k: None)


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def plain(source: str, prompt: str, scheduler: str, steps: int, eta: float, seed: int) -> np.ndarray:
    """The pixels of the one image the Unconditional or Text to image tab makes with these settings."""
    if source == "Unconditional":
        outputs = list(app.generate_unconditional(MODEL, scheduler, steps, eta, 1, seed, **NO_PROGRESS))
    else:
        outputs = list(app.generate_text_to_image(prompt, "", 3.0, scheduler, steps, eta, 1, seed, **NO_PROGRESS))
    return pixels(outputs[-1][0][0][0])


def strip(source, between, seed=3, other_seed=8, frames=4, scheduler="DDIM", steps=3, eta=0.0, other="blue heart"):
    args = (source, MODEL, "red heart", "", 3.0, seed, between, other_seed, other, frames, scheduler, steps, eta)
    return list(app.EXPLORE.interpolate(*args))


@pytest.mark.parametrize(
    "source, between, scheduler, eta",
    [("Unconditional", "Two seeds", "DDIM", 1.0), ("Text to image", "Two seeds", "DDPM", 0.0),
     ("Text to image", "Two prompts", "DDIM", 0.0)],
)  # fmt: skip
def test_a_strips_end_frames_are_the_plain_generations_and_it_animates(tiny, source, between, scheduler, eta):
    outputs = strip(source, between, scheduler=scheduler, eta=eta)
    assert [len(o[0]) for o in outputs] == [1, 2, 3, 4, 4]  # the gallery grows frame by frame
    entries, animations, settings = outputs[-1]
    first, last = pixels(entries[0][0]), pixels(entries[-1][0])
    assert np.array_equal(first, plain(source, "red heart", scheduler, 3, eta, 3))
    other_seed, other_prompt = (8, "red heart") if between == "Two seeds" else (3, "blue heart")
    assert np.array_equal(last, plain(source, other_prompt, scheduler, 3, eta, other_seed))
    assert not np.array_equal(first, last)
    assert [e[1] for e in entries][1:3] == ["0.33", "0.67"]
    for path in animations:
        assert path.endswith((".gif", ".webp"))
        with Image.open(path) as animation:
            assert animation.n_frames == 6 and animation.size == (128, 128)  # 0 1 2 3 2 1, 8 px shown at 128
            assert np.array_equal(np.asarray(animation.convert("RGB")), first)
    assert '"num_frames": 4' in settings


def test_a_grid_cell_is_the_plain_generation_with_its_settings(tiny):
    outputs = list(app.EXPLORE.compare("Text to image", MODEL, "red heart", "", 3.0, 5,
                                       ["DDIM, eta 1", "DDPM", "Euler"], [10, 5]))  # fmt: skip
    assert len(outputs) == 3 * 2 + 1  # the grid after each cell, then with its settings
    grid_path, table, settings = outputs[-1]
    grid = pixels(grid_path)
    rows = [("DDPM", 0.0), ("DDIM", 1.0), ("Euler (diffusers)", 0.0)]  # the samplers' order, whatever the picking
    for r, (scheduler, eta) in enumerate(rows):
        for c, steps in enumerate([5, 10]):
            left, top, right, bottom = cell_box(r, c, size=8)
            cell = grid[top:bottom:CELL_SCALE, left:right:CELL_SCALE]
            single = plain("Text to image", "red heart", scheduler, steps, eta, 5)  # the PNG, 8 px shown at 128
            assert np.array_equal(cell, single[:: 128 // 8, :: 128 // 8])
    assert list(table["sampler"]) == ["DDPM", "DDIM, eta 1", "Euler"]
    assert all(float(t) > 0 for t in table["5 steps (s)"]) and '"steps": [\n    5,\n    10\n  ]' in settings
    first = outputs[0][1]
    assert first["5 steps (s)"][0] != "" and first["10 steps (s)"][0] == ""  # a pending cell is blank


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(frames=1), "Frames must be a whole number from 2 to 16, got 1"),
        (dict(frames=17), "Frames must be a whole number from 2 to 16"),
        (dict(frames=16, steps=51), f"Frames x Steps must be at most {MAX_STRIP_STEPS}, got 16 x 51"),
        (dict(between="Two seeds", other_seed=-1), "Other seed must be a whole number from 0"),
        (dict(seed="abc"), "Seed must be a whole number"),
        (dict(steps=0), "Steps must be a whole number from 1 to 1000"),
        (dict(scheduler="PLMS"), "Scheduler must be one of"),
        (dict(eta=2), "Eta must be a number from 0 to 1"),
        (dict(source="Unconditional", between="Two prompts"), "Between: two prompts need the text-to-image model"),
        (dict(between="Three seeds"), "Between must be one of Two seeds, Two prompts"),
        (dict(source="Text"), "Source must be one of Unconditional, Text to image"),
        (dict(other="x\x00"), "Other prompt must not contain control characters"),
        (dict(other=None), "Other prompt must be text"),
    ],
)
def test_bad_strip_fields_are_named(tiny, change, message):
    kwargs = {"source": "Text to image", "between": "Two prompts", **change}
    with pytest.raises(gr.Error, match=message):
        strip(kwargs.pop("source"), kwargs.pop("between"), **kwargs)


@pytest.mark.parametrize(
    "args, message",
    [
        (("Unconditional", "../weights", "", "", 3.0, 0, ["DDPM"], [5]), "Model must be one of"),
        (("Text to image", MODEL, "a" * 2000, "", 3.0, 0, ["DDPM"], [5]), "Prompt must be at most 1000 characters"),
        (("Text to image", MODEL, "red", "", 99, 0, ["DDPM"], [5]), "Guidance scale must be a number from 0 to 20"),
        (("Unconditional", MODEL, "", "", 3.0, -1, ["DDPM"], [5]), "Seed must be a whole number"),
        (("Unconditional", MODEL, "", "", 3.0, 0, [], [5]), "Samplers must be a non-empty list out of DDPM"),
        (("Unconditional", MODEL, "", "", 3.0, 0, ["PLMS"], [5]), "Samplers must be one of DDPM, .* got 'PLMS'"),
        (("Unconditional", MODEL, "", "", 3.0, 0, "DDPM", [5]), "Samplers must be a non-empty list"),
        (("Unconditional", MODEL, "", "", 3.0, 0, ["DDPM"], [7]), "Steps must be one of 5, 10, 25, 50, 100, got 7"),
        (("Unconditional", MODEL, "", "", 3.0, 0, ["DDPM"], None), "Steps must be a non-empty list"),
    ],
)
def test_bad_grid_fields_are_named(tiny, args, message):
    with pytest.raises(gr.Error, match=message):
        list(app.EXPLORE.compare(*args))


# ---- live mode ----


class Session:
    def __init__(self, name: str):
        self.session_hash = name


def test_newest_drops_the_older_requests_of_a_session_only():
    newest = Newest()
    a1, b1 = newest.arrive("a"), newest.arrive("b")
    assert newest.take_turn(a1) and not newest.stale(b1)
    a2 = newest.arrive("a")
    assert newest.stale(a1) and not newest.stale(a2) and not newest.stale(b1)
    newest.done(a1, drew=True)
    assert newest.take_turn(b1)
    waiting = threading.Thread(target=lambda: results.append(newest.take_turn(a2)))
    results = []
    waiting.start()
    time.sleep(0.05)
    assert results == []  # b is drawing: a waits for its turn
    newest.arrive("a")  # and is stale before it comes
    waiting.join(timeout=5)
    assert results == [False]
    newest.done(b1, drew=True)
    assert newest.newest == {"a": 4}  # b is forgotten; a's newest request has not ended


def test_a_repeat_of_the_unfinished_newest_request_changes_nothing():
    newest = Newest()
    first = newest.arrive("a", ("red", 4))
    assert newest.arrive("a", ("red", 4)) is None and not newest.stale(first)  # the page's repeat: first stays
    other = newest.arrive("b", ("red", 4))
    assert other is not None and not newest.stale(first)  # another session's same inputs are its own request
    assert newest.take_turn(first)
    newest.done(first, drew=True)
    again = newest.arrive("a", ("red", 4))  # the first one has ended: the same inputs are drawn again
    assert again is not None and newest.take_turn(other) is True
    newest.done(other, drew=True)
    changed = newest.arrive("a", ("red h", 4))
    assert newest.stale(again) and not newest.stale(changed)
    assert newest.arrive(None, ("red", 4)) != newest.arrive(None, ("red", 4))  # no session: never a repeat
    newest.done(changed, drew=False)
    assert newest.inputs == {None: ("red", 4)} and set(newest.newest) == {None}  # a and b are forgotten


def test_a_repeated_live_request_answers_at_once_and_the_first_one_draws(monkeypatch):
    pipe = SlowText()
    monkeypatch.setattr(app.MODELS, "txt2img", pipe)
    answers = []
    first = threading.Thread(
        target=lambda: answers.append(app.LIVE.generate(True, "red", "", 3.0, 0, "any", request=Session("rep")))
    )
    first.start()
    time.sleep(0.1)  # the first request is drawing
    started = time.perf_counter()
    assert app.LIVE.generate(True, "red", "", 3.0, 0, "any", request=Session("rep")) == (gr.skip(), gr.skip())
    assert time.perf_counter() - started < 0.05  # it did not wait for the picture
    first.join(timeout=10)
    assert pipe.finished == ["red"] and '"prompt": "red"' in answers[0][1]


def test_live_draws_one_picture_with_few_steps_and_nothing_when_off(tiny):
    path, settings = app.LIVE.generate(True, "red heart", "", 3.0, 4, "any", request=Session("s"))
    assert f'"steps": {LIVE_STEPS}' in settings and '"prompt": "red heart"' in settings
    assert np.array_equal(pixels(path), plain("Text to image", "red heart", "DDIM", LIVE_STEPS, 0.0, 4))
    assert app.LIVE.generate(False, "red heart", "", 3.0, 4, "any", request=Session("s")) == (gr.skip(), gr.skip())
    with pytest.raises(gr.Error, match="Live must be one of True, False"):
        app.LIVE.generate("yes", "red heart", "", 3.0, 4, "any")
    with pytest.raises(gr.Error, match="Style must be one of"):
        app.LIVE.generate(True, "red heart", "", 3.0, 4, "comic")
    assert app.LIVE.newest.newest == {} and not app.LIVE.newest.drawing  # nothing left behind, errors included


class SlowText:
    """A text-to-image stand-in whose steps take 50 ms and which records the prompts it finished."""

    def __init__(self):
        self.finished = []

    def stream(self, prompt="", num_inference_steps=1, seed=0, **kwargs):
        x = torch.zeros(1, 3, 4, 4)
        for step in range(num_inference_steps):
            time.sleep(0.05)
            yield Step(step, 999 - step, x, x)
        self.finished.append(prompt)
        yield SampleOutput([Image.new("RGB", (4, 4))], seed, num_inference_steps, num_inference_steps, 0.0,
                           {"prompt": prompt, "steps": num_inference_steps})  # fmt: skip


def test_a_burst_of_live_changes_draws_only_the_last(monkeypatch):
    pipe = SlowText()
    monkeypatch.setattr(app.MODELS, "txt2img", pipe)
    answers = {}

    def change(prompt, session="burst"):
        answers[prompt] = app.LIVE.generate(True, prompt, "", 3.0, 0, "any", request=Session(session))

    threads = []
    for prompt in ["r", "re", "red", "red h", "red heart"]:
        threads.append(threading.Thread(target=change, args=(prompt,)))
        threads[-1].start()
        time.sleep(0.08)  # a keystroke every 80 ms: each arrives while the one before is drawing or waiting
    other = threading.Thread(target=change, args=("cat", "another session"))
    other.start()
    for thread in threads + [other]:
        thread.join(timeout=10)
    assert pipe.finished.count("red heart") == 1 and "cat" in pipe.finished and len(pipe.finished) == 2
    for prompt in ["r", "re", "red", "red h"]:
        assert answers[prompt] == (gr.skip(), gr.skip()), prompt
    assert '"prompt": "red heart"' in answers["red heart"][1]


# ---- the served app: the new endpoints through the API ----


@pytest.fixture(scope="module")
def served():
    """`python app.py` with the shipped models on a free loopback port."""
    import subprocess
    import sys

    from tests.serving import ROOT, free_port, wait_for_port

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(server, port, timeout=180)
        yield f"http://127.0.0.1:{port}/", server
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_a_served_burst_of_prompt_changes_answers_only_the_last(served):
    from gradio_client import Client
    from gradio_client.utils import Status

    url, server = served
    client = Client(url, verbose=False)  # one client: one session, as one page
    prompts = ["r", "re", "red", "red h", "red hea", "red heart"]
    jobs = []
    for prompt in prompts:
        jobs.append(client.submit(True, prompt, "", 4.0, 0, "any", api_name="/live"))
        # the next keystroke once the server has this one (the client's threads could swap two joins), 50 ms on:
        # far quicker than one picture
        deadline = time.monotonic() + 30
        while not (jobs[-1].done() or jobs[-1].status().code in (Status.PROCESSING, Status.FINISHED)):
            assert time.monotonic() < deadline, "the server did not take the request"
            time.sleep(0.01)
        time.sleep(0.05)
    answers = [job.result(timeout=120) for job in jobs]
    drawn = [(prompt, answer) for prompt, answer in zip(prompts, answers) if isinstance(answer[1], str)]
    assert [prompt for prompt, _ in drawn] == ["red heart"], answers
    picture, settings = drawn[0][1]
    assert json.loads(settings)["prompt"] == "red heart" and json.loads(settings)["steps"] == LIVE_STEPS
    assert Image.open(picture).text["prompt"] == "red heart"
    assert server.poll() is None


@pytest.mark.slow
def test_served_explore_endpoints_name_bad_fields_and_keep_serving(served):
    from gradio_client import Client

    url, server = served
    client = Client(url, verbose=False)
    shared = ("Text to image", MODEL, "red heart", "", 4.0, 0)
    for args, message in [
        (shared + ("Two seeds", 1, "", 17, "DDIM", 3, 0.0), "Frames must be a whole number from 2 to 16, got 17"),
        (shared + ("Two seeds", 1, "", 16, "DDIM", 100, 0.0), "Frames x Steps must be at most 800, got 16 x 100"),
        (shared + ("Two seeds", -4, "", 2, "DDIM", 3, 0.0), "Other seed must be a whole number"),
        (("Unconditional",) + shared[1:] + ("Two prompts", 1, "x", 2, "DDIM", 3, 0.0), "Between: two prompts need"),
    ]:
        with pytest.raises(Exception, match=message):
            client.predict(*args, api_name="/interpolate")
    for args, message in [
        (shared + (["DDPM"], [7]), "Steps must be one of 5, 10, 25, 50, 100, got 7"),
        (shared + ([], [5]), "Samplers must be a non-empty list"),
        (("Unconditional", "/etc/passwd") + shared[2:] + (["DDPM"], [5]), "Model must be one of"),
    ]:
        with pytest.raises(Exception, match=message):
            client.predict(*args, api_name="/compare")
    with pytest.raises(Exception, match="Prompt must be at most 1000 characters"):
        client.predict(True, "x" * 5000, "", 4.0, 0, "any", api_name="/live")
    # still serving, each answer its own request's
    frames, animations, settings = client.predict(
        *shared[:5], 3, "Two seeds", 4, "", 2, "DDIM", 3, 0.0, api_name="/interpolate"
    )
    assert len(frames) == 2 and len(animations) == 2 and json.loads(settings)["frames"][-1]["variation_seed"] == 4
    grid, table, settings = client.predict(
        "Unconditional", MODEL, "", "", 4.0, 9, ["DDIM, eta 0"], [5], api_name="/compare"
    )
    assert json.loads(settings)["seed"] == 9 and table["data"][0][0] == "DDIM, eta 0"
    assert Image.open(grid).size[0] > 64 and server.poll() is None
