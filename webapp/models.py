"""The models the app serves, loaded once, and the typed functions its page calls.

    models = Models.load("weights", extra_uncond=[])   # or SystemExit naming the folder at fault
    for event in models.unconditional("emoji (shipped)", Sampling("ddim", 50, 1.0, 4, 0)):
        ...  # a uncond.sampling.Step after each step, then the SampleOutput
    models.text_to_image(Prompt("red heart", "", 4.0), sampling, StartPicture(sketch, strength=0.7))  # from a picture
    models.unconditional(model, sampling, StartPicture(picture, mask=mask))                          # inpainting
    models.text_to_image(prompt, sampling, variation=Variation(seed=7, strength=0.2))                # a variation
    models.seed_strip(sampling, other_seed=1, num_frames=8, prompt=prompt)      # frames, one SampleOutput each
    models.prompt_strip(prompt, "blue heart", 8, sampling)
    models.comparison((5, 10, 25, 50), seed=0, prompt=prompt)                   # (row, column, SampleOutput) cells
    for event in models.unconditional("emoji (shipped)", Sampling("ddim", 50, 1.0, 4, 0), upscaling=Upscaling(steps=25)):
        ...  # the base model's steps (32 px), then the upsampler's (128 px), then the 128 px SampleOutput

The page checks its fields (`app.py`) and hands over these dataclasses; everything that touches a model is here.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from PIL import Image

from txt2img.interpolate import interpolate_prompts
from uncond.explore import SAMPLERS, Sampler, comparison_cells, interpolate_seeds
from uncond.pipeline import SampleOutput, UnconditionalPipeline, forward_diffuse, noise_schedule
from uncond.repaint import DEFAULT_JUMP_LENGTH, DEFAULT_JUMP_N_SAMPLE
from uncond.sampling import Step
from uncond.sources import STYLES
from uncond.upscale_pipeline import DEFAULT_STEPS, UpscalePipeline, cascade_stream
from webapp.startup import load_models


@dataclass(frozen=True)
class Sampling:
    """The sampling settings both tabs share, checked by the page."""

    scheduler: str  # a pipeline scheduler name: ddpm, ddim, dpm++, euler
    steps: int
    eta: float
    num_images: int
    seed: int


@dataclass(frozen=True)
class Upscaling:
    """The Upscale control: the 32 -> 128 px stage on (the default) or off, its steps and the low-res input's level."""

    enabled: bool = True
    steps: int = DEFAULT_STEPS  # DDIM steps of the upsampler
    noise_level: int | None = None  # augmentation level of the low-res input; None: the model folder's default


@dataclass(frozen=True)
class UpscaleDefaults:
    """What the page's Upscale controls start from and allow, read from the loaded upsampler."""

    steps: int
    noise_level: int
    max_noise_level: int


UPSCALE_FOLDER = "upscale"  # weights/upscale: the super-resolution stage, where one is shipped
UPSCALE_COMMAND = (
    "python -m uncond.train_upscale --data data/emoji-multi/128 --config configs/upscale_cpu128.json --out {folder}"
)


def load_upscaler(weights_dir: str, device: torch.device, dtype: torch.dtype) -> UpscalePipeline | None:
    """The shipped super-resolution stage, None where no folder is shipped, SystemExit where it is unreadable."""
    folder = os.path.join(weights_dir, UPSCALE_FOLDER)
    if not os.path.isdir(folder):
        return None
    try:
        return UpscalePipeline.from_pretrained(folder, device=device, dtype=dtype)
    except Exception as error:  # any failure to read the files is reported the same way
        raise SystemExit(
            f"Cannot start: the upsampler in {folder} is unreadable ({type(error).__name__}: {error}).\n"
            f"Restore the shipped files or rebuild them with:\n    {UPSCALE_COMMAND.format(folder=folder)}"
        ) from error


ANY_STYLE = "any"  # the pipeline adds a colour style per image (txt2img/default_style.py)
NO_STYLE = "none"  # nothing added: the model's own pick, line art and high contrast included
STYLE_LABELS = {
    "noto": "Noto",
    "twemoji": "Twemoji",
    "openmoji": "OpenMoji",
    "openmoji-line": "OpenMoji line art",
    "fluent-flat": "Fluent flat",
    "fluent-high-contrast": "Fluent high contrast",
    "fluent-3d": "Fluent 3D",
}


