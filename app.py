"""The web demo: emoji from noise, unconditionally or from a prompt.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_PORT to change)

UI only: the models, their sampling loops and their checks live in `uncond/` and `txt2img/`.
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
import queue
import random
import tempfile
import threading
import time
from dataclasses import dataclass

import gradio as gr
import torch

from uncond.pipeline import MAX_SEED, UnconditionalPipeline, default_device, forward_diffuse, noise_schedule
from uncond.sample import read_settings, save_with_settings

HERE = os.path.dirname(os.path.abspath(__file__))
UNCOND_WEIGHTS = os.path.join(HERE, "weights", "uncond")
TXT2IMG_WEIGHTS = os.path.join(HERE, "weights", "txt2img")
CLIP_WEIGHTS = os.path.join(HERE, "weights", "clip")
PROMPT_EXAMPLES = ["red heart", "blue heart", "cat face", "pizza", "flag: Japan", "grinning face", "rocket", "sun"]
EXAMPLES_DIR = os.path.join(HERE, "assets", "examples")
PREVIEW_EVERY = 5  # steps between live previews
STRIP_FRAMES = 8  # frames of the last generation shown in "How it works"
MAX_IMAGES = 16
MAX_GUIDANCE = 20.0
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


def load_uncond() -> tuple[UnconditionalPipeline, str]:
    """The shipped unconditional model, or an untrained one (with a notice) before weights exist."""
    device = default_device()
    dtype = torch.float32
    if os.path.isfile(os.path.join(UNCOND_WEIGHTS, "config.json")):
        return UnconditionalPipeline.from_pretrained(UNCOND_WEIGHTS, device=device, dtype=dtype), ""
    return UnconditionalPipeline.untrained(device=device), "No trained weights in weights/uncond: this model is freshly initialised and draws noise."


def parse_args():
    parser = argparse.ArgumentParser(description="The emoji diffusion demo.")
    parser.add_argument("--uncond-model", action="append", default=[], metavar="PATH_OR_HUB_ID",
                        help="also offer this unconditional model (our format or a diffusers UNet2DModel / DDPMPipeline folder or hub id); repeatable")
    args, _ = parser.parse_known_args()
    return args


def load_uncond_models(extra: list[str]) -> tuple[dict, str]:
    """The shipped model first, then each model named on the command line, loaded once."""
    shipped, notice = load_uncond()
    models = {"emoji (shipped)" if not notice else "emoji (untrained)": shipped}
    for name in extra:
        try:
            models[name] = UnconditionalPipeline.from_pretrained(name, device=shipped.device)
        except (ValueError, OSError) as error:
            raise SystemExit(f"--uncond-model {name!r} could not be loaded: {error}")
    return models, notice


def load_txt2img():
    """The shipped text-to-image pipeline; an untrained UNet on the shipped CLIP before it exists; None without a CLIP."""
    from txt2img.pipeline import TextToImagePipeline

    device = default_device()
    if os.path.isdir(os.path.join(TXT2IMG_WEIGHTS, "unet")):
        pipe = TextToImagePipeline.from_pretrained(TXT2IMG_WEIGHTS, device=device)
        # encode the training captions for the suggestions in the background, not on the first keystroke
        threading.Thread(target=pipe.closest_captions, args=("warm up",), daemon=True).start()
        return pipe, ""
    if os.path.isfile(os.path.join(CLIP_WEIGHTS, "config.json")):
        return TextToImagePipeline.untrained(CLIP_WEIGHTS, device=device), "No trained weights in weights/txt2img: this UNet is freshly initialised and draws noise."
    return None, "No text-to-image model yet: weights/txt2img and weights/clip are missing."


UNCOND_MODELS, UNCOND_NOTICE = load_uncond_models(parse_args().uncond_model)
TXT2IMG, TXT2IMG_NOTICE = load_txt2img()
UNCOND_DEFAULT = next(iter(UNCOND_MODELS))
DEVICE = next(iter(UNCOND_MODELS.values())).device
DEVICE_NOTE = f"Running on **{DEVICE.type.upper()}**" + (f" ({torch.cuda.get_device_name()})" if DEVICE.type == "cuda" else "")


def stream_samples(run, total_steps: int):
    """Run `run(callback)` in a worker thread; yield ("preview", x0 tensor, step) every few steps, then ("done", result, strip).

    `strip` holds (step, x_t, predicted x_0) of the first image at up to STRIP_FRAMES evenly spaced steps.
    Closing the generator (Stop, or a client that went away) makes the callback return True,
    so the worker ends within one step.
    """
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    strip = []
    strip_steps = {round(i * (total_steps - 1) / max(1, STRIP_FRAMES - 1)) for i in range(STRIP_FRAMES)}

    def callback(step, timestep, x_t, pred_original_sample):
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

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        while True:
            kind, payload, step = events.get()
            if kind == "error":
                raise payload
            yield kind, payload, step
            if kind == "done":
                return
    finally:
        stop.set()


def check_int(name: str, value, low: int, high: int) -> int:
    """A whole number in [low, high], or a gr.Error naming the field."""
    if value is None or isinstance(value, bool):
        raise gr.Error(f"{name} must be a whole number from {low} to {high}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a whole number from {low} to {high}, got {value!r}.")
    if not number.is_integer() or not low <= number <= high:
        raise gr.Error(f"{name} must be a whole number from {low} to {high}, got {value!r}.")
    return int(number)


def save_results(result) -> list[tuple[str, str]]:
    """Write each image as PNG with its settings in text chunks; gallery entries (path, caption)."""
    folder = tempfile.mkdtemp(prefix="emoji-")
    entries = []
    for i, image in enumerate(result.images):
        settings = {**result.settings, "index": i}
        path = os.path.join(folder, f"emoji_{result.seed}_{i}.png")
        save_with_settings(image.resize((image.width * 4, image.height * 4), 0), path, settings)  # 0: nearest, crisp pixels
        entries.append((path, f"seed {result.seed} #{i}"))
    return entries


def preview_entries(x0: torch.Tensor) -> list:
    """Predicted x_0 of the current step as PIL images, enlarged."""
    from uncond.pipeline import to_pil

    return [image.resize((image.width * 4, image.height * 4), 0) for image in to_pil(x0)]


@gpu
def generate_unconditional(model: str, scheduler: str, steps, eta, num_images, seed, progress=gr.Progress()):
    """Sample unconditional images, streaming predicted-x_0 previews."""
    if model not in UNCOND_MODELS:
        raise gr.Error(f"Model must be one of {', '.join(UNCOND_MODELS)}, got {model!r}.")
    pipe = UNCOND_MODELS[model]
    scheduler, steps, eta, num_images, seed = check_sampling_fields(scheduler, steps, eta, num_images, seed)

    def run(callback):
        return pipe(num_images=num_images, num_inference_steps=steps, scheduler=SCHEDULERS[scheduler][0], eta=eta, seed=seed, callback=callback)

    yield from stream_to_page(run, steps, seed, progress)


def check_sampling_fields(scheduler, steps, eta, num_images, seed) -> tuple:
    """The sampling controls both tabs share, checked; a gr.Error names the first bad field."""
    if scheduler not in SCHEDULERS:
        raise gr.Error(f"Scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}.")
    steps = check_int("Steps", steps, 1, 1000)
    num_images = check_int("Number of images", num_images, 1, MAX_IMAGES)
    seed = check_int("Seed", seed, 0, MAX_SEED)
    try:
        eta = float(eta)
    except (TypeError, ValueError):
        raise gr.Error(f"Eta must be a number from 0 to 1, got {eta!r}.")
    if not 0.0 <= eta <= 1.0:
        raise gr.Error(f"Eta must be a number from 0 to 1, got {eta!r}.")
    return scheduler, steps, eta, num_images, seed


@gpu
def generate_text_to_image(prompt, negative_prompt, guidance_scale, scheduler: str, steps, eta, num_images, seed, progress=gr.Progress()):
    """Sample images for a prompt with classifier-free guidance, streaming predicted-x_0 previews."""
    if TXT2IMG is None:
        raise gr.Error(TXT2IMG_NOTICE)
    if not isinstance(prompt, str) or not isinstance(negative_prompt or "", str):
        raise gr.Error("Prompt and negative prompt must be text.")
    try:
        guidance_scale = float(guidance_scale)
    except (TypeError, ValueError):
        raise gr.Error(f"Guidance scale must be a number from 0 to {MAX_GUIDANCE}, got {guidance_scale!r}.")
    if not 0.0 <= guidance_scale <= MAX_GUIDANCE:  # also false for NaN
        raise gr.Error(f"Guidance scale must be a number from 0 to {MAX_GUIDANCE}, got {guidance_scale!r}.")
    scheduler, steps, eta, num_images, seed = check_sampling_fields(scheduler, steps, eta, num_images, seed)

    def run(callback):
        return TXT2IMG(prompt=prompt, negative_prompt=negative_prompt or None, num_images=num_images, num_inference_steps=steps,
                       scheduler=SCHEDULERS[scheduler][0], eta=eta, guidance_scale=guidance_scale, seed=seed, callback=callback)

    yield from stream_to_page(run, steps, seed, progress)


def suggest_captions(prompt: str):
    """The training captions closest to what is typed, so a user learns the model's vocabulary."""
    captions = TXT2IMG.closest_captions(prompt, k=6) if TXT2IMG is not None and isinstance(prompt, str) else []
    return gr.update(choices=captions, value=None)


