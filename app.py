"""The web demo: emoji from noise, unconditionally or from a prompt.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_PORT to change; --share for a public link)

UI only: the models, their sampling loops and their checks live in `uncond/` and `txt2img/`.
Environment: EMOJI_WEIGHTS_DIR (default weights/), EMOJI_CONCURRENCY and EMOJI_QUEUE_SIZE (default: by device).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the app works offline

try:  # Hugging Face ZeroGPU: `spaces` must be imported before anything touches CUDA
    import spaces

    gpu = spaces.GPU
except ImportError:  # anywhere else the decorator does nothing

    def gpu(fn=None, **kwargs):
        return fn if fn is not None else (lambda f: f)


import argparse
import json
import math
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass

import gradio as gr
import torch
from PIL import Image

from uncond.pipeline import MAX_SEED, UnconditionalPipeline, default_device, forward_diffuse, noise_schedule
from uncond.sample import read_settings, save_with_settings

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS_DIR = os.path.abspath(os.environ.get("EMOJI_WEIGHTS_DIR", os.path.join(HERE, "weights")))
# each shipped model folder, what it is, and the command that rebuilds it (the data first: README "The data")
MODEL_FOLDERS = {
    "uncond": ("unconditional model", "python -m uncond.train --data data/emoji32 --config configs/uncond_cpu32.json --out {folder}"),
    "txt2img": ("text-to-image model", "python -m txt2img.train --data data/emoji32 --clip {clip} --config configs/txt2img_cpu32.json --out {folder}"),
    "clip": ("CLIP text encoder", "python -m txt2img.train_clip --data data/emoji --out {folder}"),
}
PROMPT_EXAMPLES = ["red heart", "blue heart", "cat face", "pizza", "flag: Japan", "grinning face", "rocket", "sun"]
EXAMPLES_DIR = os.path.join(HERE, "assets", "examples")
PREVIEW_EVERY = 5  # steps between live previews
TICK_SECONDS = 0.05  # the longest the page's generator waits without yielding, so Stop and lost clients end it promptly
STRIP_FRAMES = 8  # frames of the last generation shown in "How it works"
MAX_STEPS = 1000
MAX_IMAGES = 16
MAX_GUIDANCE = 20.0
MAX_PROMPT_CHARS = 1000  # the tokenizer keeps 32 tokens; this only bounds the work a request can ask for
MAX_UPLOAD = "5mb"  # any uploaded file (the PNG whose settings are restored, the picture of "How it works")
MAX_PICTURE_SIDE = 2048  # pixels; larger pictures are refused before they are decoded
KEEP_RESULTS = 64  # requests whose PNGs stay in the app's own folder (Gradio has copied them to its cache by then)
Image.MAX_IMAGE_PIXELS = MAX_PICTURE_SIDE**2  # Pillow's decompression-bomb guard: a warning above, an error above twice this
# picker label -> (scheduler name in the pipelines, default steps); the last two are diffusers' samplers in our loop
SCHEDULERS = {
    "DDPM": ("ddpm", 1000),
    "DDIM": ("ddim", 50),
    "DPM-Solver++ (diffusers)": ("dpm++", 20),
    "Euler (diffusers)": ("euler", 30),
}

DESCRIPTION = """# Emoji from noise
A small diffusion model, written from scratch, turns random noise into emoji in a few dozen steps.
**DDPM** removes the noise in up to 1000 small random steps; **DDIM** takes bigger, deterministic steps (eta 0), so 50 are enough.
Both are written from scratch here; **DPM-Solver++** and **Euler** are diffusers' samplers driven by the same loop.
"""


# ---- device, precision and queue ----


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on the CPU (half precision is slower there); fp16 on CUDA, where quality holds: DDIM-20 pixels of the shipped
    unconditional model move by 0.47/255 on average against fp32 (bf16: 6/255, up to 154/255, visibly different images)."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def env_int(name: str, default: int) -> int:
    """A positive whole number from the environment variable `name`, or `default` when it is unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"{name} must be a positive whole number, got {value!r}.")
    return int(value)