def styled(prompt: str, style: str) -> str:
    """The prompt with a style's words after it, as the training captions have them: ("owl", "openmoji-line") -> "owl, line art"."""
    if style in (ANY_STYLE, NO_STYLE):
        return prompt
    return f"{prompt}, {STYLES[style].words[0]}" if prompt.strip() else STYLES[style].words[0]


def unstyled(prompt: str, style: str) -> str:
    """The prompt as typed, without the words `styled` added: ("owl, line art", "openmoji-line") -> "owl"."""
    if style in (ANY_STYLE, NO_STYLE):
        return prompt
    words = STYLES[style].words[0]
    if prompt == words:
        return ""
    return prompt.removesuffix(f", {words}")


@dataclass(frozen=True)
class Prompt:
    """What the Text to image tab adds: the prompt, the negative prompt and the guidance scale."""

    prompt: str
    negative_prompt: str  # "" for the plain unconditional pass
    guidance_scale: float
    thresholding: bool = False  # dynamic thresholding of x_0 (Imagen) in place of clipping
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.5
    style: str = ANY_STYLE  # a style the model knows (`Models.styles`), added to the prompt in words
    num_candidates: int = 1  # best of N: each image drawn N times, the CLIP's favourite kept (txt2img/rerank.py)


@dataclass(frozen=True)
class StartPicture:
    """A picture to start from (image to image, SDEdit) and, for inpainting (RePaint), the region to fill."""

    picture: Image.Image  # any mode and size: on white, centre-cropped, resized to the model's resolution
    strength: float | None = None  # 0 keeps the picture, 1 ignores it; None: 0.8, or 1 with a mask
    mask: Image.Image | None = None  # the picture's size: white (or painted, on a transparent layer) where to fill
    jump_length: int = DEFAULT_JUMP_LENGTH
    jump_n_sample: int = DEFAULT_JUMP_N_SAMPLE


@dataclass(frozen=True)
class Variation:
    """A variation of a seed's picture: x_T moved `strength` of the way (0 to 1) towards `seed`'s."""

    seed: int
    strength: float


def sampling_kwargs(sampling: Sampling) -> dict:
    """The pipelines' keyword arguments for the shared sampling settings."""
    return dict(
        num_images=sampling.num_images,
        num_inference_steps=sampling.steps,
        scheduler=sampling.scheduler,
        eta=sampling.eta,
        seed=sampling.seed,
    )


def prompt_kwargs(prompt: Prompt) -> dict:
    """The text-to-image pipeline's keyword arguments for the Text to image tab's settings (style words added)."""
    return dict(
        prompt=styled(prompt.prompt, prompt.style),
        negative_prompt=prompt.negative_prompt or None,
        guidance_scale=prompt.guidance_scale,
        thresholding=prompt.thresholding,
        dynamic_thresholding_ratio=prompt.dynamic_thresholding_ratio,
        sample_max_value=prompt.sample_max_value,
        add_style=prompt.style != NO_STYLE,
        num_candidates=prompt.num_candidates,
    )


def edit_kwargs(start: StartPicture | None, variation: Variation | None) -> dict:
    """The pipelines' keyword arguments for a picture to start from and a variation (none for a plain call)."""
    kwargs = {}
    if start is not None:
        kwargs.update(
            image=start.picture,
            strength=start.strength,
            mask=start.mask,
            jump_length=start.jump_length,
            jump_n_sample=start.jump_n_sample,
        )
    if variation is not None:
        kwargs.update(variation_seed=variation.seed, variation_strength=variation.strength)
    return kwargs


def with_settings(events: Iterator[Step | SampleOutput], **extra) -> Iterator[Step | SampleOutput]:
    """A pipeline's stream with `extra` added to its output's settings (closing it closes the pipeline's)."""
    try:
        for event in events:
            yield replace(event, settings={**event.settings, **extra}) if isinstance(event, SampleOutput) else event
    finally:
        events.close()


