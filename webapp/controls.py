"""The controls the page's tabs share: their limits, their checks (into the typed settings of `webapp.models`) and
their layout, so that every tab module builds and checks a field the same way.

    sampling = sampling_fields(scheduler, steps, eta, num_images, seed)       # a ValueError names the first bad field
    controls = sampling_controls(eta_default=1.0)                          # inside a gr.Blocks
"""

import random
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from txt2img.rerank import DEFAULT_CANDIDATES, MAX_CANDIDATES
from uncond.checks import MAX_SEED, check_choice, check_float, check_int, check_text
from uncond.upscale_pipeline import DEFAULT_STEPS
from webapp.checks import warn_without_letters
from webapp.models import ANY_STYLE, Prompt, Sampling, UpscaleDefaults, Upscaling, Variation

MAX_STEPS = 1000
MAX_IMAGES = 16
MAX_GUIDANCE = 20.0
MAX_PROMPT_CHARS = 1000  # the tokenizer keeps 32 tokens; this only bounds the work a request can ask for
MAX_PICTURE_SIDE = 2048  # pixels; larger pictures are refused before they are decoded
Image.MAX_IMAGE_PIXELS = (
    MAX_PICTURE_SIDE**2
)  # Pillow's decompression-bomb guard: a warning above, an error above twice this
# picker label -> (scheduler name in the pipelines, default steps); the last two are diffusers' samplers in our loop
ON_OFF = {True: True, False: False}  # a checkbox's two values, for check_choice
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
    prompt, negative_prompt, guidance_scale, thresholding, ratio, max_value, style, styles: list[str], num_candidates=1
) -> Prompt:
    """The Text to image tab's own controls, checked; `styles` are the style names the model knows."""
    prompt = check_text("Prompt", prompt, MAX_PROMPT_CHARS)
    warn_without_letters("Prompt", prompt)
    negative_prompt = "" if negative_prompt is None else negative_prompt
    return Prompt(
        prompt=prompt,
        negative_prompt=check_text("Negative prompt", negative_prompt, MAX_PROMPT_CHARS),
        guidance_scale=check_float("Guidance scale", guidance_scale, 0.0, MAX_GUIDANCE, parse_text=True),
        thresholding=check_choice("Dynamic thresholding", thresholding, ON_OFF),
        dynamic_thresholding_ratio=check_float("Thresholding percentile", ratio, 0.5, 1.0, parse_text=True),
        sample_max_value=check_float("Thresholding max", max_value, 1.0, 10.0, parse_text=True),
        style=check_choice("Style", style, styles or [ANY_STYLE]),
        num_candidates=check_int("Best of N", num_candidates, 1, MAX_CANDIDATES, parse_text=True),
    )


def candidates_control() -> gr.Slider:
    """Best of N for the Text to image tab: candidates per image, the CLIP's favourite kept (txt2img/rerank.py)."""
    return gr.Slider(
        1,
        MAX_CANDIDATES,
        value=DEFAULT_CANDIDATES,
        step=1,
        label="Best of N: candidates drawn per image, the project's CLIP keeps its favourite (1: off)",
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


MAX_UPSCALE_STEPS = 100


def variation_fields(variation_seed, variation_strength) -> Variation | None:
    """The Variations controls, checked: None at strength 0 (the plain generation)."""
    strength = check_float("Variation strength", variation_strength, 0.0, 1.0, parse_text=True)
    seed = check_int("Variation seed", variation_seed, 0, MAX_SEED, parse_text=True)
    return Variation(seed, strength) if strength > 0 else None


def upscale_fields(upscale, upscale_steps, noise_level, max_noise_level: int | None) -> Upscaling:
    """The Upscale controls, checked; `max_noise_level` is the loaded upsampler's (None: no upsampler, Upscale off)."""
    enabled = check_choice("Upscale", upscale, ON_OFF)
    if enabled and max_noise_level is None:
        raise ValueError("Upscale is not available: this app has no upsampler loaded (weights/upscale).")
    steps = check_int("Upscale steps", upscale_steps, 1, MAX_UPSCALE_STEPS, parse_text=True)
    level = check_int("Low-res noise level", noise_level, 0, max_noise_level or 0, parse_text=True) if enabled else None
    return Upscaling(enabled, steps, level)


@dataclass
class ExtraControls:
    """Variations and the Upscale stage: the controls after the sampling ones, in this order on the API."""

    variation_seed: gr.Number
    variation_strength: gr.Slider
    upscale: gr.Checkbox
    upscale_steps: gr.Slider
    noise_level: gr.Slider

    def inputs(self) -> list:
        return [self.variation_seed, self.variation_strength, self.upscale, self.upscale_steps, self.noise_level]


def extra_controls(upscaler: UpscaleDefaults | None) -> ExtraControls:
    """The Variations accordion and, where an upsampler is loaded, the Upscale checkbox (on) and its settings."""
    with gr.Accordion("Variations: explore around an image you like", open=False):
        gr.Markdown(
            "The starting noise is moved part of the way towards another seed's (spherical interpolation): "
            "strength 0 is this seed's picture, 1 the variation seed's, small strengths give near neighbours."
        )
        variation_seed = seed_control("Variation seed", value=1)
        variation_strength = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Variation strength")
    on = upscaler is not None
    upscale = gr.Checkbox(value=on, label="Upscale to 128 px (the super-resolution stage)", visible=on)
    with gr.Accordion("Upscale settings", open=False, visible=on):
        upscale_steps = gr.Slider(
            1, MAX_UPSCALE_STEPS, value=upscaler.steps if on else DEFAULT_STEPS, step=1, label="Upscale steps (DDIM)"
        )
        noise_level = gr.Slider(
            0,
            upscaler.max_noise_level if on else 1,  # a slider needs a range even where it is hidden
            value=upscaler.noise_level if on else 0,
            step=1,
            label="Low-res noise level (noise added to the 32 px picture before upscaling hides its flaws)",
        )
    return ExtraControls(variation_seed, variation_strength, upscale, upscale_steps, noise_level)


def history_gallery() -> tuple[gr.State, gr.Gallery]:
    """A tab's history: the session's list of generations (webapp.history) and the gallery that shows it."""
    history = gr.State([])
    shown = gr.Gallery(
        label="History (this session): click one to bring back its pictures and settings",
        columns=8,
        fit_columns=False,  # small thumbnails even for the first few generations
        height="auto",
        object_fit="contain",
        allow_preview=False,
        format="png",
        interactive=False,
    )
    return history, shown