def queue_settings(device: torch.device) -> tuple[int, int]:
    """(sampling jobs at once, most requests waiting): one job on the CPU (it takes every core), four on a GPU."""
    if torch.device(device).type == "cuda":
        return env_int("EMOJI_CONCURRENCY", 4), env_int("EMOJI_QUEUE_SIZE", 64)
    return env_int("EMOJI_CONCURRENCY", 1), env_int("EMOJI_QUEUE_SIZE", 32)


def device_note(device: torch.device, dtype: torch.dtype, concurrency: int, queue_size: int) -> str:
    """What the page says about where and how it samples."""
    where = f"**{device.type.upper()}**" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    return f"Running on {where} in {str(dtype).replace('torch.', '')}; {concurrency} generation(s) at a time, up to {queue_size} waiting."


# ---- the models, or one clear message and a non-zero exit ----


def display_path(path: str) -> str:
    """A path as a person would type it: relative to the app's folder when inside it."""
    return os.path.relpath(path, HERE) if os.path.abspath(path).startswith(HERE + os.sep) else path


def cannot_start(key: str, folder: str, error: Exception, weights_dir: str) -> SystemExit:
    """The startup failure for a missing or unreadable model folder: the folder, the cause and the command that rebuilds it."""
    what, command = MODEL_FOLDERS[key]
    folder = display_path(folder)
    rebuild = command.format(folder=folder, clip=display_path(os.path.join(weights_dir, "clip")))
    return SystemExit(
        f"Cannot start: the {what} in {folder} is missing or unreadable ({type(error).__name__}: {error}).\n"
        f"Restore the shipped files (git checkout -- {folder}) or rebuild them with:\n    {rebuild}"
    )


def load_uncond(weights_dir: str, device: torch.device, dtype: torch.dtype) -> UnconditionalPipeline:
    """The shipped unconditional model, or SystemExit naming its folder."""
    folder = os.path.join(weights_dir, "uncond")
    try:
        if not os.path.isdir(folder):
            raise FileNotFoundError("no such folder")
        return UnconditionalPipeline.from_pretrained(folder, device=device, dtype=dtype)
    except Exception as error:  # any failure to read the files is reported the same way
        raise cannot_start("uncond", folder, error, weights_dir) from error


def load_txt2img(weights_dir: str, device: torch.device, dtype: torch.dtype):
    """The shipped text-to-image pipeline (its UNet and the CLIP it names), or SystemExit naming the folder at fault."""
    from txt2img.clip import TextEncoder
    from txt2img.pipeline import TextToImagePipeline, text_encoder_location

    folder = os.path.join(weights_dir, "txt2img")
    try:
        if not os.path.isdir(folder):
            raise FileNotFoundError("no such folder")
        return TextToImagePipeline.from_pretrained(folder, device=device, dtype=dtype)
    except Exception as error:
        # which folder is at fault: the CLIP folder the pipeline names, or the pipeline's own
        try:
            clip = os.path.normpath(os.path.join(folder, text_encoder_location(folder)))  # pipeline.json names it relative to the folder
        except Exception:  # an unreadable pipeline.json: the pipeline folder is at fault
            raise cannot_start("txt2img", folder, error, weights_dir) from error
        try:
            if not os.path.isdir(clip):
                raise FileNotFoundError("no such folder")
            TextEncoder.from_pretrained(clip)
        except Exception as clip_error:
            raise cannot_start("clip", clip, clip_error, weights_dir) from error
        raise cannot_start("txt2img", folder, error, weights_dir) from error


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="The emoji diffusion demo.")
    parser.add_argument("--uncond-model", action="append", default=[], metavar="PATH_OR_HUB_ID",
                        help="also offer this unconditional model (our format or a diffusers UNet2DModel / DDPMPipeline folder or hub id); repeatable")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link (off unless asked for)")
    args, _ = parser.parse_known_args(argv)
    return args


