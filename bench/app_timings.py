"""App-like timings: our pipelines called with the app's default settings, and `python app.py` to a served page.

The pipelines are called directly: nothing here imports app.py, which loads every model and builds the page.
"""

import os
import statistics
import time

from bench.measure import app_startup_seconds, time_request
from bench.models import ROOT, SHIPPED_TXT2IMG_UNET, SHIPPED_UNCOND
from bench.suites import PROMPT
from txt2img.pipeline import TextToImagePipeline
from uncond.pipeline import UnconditionalPipeline

# the app's defaults (app.py: DDIM, 50 steps, 4 images, seed 0; eta 1 unconditional, 0 with text; guidance 4)
# and the steps at which it shows a preview (webapp/streaming.py): the request timings call the pipelines with them
APP_UNCOND = dict(num_images=4, num_inference_steps=50, scheduler="ddim", eta=1.0, seed=0)
APP_TXT2IMG = dict(
    prompt=PROMPT,
    negative_prompt="",
    num_images=4,
    num_inference_steps=50,
    scheduler="ddim",
    eta=0.0,
    guidance_scale=4.0,
    seed=0,
)
APP_PREVIEW_EVERY = 5
# Live mode (webapp/live.py LIVE_STEPS): one picture, DDIM 6 steps, eta 0, the tab's default guidance, per prompt change
LIVE = dict(negative_prompt="", num_images=1, num_inference_steps=6, scheduler="ddim", eta=0.0, guidance_scale=4.0)
LIVE_PROMPTS = ["r", "re", "red", "red heart", "blue heart"]  # what a person typing sends


def bench_requests(uncond_pipe, txt2img_pipe, steps: int, log) -> dict:
    """Seconds from a pipeline call with the app's default settings to its first preview step and to the final images, both tabs.

    The pipelines are called directly (never through app.py, which loads models and builds the page); wall
    seconds grow with whatever else shares the cores, the CPU seconds beside them much less.
    """
    result = {}
    for tab, pipe, settings in [("uncond", uncond_pipe, APP_UNCOND), ("txt2img", txt2img_pipe, APP_TXT2IMG)]:
        settings = {**settings, "num_inference_steps": steps}
        first, final, previews, cpu = time_request(pipe, settings, APP_PREVIEW_EVERY)
        result[tab] = {
            "first_preview_s": first,
            "final_s": final,
            "cpu_s": cpu,
            "previews": previews,
            **{k: v for k, v in settings.items() if k not in ("prompt", "negative_prompt")},
        }
        log({tab: result[tab]})
    return result


def load_shipped_pipelines(device, dtype, log) -> tuple:
    """The shipped pipelines as the app loads them (from_pretrained), with the seconds it took."""
    started, cpu_started = time.perf_counter(), time.process_time()
    uncond_pipe = UnconditionalPipeline.from_pretrained(SHIPPED_UNCOND, device=device, dtype=dtype)
    txt2img_pipe = TextToImagePipeline.from_pretrained(
        os.path.dirname(SHIPPED_TXT2IMG_UNET), device=device, dtype=dtype
    )
    seconds = {"load_s": time.perf_counter() - started, "load_cpu_s": time.process_time() - cpu_started}
    log(seconds)
    return uncond_pipe, txt2img_pipe, seconds


def bench_startup(log) -> dict:
    """Seconds from `python app.py` (a separate process) to a served page, and the CPU seconds it used."""
    startup, startup_cpu = app_startup_seconds(ROOT)
    result = {"startup_s": startup, "startup_cpu_s": startup_cpu}
    log(result)
    return result


def bench_live(txt2img_pipe, log) -> dict:
    """Seconds from a live-mode request (the last keystroke) to its picture: the median over a few prompts.

    The server drops stale requests at their next step (webapp/live.py), so the last keystroke's picture waits for
    one picture plus at most one step of the one before; this times the picture itself.
    """
    seconds, cpu = [], []
    txt2img_pipe(prompt="warm up", seed=0, **LIVE)
    for seed, prompt in enumerate(LIVE_PROMPTS):
        started, cpu_started = time.perf_counter(), time.process_time()
        txt2img_pipe(prompt=prompt, seed=seed, **LIVE)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    result = {
        "live_s": statistics.median(seconds),
        "live_cpu_s": statistics.median(cpu),
        "runs_s": seconds,
        **{k: v for k, v in LIVE.items() if k != "negative_prompt"},
    }
    log({"live": result})
    return result