class Models:
    """The unconditional models (by name), the text-to-image pipeline and the upsampler (if any), on one device in one dtype."""

    def __init__(self, uncond: dict[str, UnconditionalPipeline], txt2img, upscaler: UpscalePipeline | None = None):
        self.uncond = uncond
        self.txt2img = txt2img
        self.upscaler = upscaler
        self.default_uncond = next(iter(uncond))

    @classmethod
    def load(cls, weights_dir: str, extra_uncond: list[str]) -> "Models":
        """The shipped models (and any extra unconditional ones) at the device's precision; SystemExit if broken."""
        uncond, txt2img = load_models(weights_dir, extra_uncond)
        first = next(iter(uncond.values()))
        return cls(uncond, txt2img, load_upscaler(weights_dir, first.device, first.dtype))

    @property
    def device(self) -> torch.device:
        return self.uncond[self.default_uncond].device

    @property
    def dtype(self) -> torch.dtype:
        return self.uncond[self.default_uncond].dtype

    def has_upscaler(self) -> bool:
        """Whether a super-resolution stage is loaded (the page offers Upscale only then)."""
        return self.upscaler is not None

    def upscale_defaults(self) -> UpscaleDefaults | None:
        """The Upscale controls' defaults and range, None without an upsampler."""
        if self.upscaler is None:
            return None
        config = self.upscaler.config
        return UpscaleDefaults(Upscaling().steps, config.noise_level, config.max_noise_level)

    def upscales(self, size: int) -> bool:
        """Whether the loaded upsampler takes pictures of `size` px (the shipped models' 32; not, e.g., a 128 px model)."""
        up = self.upscaler
        return up is not None and size * up.config.scale_factor == up.unet.config.sample_size

    def upscaled(self, events: Iterator[Step | SampleOutput], upscaling: Upscaling | None, pipe):
        """A base pipeline's stream, continued through the upsampler's steps when `upscaling` is on and an upsampler
        for the pipeline's picture size is loaded (off: the stream itself, the pipeline never asked)."""
        if upscaling is None or not upscaling.enabled or not self.upscales(pipe.unet.config.sample_size):
            return events
        return cascade_stream(
            events, self.upscaler, num_inference_steps=upscaling.steps, noise_level=upscaling.noise_level
        )

    def noised_low_res(self, images: list, upscaling: Upscaling, seed: int) -> list:
        """The base pictures as the upsampler sees them, noised to its level (for "How it works"); [] without one."""
        if self.upscaler is None:
            return []
        return self.upscaler.noised_low_res(images, upscaling.noise_level, seed)

    def unconditional(
        self,
        model: str,
        sampling: Sampling,
        start: StartPicture | None = None,
        variation: Variation | None = None,
        upscaling: Upscaling | None = None,
    ) -> Iterator[Step | SampleOutput]:
        """Unconditional samples of the named model (from a picture, inpainted, varied), as a stream of steps ending
        in the output (128 px when upscaled)."""
        events = self.uncond[model].stream(**sampling_kwargs(sampling), **edit_kwargs(start, variation))
        return self.upscaled(events, upscaling, self.uncond[model])

    def text_to_image(
        self,
        prompt: Prompt,
        sampling: Sampling,
        start: StartPicture | None = None,
        variation: Variation | None = None,
        upscaling: Upscaling | None = None,
    ) -> Iterator[Step | SampleOutput]:
        """Samples for a prompt with classifier-free guidance (from a picture, inpainted, varied), as a stream of
        steps ending in the output (128 px when upscaled)."""
        events = self.txt2img.stream(
            **prompt_kwargs(prompt), **sampling_kwargs(sampling), **edit_kwargs(start, variation)
        )
        return with_settings(self.upscaled(events, upscaling, self.txt2img), style=prompt.style)

    def pipeline_and_kwargs(self, model: str | None, prompt: Prompt | None) -> tuple[object, dict]:
        """The text-to-image pipeline and a prompt's settings, or the named unconditional model and none."""
        if prompt is not None:
            return self.txt2img, prompt_kwargs(prompt)
        return self.uncond_or_default(model), {}

    def seed_strip(
        self,
        sampling: Sampling,
        other_seed: int,
        num_frames: int,
        model: str | None = None,
        prompt: Prompt | None = None,
    ) -> Iterator[SampleOutput]:
        """`num_frames` images from `sampling.seed`'s noise to `other_seed`'s (slerp), one by one: with a prompt
        from the text-to-image model, else from the named unconditional one. The ends are the two plain generations."""
        pipe, kwargs = self.pipeline_and_kwargs(model, prompt)
        settings = {k: v for k, v in sampling_kwargs(sampling).items() if k not in ("seed", "num_images")}
        return interpolate_seeds(pipe, sampling.seed, other_seed, num_frames, **settings, **kwargs)

    def prompt_strip(
        self, prompt: Prompt, other_prompt: str, num_frames: int, sampling: Sampling
    ) -> Iterator[SampleOutput]:
        """`num_frames` images of one seed from `prompt` to `other_prompt` (the text embeddings interpolated)."""
        kwargs = prompt_kwargs(prompt)
        settings = {k: v for k, v in sampling_kwargs(sampling).items() if k != "num_images"}
        return interpolate_prompts(
            self.txt2img,
            kwargs.pop("prompt"),
            styled(other_prompt, prompt.style),
            num_frames,
            **kwargs,
            **settings,
        )

    def comparison(
        self,
        steps: tuple[int, ...],
        seed: int,
        model: str | None = None,
        prompt: Prompt | None = None,
        samplers: tuple[Sampler, ...] = SAMPLERS,
    ) -> Iterator[tuple[int, int, SampleOutput]]:
        """The comparison grid's cells (row, column, output) as each is done: a row per sampler (DDPM, DDIM eta 0
        and 1, DPM-Solver++, Euler), a column per step count, one image of `seed` each, with its time (`elapsed`)."""
        pipe, kwargs = self.pipeline_and_kwargs(model, prompt)
        return comparison_cells(pipe, samplers, steps, seed=seed, **kwargs)

    def suggestions(self, prompt: str, k: int = 6) -> list[str]:
        """The training captions closest to a prompt, so a person learns the model's vocabulary."""
        return self.txt2img.closest_captions(prompt, k=k)

    def styles(self) -> dict[str, str]:
        """{label: style} of the styles the text-to-image model was trained on (its captions name them), "any" first."""
        captions = set(self.txt2img.captions)
        known = {STYLE_LABELS.get(name, name): name for name, s in STYLES.items() if s.words[0] in captions}
        return {"any colour style": ANY_STYLE, **known, "none added (line art too)": NO_STYLE} if known else {}

    def has_captions(self) -> bool:
        return bool(self.txt2img.captions)

    def uncond_or_default(self, model: str) -> UnconditionalPipeline:
        """The named unconditional model, or the default one for a name not in the list (How it works' picker)."""
        return self.uncond.get(model, self.uncond[self.default_uncond])

    def forward_process(self, picture: Image.Image, timestep: int, model: str) -> Image.Image:
        """x_t of a picture at timestep t under the named model's noise schedule, at its resolution."""
        pipe = self.uncond_or_default(model)
        return forward_diffuse(picture, timestep, pipe.scheduler_config, pipe.unet.config.sample_size)

    def noise_schedule(self, model: str) -> dict:
        """beta_t, alpha-bar_t and the noise level of the named model's schedule, for the plot."""
        return noise_schedule(self.uncond_or_default(model).scheduler_config)


def schedule_table(models: Models, model: str):
    """The named model's noise schedule as a long table (t, value, curve) for gr.LinePlot."""
    import pandas as pd

    schedule = models.noise_schedule(model)
    rows = []
    for name, label in (
        ("alpha_bar", "alpha-bar_t (signal kept)"),
        ("noise_level", "sqrt(1 - alpha-bar_t) (noise std)"),
        ("beta", "beta_t"),
        ("alpha_bar_zero_snr", "alpha-bar_t rescaled to zero terminal SNR (Lin et al. 2024)"),
    ):
        rows += [{"t": t, "value": v, "curve": label} for t, v in zip(schedule["t"], schedule[name], strict=True)]
    return pd.DataFrame(rows)