def load_models(weights_dir: str, extra: list[str]) -> tuple[dict, object]:
    """The unconditional models (shipped first, then each named on the command line) and the text-to-image pipeline."""
    device = default_device()
    dtype = default_dtype(device)
    models = {"emoji (shipped)": load_uncond(weights_dir, device, dtype)}
    for name in extra:
        try:
            models[name] = UnconditionalPipeline.from_pretrained(name, device=device, dtype=dtype)
        except (ValueError, OSError) as error:
            raise SystemExit(f"--uncond-model {name!r} could not be loaded: {error}")
    return models, load_txt2img(weights_dir, device, dtype)


ARGS = parse_args(sys.argv[1:] if __name__ == "__main__" else [])
UNCOND_MODELS, TXT2IMG = load_models(WEIGHTS_DIR, ARGS.uncond_model)
UNCOND_DEFAULT = next(iter(UNCOND_MODELS))
DEVICE = UNCOND_MODELS[UNCOND_DEFAULT].device
DTYPE = UNCOND_MODELS[UNCOND_DEFAULT].dtype
CONCURRENCY, QUEUE_SIZE = queue_settings(DEVICE)
DEVICE_NOTE = device_note(DEVICE, DTYPE, CONCURRENCY, QUEUE_SIZE)
OUTPUT_DIR = tempfile.mkdtemp(prefix="emoji-app-")  # the PNGs of the last KEEP_RESULTS requests (see result_folder)
FOLDERS_IN_USE: set[str] = set()
FOLDERS_LOCK = threading.Lock()


# ---- sampling in a worker thread, streamed to the page ----


def stream_samples(run, total_steps: int):
    """Run `run(callback)` in a worker thread; yield ("preview", x0 tensor, step) every few steps, ("tick", None, step)
    after TICK_SECONDS without news, then ("done", result, strip).

    `strip` holds (step, x_t, predicted x_0) of the first image at up to STRIP_FRAMES evenly spaced steps.
    Closing the generator (Stop, or a client that went away) makes the callback return True, so the worker
    ends within one step; the ticks keep the generator closable while the worker runs.
    """
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    strip = []
    strip_steps = {round(i * (total_steps - 1) / max(1, STRIP_FRAMES - 1)) for i in range(STRIP_FRAMES)}
    steps_done = [0]

    def callback(step, timestep, x_t, pred_original_sample):
        steps_done[0] = step + 1
        if step in strip_steps:
            strip.append((step + 1, x_t[:1].detach().float().cpu(), pred_original_sample[:1].detach().float().cpu()))
        if (step + 1) % PREVIEW_EVERY == 0 and step + 1 < total_steps:
            events.put(("preview", pred_original_sample.detach().float().cpu(), step + 1))
        return stop.is_set()

    def work():
        try:
            result = run(callback)
            events.put(("done", result, strip))
        except Exception as error:  # handed to the page as a message, never a stack trace
            events.put(("error", error, 0))

    worker = threading.Thread(target=work, name="sampling-worker", daemon=True)
    worker.start()
    try:
        while True:
            try:
                kind, payload, step = events.get(timeout=TICK_SECONDS)
            except queue.Empty:
                kind, payload, step = "tick", None, steps_done[0]
            if kind == "error":
                raise payload
            yield kind, payload, step
            if kind == "done":
                return
    finally:
        stop.set()


