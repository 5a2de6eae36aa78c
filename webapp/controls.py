"""The controls the page's tabs share: their limits, their checks (into the typed settings of `webapp.models`) and
their layout, so that every tab module builds and checks a field the same way.

    sampling = sampling_fields(scheduler, steps, eta, num_images, seed)       # a ValueError names the first bad field
    controls = sampling_controls(eta_default=1.0)                          # inside a gr.Blocks
"""

import random
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from uncond.checks import MAX_SEED, check_choice, check_float, check_int, check_text
from webapp.checks import warn_without_letters
from webapp.models import ANY_STYLE, Prompt, Sampling

MAX_STEPS = 1000
MAX_IMAGES = 16
MAX_GUIDANCE = 20.0
MAX_PROMPT_CHARS = 1000  # the tokenizer keeps 32 tokens; this only bounds the work a request can ask for
MAX_PICTURE_SIDE = 2048  # pixels; larger pictures are refused before they are decoded
Image.MAX_IMAGE_PIXELS = (
    MAX_PICTURE_SIDE**2
)  # Pillow's decompression-bomb guard: a warning above, an error above twice this
# picker label -> (scheduler name in the pipelines, default steps); the last two are diffusers' samplers in our loop
SCHEDULER_CHOICES = {
    "DDPM": ("ddpm", 1000),
    "DDIM": ("ddim", 50),
    "DPM-Solver++ (diffusers)": ("dpm++", 20),
    "Euler (diffusers)": ("euler", 30),
}


def sampling_fields(scheduler, steps, eta, num_images, seed) -> Sampling:
    """The sampling controls both tabs share, checked; the ValueError names the first bad field."""
    name, _ = check_choice("Scheduler", scheduler, SCHEDULER_CHOICES)
    return Sampling(
        scheduler=name,
        steps=check_int("Steps", steps, 1, MAX_STEPS, parse_text=True),
        eta=check_float("Eta", eta, 0.0, 1.0, parse_text=True),
        num_images=check_int("Number of images", num_images, 1, MAX_IMAGES, parse_text=True),
        seed=check_int("Seed", seed, 0, MAX_SEED, parse_text=True),
    )


def prompt_fields(
    prompt, negative_prompt, guidance_scale, thresholding, ratio, max_value, style, styles: list[str]
) -> Prompt:
    """The Text to image tab's own controls, checked; `styles` are the style names the model knows."""
    prompt = check_text("Prompt", prompt, MAX_PROMPT_CHARS)
    warn_without_letters("Prompt", prompt)
    negative_prompt = "" if negative_prompt is None else negative_prompt
    return Prompt(
        prompt=prompt,
        negative_prompt=check_text("Negative prompt", negative_prompt, MAX_PROMPT_CHARS),
        guidance_scale=check_float("Guidance scale", guidance_scale, 0.0, MAX_GUIDANCE, parse_text=True),
        thresholding=check_choice("Dynamic thresholding", thresholding, {True: True, False: False}),
        dynamic_thresholding_ratio=check_float("Thresholding percentile", ratio, 0.5, 1.0, parse_text=True),
        sample_max_value=check_float("Thresholding max", max_value, 1.0, 10.0, parse_text=True),
        style=check_choice("Style", style, styles or [ANY_STYLE]),
    )


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


def scheduler_controls(eta_default: float, choices: dict = SCHEDULER_CHOICES) -> tuple[gr.Radio, gr.Slider, gr.Slider]:
    """Scheduler (of `choices`, a part of SCHEDULER_CHOICES), steps (its default follows the scheduler) and eta
    (shown for DDIM only)."""
    scheduler = gr.Radio(list(choices), value="DDIM", label="Scheduler")
    steps = gr.Slider(1, MAX_STEPS, value=SCHEDULER_CHOICES["DDIM"][1], step=1, label="Steps")
    eta = gr.Slider(0.0, 1.0, value=eta_default, step=0.05, label="Eta (DDIM: 0 deterministic, 1 like DDPM)")
    # .input, not .change: a restored scheduler must not reset the restored steps
    scheduler.input(
        lambda s: (gr.update(value=SCHEDULER_CHOICES[s][1]), gr.update(visible=s == "DDIM")),
        scheduler,
        [steps, eta],
        api_visibility="private",
    )
    return scheduler, steps, eta


def seed_control(label: str = "Seed", value: int = 0) -> gr.Number:
    """A seed field with a random-seed button beside it."""
    with gr.Row():
        seed = gr.Number(value=value, precision=0, label=label)
        randomize = gr.Button("🎲 Random seed", size="sm")
    randomize.click(lambda: random.randint(0, 2**31 - 1), None, seed, api_visibility="private")
    return seed


def sampling_controls(eta_default: float) -> SamplingControls:
    """Scheduler, steps, eta, number of images, seed with a random button, Generate and Stop, the settings drop."""
    scheduler, steps, eta = scheduler_controls(eta_default)
    num_images = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Number of images")
    seed = seed_control()
    with gr.Row():
        generate = gr.Button("Generate", variant="primary")
        stop = gr.Button("Stop")
    restore = gr.File(label="Drop a PNG made here to restore its settings", file_types=[".png"], height=80)
    return SamplingControls(scheduler, steps, eta, num_images, seed, generate, stop, restore)


def result_outputs() -> list:
    """Gallery, the settings as JSON and the seed used."""
    # never an upload field, even where a button reads it (the edit tabs: "use the first result")
    gallery = gr.Gallery(label="Images", columns=4, format="png", interactive=False)
    used_seed = gr.Number(label="Seed used", precision=0, interactive=False)
    settings = gr.Code(label="Settings (also in each PNG)", language="json")
    return [gallery, settings, used_seed]
