"""Controls restored from a result's settings: a PNG made here (dropped on the page) or an entry of the history.

    values = restored_values(settings, UNCOND_CONTROLS, limits)    # one value (or gr.skip()) per named control

Every value is checked as the field it goes into (a crafted PNG is refused with the field's message). A setting
a result does not carry keeps its control as it is, except where its absence has a meaning: no variation
(strength 0), no upscaling (Upscale off), any style.
"""

from dataclasses import dataclass, field

import gradio as gr

from txt2img.rerank import MAX_CANDIDATES
from uncond.checks import MAX_SEED, check_choice, check_float, check_int, check_text
from webapp.controls import MAX_GUIDANCE, MAX_PROMPT_CHARS, MAX_STEPS, MAX_UPSCALE_STEPS, ON_OFF, SCHEDULER_CHOICES
from webapp.models import ANY_STYLE, unstyled

# the controls each tab restores, in the order of its handler's inputs
SAMPLING_CONTROLS = ["scheduler", "steps", "eta", "seed"]
EXTRA_CONTROLS = ["variation_seed", "variation_strength", "upscale", "upscale_steps", "noise_level"]
UNCOND_CONTROLS = ["model"] + SAMPLING_CONTROLS + EXTRA_CONTROLS
TEXT_CONTROLS = (
    [
        "prompt",
        "negative_prompt",
        "guidance_scale",
        "style",
        "thresholding",
        "dynamic_thresholding_ratio",
        "sample_max_value",
    ]
    + SAMPLING_CONTROLS
    + EXTRA_CONTROLS
    + ["num_candidates"]
)
SCHEDULER_LABELS = {name: label for label, (name, _) in SCHEDULER_CHOICES.items()}


@dataclass(frozen=True)
class Limits:
    """What the loaded models allow: their style names, the upsampler's largest noise level (None: no upsampler)."""

    styles: list[str]
    max_noise_level: int | None
    models: dict = field(default_factory=dict)  # the unconditional models' names in settings -> their picker labels


def checks(limits: Limits) -> dict:
    """Setting name -> the check of the control it restores (the same messages as the handlers')."""
    return {
        "model": lambda v: check_choice("Model", v, limits.models),
        "prompt": lambda v: check_text("Prompt", v, MAX_PROMPT_CHARS),
        "negative_prompt": lambda v: check_text("Negative prompt", v, MAX_PROMPT_CHARS),
        "guidance_scale": lambda v: check_float("Guidance scale", v, 0.0, MAX_GUIDANCE, parse_text=True),
        "style": lambda v: check_choice("Style", v, limits.styles or [ANY_STYLE]),
        "thresholding": lambda v: check_choice("Dynamic thresholding", v, ON_OFF),
        "dynamic_thresholding_ratio": lambda v: check_float("Thresholding percentile", v, 0.5, 1.0, parse_text=True),
        "sample_max_value": lambda v: check_float("Thresholding max", v, 1.0, 10.0, parse_text=True),
        "scheduler": lambda v: check_choice("Scheduler", v, SCHEDULER_LABELS),
        "steps": lambda v: check_int("Steps", v, 1, MAX_STEPS, parse_text=True),
        "eta": lambda v: check_float("Eta", v, 0.0, 1.0, parse_text=True),
        "seed": lambda v: check_int("Seed", v, 0, MAX_SEED, parse_text=True),
        "variation_seed": lambda v: check_int("Variation seed", v, 0, MAX_SEED, parse_text=True),
        "variation_strength": lambda v: check_float("Variation strength", v, 0.0, 1.0, parse_text=True),
        "upscale": lambda v: check_choice("Upscale", v, ON_OFF),
        "upscale_steps": lambda v: check_int("Upscale steps", v, 1, MAX_UPSCALE_STEPS, parse_text=True),
        "num_candidates": lambda v: check_int("Best of N", v, 1, MAX_CANDIDATES, parse_text=True),
        "noise_level": lambda v: check_int("Low-res noise level", v, 0, limits.max_noise_level or 0, parse_text=True),
    }


def with_meanings(settings: dict, limits: Limits) -> dict:
    """The settings with what their absent keys mean filled in, and the prompt without the style's words."""
    settings = dict(settings)
    if settings.get("model") not in limits.models:  # a text-to-image result, or a model this app does not serve
        settings.pop("model", None)
    settings.setdefault("variation_strength", 0.0)
    settings["upscale"] = "upscale_steps" in settings and limits.max_noise_level is not None
    if not settings["upscale"]:  # a 32 px result: its upscale settings, if any, are not restored
        settings.pop("upscale_steps", None), settings.pop("noise_level", None)
    if "prompt" in settings:
        style = settings.get("style", ANY_STYLE)
        settings["style"] = style if style in limits.styles else ANY_STYLE
        settings["prompt"] = unstyled(settings["prompt"], settings["style"])
        settings.setdefault("num_candidates", 1)  # drawn before best of N: one candidate per image
    return settings


def restored_values(settings: dict, names: list[str], limits: Limits) -> list:
    """One checked value per control in `names` (gr.skip() where the result says nothing); ValueError names a bad one."""
    settings, check = with_meanings(settings, limits), checks(limits)
    return [check[name](settings[name]) if name in settings else gr.skip() for name in names]