def sampling_error(error: Exception, num_images: int) -> Exception:
    """What the page shows for a failed generation: out of memory suggests fewer images; a refused argument names it."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the failed batch's memory back before the next request
        return gr.Error(f"Out of memory while generating {num_images} images at once: try fewer images.")
    if isinstance(error, ValueError):
        return gr.Error(str(error))
    return error


def stream_to_page(run, steps: int, seed: int, num_images: int, progress):
    """Page outputs while sampling: previews with progress, then the PNGs, their settings, the seed and the reverse-process strip."""
    started = time.perf_counter()
    folder = result_folder()
    try:
        for kind, payload, extra in stream_samples(run, steps):
            if kind == "done":
                yield save_results(payload, folder), json.dumps(payload.settings, indent=2), seed, strip_entries(extra, folder)
                continue
            rate = extra / (time.perf_counter() - started)
            if extra:
                progress((extra, steps), desc=f"{rate:.1f} steps/s, {(steps - extra) / rate:.0f} s left")
            if kind == "preview":
                yield preview_entries(payload, folder, extra), f"step {extra}/{steps} ({rate:.1f} steps/s)", seed, gr.skip()
            else:
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip()  # a tick: nothing new, but Stop can take effect here
    except gr.Error:
        raise
    except Exception as error:
        raise sampling_error(error, num_images) from error
    finally:
        release_folder(folder)


# ---- checks: every field of every request, with a message that names it ----


def shown(value) -> str:
    """A short repr of a value for a message (a 100,000-character string must not fill the page)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_int(name: str, value, low: int, high: int) -> int:
    """A whole number in [low, high] (an int, an integral float or a string of digits), or a gr.Error naming the field."""
    message = f"{name} must be a whole number from {low} to {high}, got {shown(value)}."
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise gr.Error(message)
    number = value
    if isinstance(value, str):
        try:
            number = int(value.strip())  # exact, also for seeds beyond float precision
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise gr.Error(message) from None
    if isinstance(number, float):
        if not number.is_integer():  # also NaN and infinity
            raise gr.Error(message)
        number = int(number)
    if not low <= number <= high:
        raise gr.Error(message)
    return number


def check_float(name: str, value, low: float, high: float) -> float:
    """A finite number in [low, high], or a gr.Error naming the field."""
    message = f"{name} must be a number from {low:g} to {high:g}, got {shown(value)}."
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise gr.Error(message)
    try:
        number = float(value)
    except ValueError:
        raise gr.Error(message) from None
    if not low <= number <= high:  # also false for NaN
        raise gr.Error(message)
    return number


def check_choice(name: str, value, choices: dict):
    """choices[value] for one of the keys of `choices`, or a gr.Error listing them."""
    if not isinstance(value, str) or value not in choices:
        raise gr.Error(f"{name} must be one of {', '.join(choices)}, got {shown(value)}.")
    return choices[value]


def check_sampling_fields(scheduler, steps, eta, num_images, seed) -> tuple:
    """The sampling controls both tabs share, checked; a gr.Error names the first bad field."""
    check_choice("Scheduler", scheduler, SCHEDULERS)
    steps = check_int("Steps", steps, 1, MAX_STEPS)
    eta = check_float("Eta", eta, 0.0, 1.0)
    num_images = check_int("Number of images", num_images, 1, MAX_IMAGES)
    seed = check_int("Seed", seed, 0, MAX_SEED)
    return scheduler, steps, eta, num_images, seed


def check_prompt(name: str, prompt) -> str:
    """Text of at most MAX_PROMPT_CHARS characters without control characters (tabs and newlines allowed)."""
    if prompt is None and name == "Negative prompt":
        return ""
    if not isinstance(prompt, str):
        raise gr.Error(f"{name} must be text, got {shown(prompt)}.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise gr.Error(f"{name} must be at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}.")
    for position, char in enumerate(prompt):
        if unicodedata.category(char) == "Cc" and char not in "\t\n\r":
            raise gr.Error(f"{name} must not contain control characters, found U+{ord(char):04X} at position {position}.")
    if prompt.strip() and not any(char.isalnum() for char in prompt):
        gr.Warning(f"{name} has no letters or digits: the model knows emoji by their names (e.g. 'red heart'), not as pictures.")
    return prompt


# ---- the generation handlers (their inputs arrive unprocessed: these checks are the only ones, and they name the field) ----