def stream_to_page(run, steps: int, seed: int, progress):
    """Page outputs while sampling: previews with progress, then the PNGs, their settings, the seed and the reverse-process strip."""
    started = time.perf_counter()
    for kind, payload, extra in stream_samples(run, steps):
        if kind == "preview":
            rate = extra / (time.perf_counter() - started)
            progress((extra, steps), desc=f"{rate:.1f} steps/s, {(steps - extra) / rate:.0f} s left")
            yield preview_entries(payload), f"step {extra}/{steps} ({rate:.1f} steps/s)", seed, gr.skip()
        else:
            yield save_results(payload), json.dumps(payload.settings, indent=2), seed, strip_entries(extra)


def strip_entries(strip: list) -> list:
    """The reverse process of the first image: x_t frames, then the predicted x_0 frames, captioned by step."""
    from uncond.pipeline import to_pil

    x_t_row = [(to_pil(x_t)[0].resize((128, 128), 0), f"x_t after step {step}") for step, x_t, _ in strip]
    x_0_row = [(to_pil(x_0)[0].resize((128, 128), 0), f"predicted x_0 at step {step}") for step, _, x_0 in strip]
    return x_t_row + x_0_row


def show_forward_process(image, timestep, model: str):
    """x_t of the picked picture at timestep t, under the chosen model's noise schedule."""
    if image is None:
        raise gr.Error("Pick or upload a picture first.")
    timestep = check_int("Timestep t", timestep, 0, 999)
    pipe = UNCOND_MODELS.get(model) or UNCOND_MODELS[UNCOND_DEFAULT]
    noisy = forward_diffuse(image, timestep, pipe.scheduler_config, pipe.unet.config.sample_size)
    return noisy.resize((256, 256), 0)


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
    """Control values from a PNG this app made: scheduler, steps, eta, seed (and prompt, negative prompt, guidance)."""
    if file is None:
        return [gr.skip()] * (7 if with_prompt else 4)
    try:
        settings = read_settings(file if isinstance(file, str) else file.name)
    except ValueError as error:
        raise gr.Error(f"Settings file: {error}.")
    labels = {name: label for label, (name, _) in SCHEDULERS.items()}
    values = [labels.get(settings.get("scheduler"), gr.skip()), settings.get("steps", gr.skip()), settings.get("eta", gr.skip()),
              settings.get("seed", gr.skip())]
    if with_prompt:
        values = [settings.get("prompt", gr.skip()), settings.get("negative_prompt", gr.skip()), settings.get("guidance_scale", gr.skip())] + values
    return values


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
    steps = gr.Slider(1, 1000, value=SCHEDULERS["DDIM"][1], step=1, label="Steps")
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


