"""The models the app serves, loaded once, and the typed functions its page calls.

    models = Models.load("weights", extra_uncond=[])   # or SystemExit naming the folder at fault
    for event in models.unconditional("emoji (shipped)", Sampling("ddim", 50, 1.0, 4, 0)):
        ...  # a uncond.sampling.Step after each step, then the SampleOutput

The page checks its fields (`app.py`) and hands over these dataclasses; everything that touches a model is here.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from PIL import Image

from uncond.pipeline import SampleOutput, UnconditionalPipeline, forward_diffuse, noise_schedule
from uncond.sampling import Step
from uncond.sources import STYLES
from webapp.startup import load_models


@dataclass(frozen=True)
class Sampling:
    """The sampling settings both tabs share, checked by the page."""

    scheduler: str  # a pipeline scheduler name: ddpm, ddim, dpm++, euler
    steps: int
    eta: float
    num_images: int
    seed: int


ANY_STYLE = "any"
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
    if style == ANY_STYLE:
        return prompt
    return f"{prompt}, {STYLES[style].words[0]}" if prompt.strip() else STYLES[style].words[0]


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


class Models:
    """The unconditional models (by name) and the text-to-image pipeline, on one device in one dtype."""

    def __init__(self, uncond: dict[str, UnconditionalPipeline], txt2img):
        self.uncond = uncond
        self.txt2img = txt2img
        self.default_uncond = next(iter(uncond))

    @classmethod
    def load(cls, weights_dir: str, extra_uncond: list[str]) -> "Models":
        """The shipped models (and any extra unconditional ones) at the device's precision; SystemExit if broken."""
        return cls(*load_models(weights_dir, extra_uncond))

    @property
    def device(self) -> torch.device:
        return self.uncond[self.default_uncond].device

    @property
    def dtype(self) -> torch.dtype:
        return self.uncond[self.default_uncond].dtype

    def unconditional(self, model: str, sampling: Sampling) -> Iterator[Step | SampleOutput]:
        """Unconditional samples of the named model, as a stream of steps ending in the output."""
        return self.uncond[model].stream(
            num_images=sampling.num_images,
            num_inference_steps=sampling.steps,
            scheduler=sampling.scheduler,
            eta=sampling.eta,
            seed=sampling.seed,
        )

    def text_to_image(self, prompt: Prompt, sampling: Sampling) -> Iterator[Step | SampleOutput]:
        """Samples for a prompt with classifier-free guidance, as a stream of steps ending in the output."""
        return self.txt2img.stream(
            prompt=styled(prompt.prompt, prompt.style),
            negative_prompt=prompt.negative_prompt or None,
            num_images=sampling.num_images,
            num_inference_steps=sampling.steps,
            scheduler=sampling.scheduler,
            eta=sampling.eta,
            guidance_scale=prompt.guidance_scale,
            seed=sampling.seed,
            thresholding=prompt.thresholding,
            dynamic_thresholding_ratio=prompt.dynamic_thresholding_ratio,
            sample_max_value=prompt.sample_max_value,
        )

    def suggestions(self, prompt: str, k: int = 6) -> list[str]:
        """The training captions closest to a prompt, so a person learns the model's vocabulary."""
        return self.txt2img.closest_captions(prompt, k=k)

    def styles(self) -> dict[str, str]:
        """{label: style} of the styles the text-to-image model was trained on (its captions name them), "any" first."""
        captions = set(self.txt2img.captions)
        known = {STYLE_LABELS.get(name, name): name for name, s in STYLES.items() if s.words[0] in captions}
        return {"any style": ANY_STYLE, **known} if known else {}

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