@gpu
def generate_unconditional(model: str, scheduler: str, steps, eta, num_images, seed, progress=gr.Progress()):
    """Sample unconditional images, streaming predicted-x_0 previews."""
    pipe = check_choice("Model", model, UNCOND_MODELS)  # a name from the list, never a path
    scheduler, steps, eta, num_images, seed = check_sampling_fields(scheduler, steps, eta, num_images, seed)

    def run(callback):
        return pipe(num_images=num_images, num_inference_steps=steps, scheduler=SCHEDULERS[scheduler][0], eta=eta, seed=seed, callback=callback)

    yield from stream_to_page(run, steps, seed, num_images, progress)


@gpu
def generate_text_to_image(prompt, negative_prompt, guidance_scale, scheduler: str, steps, eta, num_images, seed, progress=gr.Progress()):
    """Sample images for a prompt with classifier-free guidance, streaming predicted-x_0 previews."""
    prompt = check_prompt("Prompt", prompt)
    negative_prompt = check_prompt("Negative prompt", negative_prompt)
    guidance_scale = check_float("Guidance scale", guidance_scale, 0.0, MAX_GUIDANCE)
    scheduler, steps, eta, num_images, seed = check_sampling_fields(scheduler, steps, eta, num_images, seed)

    def run(callback):
        return TXT2IMG(prompt=prompt, negative_prompt=negative_prompt or None, num_images=num_images, num_inference_steps=steps,
                       scheduler=SCHEDULERS[scheduler][0], eta=eta, guidance_scale=guidance_scale, seed=seed, callback=callback)

    yield from stream_to_page(run, steps, seed, num_images, progress)


def suggest_captions(prompt: str):
    """The training captions closest to what is typed, so a user learns the model's vocabulary."""
    fits = isinstance(prompt, str) and len(prompt) <= MAX_PROMPT_CHARS
    return gr.update(choices=TXT2IMG.closest_captions(prompt, k=6) if fits else [], value=None)


# ---- results ----


def result_folder() -> str:
    """A fresh folder for one request's PNGs. Beyond KEEP_RESULTS, the oldest folders no request is writing go
    (Gradio has copied their files to its cache by then), so the disk use stays bounded."""
    with FOLDERS_LOCK:
        idle = sorted((entry for entry in os.scandir(OUTPUT_DIR) if entry.is_dir() and entry.path not in FOLDERS_IN_USE),
                      key=lambda entry: entry.stat().st_mtime)
        for entry in idle[: max(0, len(idle) - KEEP_RESULTS + 1)]:
            shutil.rmtree(entry.path, ignore_errors=True)
        folder = tempfile.mkdtemp(dir=OUTPUT_DIR)
        FOLDERS_IN_USE.add(folder)
    return folder


def release_folder(folder: str) -> None:
    """The request is done with `folder`: it may be removed once it is among the oldest."""
    with FOLDERS_LOCK:
        FOLDERS_IN_USE.discard(folder)


def save_png(image: Image.Image, folder: str, name: str, scale: int = 4, settings: dict | None = None) -> str:
    """Write `image` enlarged `scale` times (nearest: crisp pixels) as folder/name.png, with settings in text chunks.

    The page gets files, never PIL images: Gradio writes PIL images to its cache in place, so two requests making
    the same picture (same seed) could overwrite a file while it is sent; files it copies under a new name.
    """
    path = os.path.join(folder, f"{name}.png")  # names made here from checked numbers: no user text in paths
    save_with_settings(image.resize((image.width * scale, image.height * scale), 0), path, settings or {})
    return path


def save_results(result, folder: str) -> list[tuple[str, str]]:
    """Each image as PNG with its settings in text chunks; gallery entries (path, caption)."""
    entries = []
    for i, image in enumerate(result.images):
        path = save_png(image, folder, f"emoji_{result.seed}_{i}", settings={**result.settings, "index": i})
        entries.append((path, f"seed {result.seed} #{i}"))
    return entries


def preview_entries(x0: torch.Tensor, folder: str, step: int) -> list:
    """Predicted x_0 of the current step as enlarged PNGs."""
    from uncond.pipeline import to_pil

    return [save_png(image, folder, f"preview_{step}_{i}") for i, image in enumerate(to_pil(x0))]