with gr.Blocks(title="Emoji from noise") as demo:
    gr.Markdown(DESCRIPTION)
    gr.Markdown(DEVICE_NOTE + (f"  \n⚠️ {UNCOND_NOTICE}" if UNCOND_NOTICE else ""))
    with gr.Tab("Unconditional"):
        with gr.Row():
            with gr.Column(scale=1):
                u_model = gr.Dropdown(list(UNCOND_MODELS), value=UNCOND_DEFAULT, label="Model", visible=len(UNCOND_MODELS) > 1)
                u = sampling_controls()
            with gr.Column(scale=2):
                u_outputs = result_outputs()
    with gr.Tab("Text to image"):
        if TXT2IMG_NOTICE:
            gr.Markdown(f"⚠️ {TXT2IMG_NOTICE}")
        with gr.Row():
            with gr.Column(scale=1):
                t_prompt = gr.Textbox(label="Prompt", value="red heart", max_lines=2)
                t_suggestions = gr.Radio(choices=[], label="Closest captions the model was trained on (pick one to use it)",
                                         visible=TXT2IMG is not None and bool(TXT2IMG.captions))
                t_negative = gr.Textbox(label="Negative prompt", value="", max_lines=2)
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
                h_image = gr.Image(type="pil", label="Picture x_0", image_mode="RGBA", height=256)
                gr.Examples(sorted(os.path.join(EXAMPLES_DIR, f) for f in os.listdir(EXAMPLES_DIR) if f.endswith(".png")), h_image)
                h_t = gr.Slider(0, 999, value=250, step=1, label="Timestep t")
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

    u_event = u.generate.click(generate_unconditional, [u_model, u.scheduler, u.steps, u.eta, u.num_images, u.seed], u_outputs + [h_strip],
                               api_name="unconditional", concurrency_limit=1, concurrency_id="sampling")
    u.stop.click(None, None, None, cancels=[u_event], api_visibility="private")
    t_event = t.generate.click(generate_text_to_image, [t_prompt, t_negative, t_guidance, t.scheduler, t.steps, t.eta, t.num_images, t.seed],
                               t_outputs + [h_strip], api_name="text_to_image", concurrency_limit=1, concurrency_id="sampling")
    t.stop.click(None, None, None, cancels=[t_event], api_visibility="private")
    u.restore.change(lambda f: restore_settings(f, False), u.restore, [u.scheduler, u.steps, u.eta, u.seed], api_visibility="private")
    u_model.change(schedule_table, u_model, h_plot, api_visibility="private")


if __name__ == "__main__":
    demo.queue(max_size=32).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        share=False,
    )