def strip_entries(strip: list, folder: str) -> list:
    """The reverse process of the first image: x_t frames, then the predicted x_0 frames, captioned by step."""
    from uncond.pipeline import to_pil

    x_t_row = [(save_png(to_pil(x_t)[0], folder, f"x_t_{step}"), f"x_t after step {step}") for step, x_t, _ in strip]
    x_0_row = [(save_png(to_pil(x_0)[0], folder, f"x_0_{step}"), f"predicted x_0 at step {step}") for step, _, x_0 in strip]
    return x_t_row + x_0_row


# ---- "How it works" and restoring settings: uploaded files ----


def load_picture(path: str) -> Image.Image:
    """An uploaded picture: read only when it is a PNG, JPEG, WebP or GIF of at most MAX_PICTURE_SIDE pixels a side."""
    try:
        with Image.open(path) as image:  # the header only; Pillow refuses decompression bombs here
            if image.format not in ("PNG", "JPEG", "WEBP", "GIF"):
                raise gr.Error(f"Picture must be a PNG, JPEG, WebP or GIF image, got {image.format}.")
            if max(image.size) > MAX_PICTURE_SIDE:
                raise gr.Error(f"Picture must be at most {MAX_PICTURE_SIDE} pixels a side, got {image.width}x{image.height}.")
            image.load()
            return image.copy()
    except gr.Error:  # a subclass of ValueError: one of the messages above
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise gr.Error(f"Picture could not be read ({type(error).__name__}).") from error


def show_forward_process(picture, timestep, model: str):
    """x_t of the picked picture (a file path, or an image) at timestep t, under the chosen model's noise schedule."""
    if picture is None:
        raise gr.Error("Pick or upload a picture first.")
    image = picture if isinstance(picture, Image.Image) else load_picture(picture)
    timestep = check_int("Timestep t", timestep, 0, MAX_STEPS - 1)
    pipe = UNCOND_MODELS.get(model) or UNCOND_MODELS[UNCOND_DEFAULT]
    noisy = forward_diffuse(image, timestep, pipe.scheduler_config, pipe.unet.config.sample_size)
    folder = result_folder()
    try:
        return save_png(noisy, folder, f"x_{timestep}", scale=256 // noisy.width)
    finally:
        release_folder(folder)


def schedule_table(model: str):
    """The noise schedule of a model as a long table for gr.LinePlot."""
    import pandas as pd

    pipe = UNCOND_MODELS.get(model) or UNCOND_MODELS[UNCOND_DEFAULT]
    schedule = noise_schedule(pipe.scheduler_config)
    rows = []
    for name, label in (("alpha_bar", "alpha-bar_t (signal kept)"), ("noise_level", "sqrt(1 - alpha-bar_t) (noise std)"), ("beta", "beta_t")):
        rows += [{"t": t, "value": v, "curve": label} for t, v in zip(schedule["t"], schedule[name])]
    return pd.DataFrame(rows)


def restore_settings(file, with_prompt: bool) -> list:
    """Control values from a PNG this app made: scheduler, steps, eta, seed (and prompt, negative prompt, guidance), each checked."""
    if file is None:
        return [gr.skip()] * (7 if with_prompt else 4)
    try:
        settings = read_settings(file if isinstance(file, str) else file.name)
    except ValueError as error:
        raise gr.Error(f"Settings file: {error}.")
    labels = {name: label for label, (name, _) in SCHEDULERS.items()}
    checks = {
        "scheduler": lambda v: check_choice("Scheduler", v, labels),
        "steps": lambda v: check_int("Steps", v, 1, MAX_STEPS),
        "eta": lambda v: check_float("Eta", v, 0.0, 1.0),
        "seed": lambda v: check_int("Seed", v, 0, MAX_SEED),
        "prompt": lambda v: check_prompt("Prompt", v),
        "negative_prompt": lambda v: check_prompt("Negative prompt", v),
        "guidance_scale": lambda v: check_float("Guidance scale", v, 0.0, MAX_GUIDANCE),
    }
    names = (["prompt", "negative_prompt", "guidance_scale"] if with_prompt else []) + ["scheduler", "steps", "eta", "seed"]
    values = []
    for name in names:
        try:
            values.append(checks[name](settings[name]) if name in settings else gr.skip())
        except gr.Error as error:
            raise gr.Error(f"Settings file: {error.message}") from None
    return values


# ---- the page ----


@dataclass
class SamplingControls:
    """The controls and outputs both generation tabs share."""

    scheduler: gr.Radio
    steps: gr.Slider
    eta: gr.Slider
    num_images: gr.Slider
    seed: gr.Number
    generate: gr.Button
    stop: gr.Button
    restore: gr.File


def sampling_controls() -> SamplingControls:
    """Scheduler, steps (defaults follow the scheduler), eta (DDIM only), number of images, seed with a random button, Generate and Stop."""
    scheduler = gr.Radio(list(SCHEDULERS), value="DDIM", label="Scheduler")
    steps = gr.Slider(1, MAX_STEPS, value=SCHEDULERS["DDIM"][1], step=1, label="Steps")
    eta = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Eta (DDIM: 0 deterministic, 1 like DDPM)")
    num_images = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Number of images")
    with gr.Row():
        seed = gr.Number(value=0, precision=0, label="Seed")
        randomize = gr.Button("🎲 Random seed", size="sm")
    with gr.Row():
        generate = gr.Button("Generate", variant="primary")
        stop = gr.Button("Stop")
    restore = gr.File(label="Drop a PNG made here to restore its settings", file_types=[".png"], height=80)
    # .input, not .change: a restored scheduler must not reset the restored steps
    scheduler.input(lambda s: (gr.update(value=SCHEDULERS[s][1]), gr.update(visible=s == "DDIM")), scheduler, [steps, eta], api_visibility="private")
    randomize.click(lambda: random.randint(0, 2**31 - 1), None, seed, api_visibility="private")
    return SamplingControls(scheduler, steps, eta, num_images, seed, generate, stop, restore)


def result_outputs() -> list:
    """Gallery, the seed used and the settings as JSON."""
    gallery = gr.Gallery(label="Images", columns=4, format="png")
    used_seed = gr.Number(label="Seed used", precision=0, interactive=False)
    settings = gr.Code(label="Settings (also in each PNG)", language="json")
    return [gallery, settings, used_seed]


# Gradio's cache (the PNGs it serves): every 10 minutes, files older than an hour go
with gr.Blocks(title="Emoji from noise", delete_cache=(600, 3600)) as demo:
    gr.Markdown(DESCRIPTION)
    gr.Markdown(DEVICE_NOTE)
    with gr.Tab("Unconditional"):
        with gr.Row():
            with gr.Column(scale=1):
                u_model = gr.Dropdown(list(UNCOND_MODELS), value=UNCOND_DEFAULT, label="Model", visible=len(UNCOND_MODELS) > 1)
                u = sampling_controls()
            with gr.Column(scale=2):
                u_outputs = result_outputs()
    with gr.Tab("Text to image"):
        with gr.Row():
            with gr.Column(scale=1):
                t_prompt = gr.Textbox(label="Prompt", value="red heart", max_lines=2, max_length=MAX_PROMPT_CHARS)
                t_suggestions = gr.Radio(choices=[], label="Closest captions the model was trained on (pick one to use it)",
                                         visible=bool(TXT2IMG.captions))
                t_negative = gr.Textbox(label="Negative prompt", value="", max_lines=2, max_length=MAX_PROMPT_CHARS)
                t_guidance = gr.Slider(0.0, MAX_GUIDANCE, value=4.0, step=0.5, label="Guidance scale (1: no guidance)")
                t = sampling_controls()
                gr.Examples(PROMPT_EXAMPLES, t_prompt)
            with gr.Column(scale=2):
                t_outputs = result_outputs()
        t_prompt.change(suggest_captions, t_prompt, t_suggestions, trigger_mode="always_last", api_visibility="private", concurrency_id="suggest")
        t_suggestions.input(lambda caption: caption, t_suggestions, t_prompt, api_visibility="private")
        t.restore.change(lambda f: restore_settings(f, True), t.restore, [t_prompt, t_negative, t_guidance, t.scheduler, t.steps, t.eta, t.seed],
                         api_visibility="private")

    with gr.Tab("How it works"):
        gr.Markdown(
            "**Forward process.** Training takes a picture x_0, picks a timestep t and mixes in Gaussian noise: "
            "x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) noise. The network learns to predict that noise. "
            "Move t to see what it is shown."
        )
        with gr.Row():
            with gr.Column():
                # a file path, decoded by load_picture with its limits (image_mode None: Gradio passes the upload on undecoded)
                h_image = gr.Image(type="filepath", image_mode=None, label="Picture x_0", height=256)
                gr.Examples(sorted(os.path.join(EXAMPLES_DIR, f) for f in os.listdir(EXAMPLES_DIR) if f.endswith(".png")), h_image)
                h_t = gr.Slider(0, MAX_STEPS - 1, value=250, step=1, label="Timestep t")
            with gr.Column():
                h_noisy = gr.Image(label="x_t", height=256)
                h_plot = gr.LinePlot(schedule_table(UNCOND_DEFAULT), x="t", y="value", color="curve", title="Noise schedule", height=260)
        gr.Markdown(
            "**Reverse process.** Sampling starts from pure noise x_T and removes a little of it at each step. "
            "Top row: x_t of the first image of your last generation (either tab); bottom row: the network's guess of the final picture at that step."
        )
        h_strip = gr.Gallery(label="Last generation, step by step", columns=STRIP_FRAMES, height=300)
        for trigger in (h_image.change, h_t.release):
            trigger(show_forward_process, [h_image, h_t, u_model], h_noisy, api_visibility="private")

    # preprocess=False: the handlers get the values as sent and check every field themselves, so an API caller's
    # out-of-range slider value gets the same message, naming the field and its range, as the page
    u_event = u.generate.click(generate_unconditional, [u_model, u.scheduler, u.steps, u.eta, u.num_images, u.seed], u_outputs + [h_strip],
                               api_name="unconditional", concurrency_limit=CONCURRENCY, concurrency_id="sampling", preprocess=False)
    u.stop.click(None, None, None, cancels=[u_event], api_visibility="private")
    t_event = t.generate.click(generate_text_to_image, [t_prompt, t_negative, t_guidance, t.scheduler, t.steps, t.eta, t.num_images, t.seed],
                               t_outputs + [h_strip], api_name="text_to_image", concurrency_limit=CONCURRENCY, concurrency_id="sampling",
                               preprocess=False)
    t.stop.click(None, None, None, cancels=[t_event], api_visibility="private")
    u.restore.change(lambda f: restore_settings(f, False), u.restore, [u.scheduler, u.steps, u.eta, u.seed], api_visibility="private")
    u_model.change(schedule_table, u_model, h_plot, api_visibility="private")


def launch_options(args) -> dict:
    """How the app is served: loopback unless GRADIO_SERVER_NAME says otherwise, no public link unless --share,
    uploads size-limited, no extra folders served (no allowed_paths)."""
    return {
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        "share": bool(args.share),
        "max_file_size": MAX_UPLOAD,
        "show_error": False,  # only gr.Error messages reach the page, never a stack trace
    }


if __name__ == "__main__":
    # encode the training captions for the suggestions in the background, not on the first keystroke
    threading.Thread(target=TXT2IMG.closest_captions, args=("warm up",), daemon=True).start()
    demo.queue(max_size=QUEUE_SIZE).launch(**launch_options(ARGS))
