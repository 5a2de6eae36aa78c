"""Sampling: the reverse process x_T -> x_0 written out as a loop over the scheduler's timesteps.

    pipe = UnconditionalPipeline.from_pretrained("weights/uncond")
    result = pipe(num_images=4, num_inference_steps=50, scheduler="ddim", seed=0)
    result.images  # list of PIL images

Seeds are device-independent: the initial noise x_T and DDPM's per-step noise are drawn from a
CPU `torch.Generator` and then moved to the device, so seed 0 gives the same images on CPU and GPU
(up to floating-point differences of the UNet itself).

Precision: x_t and the scheduler's arithmetic stay float32 whatever the UNet runs in; a bf16/fp16 UNet
gets its input cast down and its output cast back up, so 50 rounding steps do not pile up in half precision.
On a GPU the loop never waits for the device: the schedule's timesteps go over once, and the CPU noise is
drawn into pinned memory and copied without blocking.
"""

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from uncond.scheduler import DDIMScheduler, DDPMScheduler
from uncond.unet import UNet

SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}
# diffusers' samplers that fit the same loop (set_timesteps, scale_model_input, step), offered as extras
DIFFUSERS_SCHEDULERS = {"dpm++": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler"}
# the training-schedule settings a diffusers sampler takes from our scheduler config
SHARED_SCHEDULE_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "prediction_type",
    "timestep_spacing",
    "steps_offset",
)
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
MAX_SEED = 2**63 - 1

# callback(step, timestep, x_t, pred_original_sample) -> truthy to stop the loop after this step
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], bool | None]


@dataclass
class SampleOutput:
    """What a pipeline call returns: the images and how they were made."""

    images: list  # PIL images
    seed: int
    num_inference_steps: int
    steps_done: int  # fewer than num_inference_steps when the callback stopped the loop
    elapsed: float  # seconds
    settings: dict = field(default_factory=dict)

    @property
    def stopped(self) -> bool:
        return self.steps_done < self.num_inference_steps


def make_scheduler(name: str, config: dict):
    """A fresh sampler built from the training schedule's config: our DDPM or DDIM, or diffusers' DPM-Solver++ or Euler."""
    if name in SCHEDULERS:
        return SCHEDULERS[name].from_config(config)
    if name in DIFFUSERS_SCHEDULERS:
        import diffusers

        cls = getattr(diffusers, DIFFUSERS_SCHEDULERS[name])
        return cls.from_config({k: v for k, v in config.items() if k in SHARED_SCHEDULE_KEYS})
    raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS) + sorted(DIFFUSERS_SCHEDULERS)}, got {name!r}")


def check_sampling_args(
    num_images: int, num_inference_steps: int, eta: float, seed: int, num_train_timesteps: int
) -> None:
    """Raise a ValueError naming the first argument out of range."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    if (
        isinstance(num_inference_steps, bool)
        or not isinstance(num_inference_steps, int)
        or not 1 <= num_inference_steps <= num_train_timesteps
    ):
        raise ValueError(
            f"num_inference_steps must be an integer in 1..{num_train_timesteps}, got {num_inference_steps!r}"
        )
    if not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")


def initial_noise(shape: tuple, seed: int, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Generator]:
    """x_T ~ N(0, I) drawn on the CPU from `seed` (device-independent), and the generator for later noise."""
    generator = torch.Generator().manual_seed(seed)
    pinned = torch.device(device).type == "cuda"  # pinned memory: the copy below does not block the host
    x_t = torch.randn(shape, generator=generator, dtype=torch.float32, pin_memory=pinned)
    return x_t.to(device=device, dtype=dtype, non_blocking=True), generator


def prepare_for_sampling(unet):
    """The UNet in eval mode; on a GPU in half precision, with channels-last weights (the layout tensor-core convolutions want).

    On the CPU our convolutions choose oneDNN's layout themselves (`uncond.unet.Conv2d`).
    """
    unet.eval()
    parameter = next(unet.parameters(), None)
    if parameter is not None and parameter.device.type == "cuda" and parameter.dtype in (torch.float16, torch.bfloat16):
        unet.to(memory_format=torch.channels_last)
    return unet


def model_dtype(unet, default: torch.dtype) -> torch.dtype:
    """The dtype the UNet computes in (its first parameter's), or `default` for a model without parameters."""
    parameter = next(unet.parameters(), None)
    return default if parameter is None else parameter.dtype


def to_pil(images: torch.Tensor) -> list:
    """(B, C, H, W) in [-1, 1] -> list of PIL images (RGB, or L for one channel)."""
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    out = []
    for image in images:
        array = image.permute(1, 2, 0).numpy()
        out.append(Image.fromarray(array[:, :, 0]) if array.shape[2] == 1 else Image.fromarray(array[:, :, :3]))
    return out


def from_pil(image: Image.Image, size: int, channels: int = 3) -> torch.Tensor:
    """PIL image -> (1, C, size, size) in [-1, 1]; transparency goes on white, like the training data."""
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(background, image)
    image = image.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BICUBIC)
    array = torch.from_numpy(np.asarray(image).copy()).float()
    array = array[:, :, None] if array.ndim == 2 else array
    return (array.permute(2, 0, 1)[None] / 127.5 - 1.0).clamp(-1, 1)


def forward_diffuse(image: Image.Image, timestep: int, scheduler_config: dict, size: int, seed: int = 0) -> Image.Image:
    """x_t ~ q(x_t | x_0) for a picture x_0 (Ho et al. 2020 eq. 4): what training shows the network."""
    scheduler = DDPMScheduler.from_config(scheduler_config)
    if (
        isinstance(timestep, bool)
        or not isinstance(timestep, int)
        or not 0 <= timestep < scheduler.config.num_train_timesteps
    ):
        raise ValueError(
            f"timestep must be an integer in 0..{scheduler.config.num_train_timesteps - 1}, got {timestep!r}"
        )
    x_0 = from_pil(image, size)
    noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(seed))
    return to_pil(scheduler.add_noise(x_0, noise, torch.tensor([timestep])))[0]


def noise_schedule(scheduler_config: dict) -> dict:
    """beta_t, alpha-bar_t and the signal-to-noise ratio per training timestep, as plain lists for plotting."""
    scheduler = DDPMScheduler.from_config(scheduler_config)
    alphas_cumprod = scheduler.alphas_cumprod
    return {
        "t": list(range(len(alphas_cumprod))),
        "beta": scheduler.betas.tolist(),
        "alpha_bar": alphas_cumprod.tolist(),
        "noise_level": (1 - alphas_cumprod).sqrt().tolist(),  # std of the noise in x_t
    }


def save_grid(images: list, path: str, columns: int | None = None) -> None:
    """Tile PIL images into one grid PNG."""
    columns = columns or max(1, int(len(images) ** 0.5 + 0.999))
    rows = (len(images) + columns - 1) // columns
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height), "white")
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((i % columns) * width, (i // columns) * height))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)


def predicted_x0(step_output, x_t: torch.Tensor) -> torch.Tensor:
    """The step's estimate of x_0 for previews; DPM-Solver++ reports none, so x_t stands in."""
    pred_original_sample = getattr(step_output, "pred_original_sample", None)
    return x_t if pred_original_sample is None else pred_original_sample


@torch.inference_mode()
def sample(
    unet, scheduler, x_t: torch.Tensor, generator: torch.Generator, eta: float = 0.0, callback: Callback | None = None
) -> tuple[torch.Tensor, int]:
    """Run the reverse process from x_T = `x_t`; returns (x_0, steps done). Ho et al. 2020 Alg. 2 / Song et al. 2021 eq. 12."""
    extra = {"eta": eta} if isinstance(scheduler, DDIMScheduler) else {}
    dtype = model_dtype(unet, x_t.dtype)  # the UNet's; x_t keeps its own (float32 from the pipelines)
    timesteps = scheduler.timesteps.to(x_t.device, non_blocking=True)  # once, not a host-to-device copy per step
    x_t = x_t * scheduler.init_noise_sigma  # 1 for DDPM/DDIM; sigma_max for Euler
    steps_done = 0
    for i, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(x_t, t)  # the identity for DDPM/DDIM
        model_output = unet(model_input.to(dtype), timesteps[i]).to(x_t.dtype)
        out = scheduler.step(model_output, t, x_t, generator=generator, **extra)
        x_t = out.prev_sample
        steps_done = i + 1
        pred_original_sample = predicted_x0(out, x_t)
        if callback is not None and callback(i, int(t), x_t, pred_original_sample):
            # stopped early: the best estimate of x_0 so far is the model's prediction
            return pred_original_sample, steps_done
    return x_t, steps_done


def sample_images(
    unet,
    scheduler_config: dict,
    num_images: int,
    num_inference_steps: int,
    scheduler: str = "ddim",
    eta: float = 0.0,
    seed: int = 0,
    device=None,
    callback: Callback | None = None,
) -> list:
    """Sample `num_images` PIL images from `unet` with a fresh scheduler (used by training for its sample grids)."""
    device = device or next(unet.parameters()).device
    sampler = make_scheduler(scheduler, scheduler_config)
    sampler.set_timesteps(num_inference_steps)
    size, channels = unet.config.sample_size, unet.config.in_channels
    x_t, generator = initial_noise((num_images, channels, size, size), seed, device)
    was_training = unet.training
    unet.eval()
    x_0, _ = sample(unet, sampler, x_t, generator, eta, callback)
    unet.train(was_training)
    return to_pil(x_0)


def default_device() -> torch.device:
    """CUDA when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class UnconditionalPipeline:
    """A trained UNet plus its training noise schedule; call it to sample images."""

    def __init__(self, unet: UNet, scheduler_config: dict, name: str = "uncond"):
        self.unet = prepare_for_sampling(unet)
        self.scheduler_config = dict(scheduler_config)
        self.name = name

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str, device=None, dtype: torch.dtype | None = None
    ) -> "UnconditionalPipeline":
        """Load a model folder written by training (or a diffusers UNet2DModel / DDPMPipeline folder)."""
        from uncond.convert import resolve_model_dir

        unet = UNet.from_pretrained(path_or_hub_id)
        directory = resolve_model_dir(path_or_hub_id)
        scheduler_config = {}
        # ours: scheduler_config.json beside the weights; diffusers pipelines: scheduler/scheduler_config.json
        for candidate in (
            os.path.join(directory, SCHEDULER_CONFIG_NAME),
            os.path.join(directory, "..", "scheduler", SCHEDULER_CONFIG_NAME),
        ):
            if os.path.isfile(candidate):
                with open(candidate) as f:
                    scheduler_config = json.load(f)
                break
        unet.to(device=device or default_device(), dtype=dtype or torch.float32)
        return cls(unet, scheduler_config, name=os.path.basename(os.path.normpath(str(path_or_hub_id))))

    @classmethod
    def untrained(cls, config=None, device=None) -> "UnconditionalPipeline":
        """A freshly initialised model (draws noise): what the app shows before trained weights exist."""
        from uncond.unet import UNetConfig

        unet = UNet(
            config
            or UNetConfig(
                block_out_channels=(32, 64, 128, 128),
                layers_per_block=1,
                attention_resolutions=(8, 4),
                norm_num_groups=8,
            )
        )
        unet.to(device or default_device())
        return cls(unet, {"beta_schedule": "squaredcos_cap_v2"}, name="untrained")

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def __call__(
        self,
        num_images: int = 4,
        num_inference_steps: int = 50,
        scheduler: str = "ddim",
        eta: float = 0.0,
        seed: int = 0,
        device=None,
        dtype: torch.dtype | None = None,
        callback: Callback | None = None,
    ) -> SampleOutput:
        """Sample images; same seed, same images. `callback(step, t, x_t, pred_original_sample)` may return True to stop."""
        sampler = make_scheduler(scheduler, self.scheduler_config)
        check_sampling_args(num_images, num_inference_steps, eta, seed, sampler.config.num_train_timesteps)
        if device is not None or dtype is not None:
            prepare_for_sampling(self.unet.to(device=device or self.device, dtype=dtype or self.dtype))
        started = time.perf_counter()
        sampler.set_timesteps(num_inference_steps)
        size, channels = self.unet.config.sample_size, self.unet.config.in_channels
        x_t, generator = initial_noise((num_images, channels, size, size), seed, self.device)
        x_0, steps_done = sample(self.unet, sampler, x_t, generator, eta, callback)
        images = to_pil(x_0)
        elapsed = time.perf_counter() - started
        settings = {
            "model": self.name,
            "scheduler": scheduler,
            "steps": num_inference_steps,
            "eta": eta,
            "seed": seed,
            "size": size,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "elapsed": round(elapsed, 3),
        }
        return SampleOutput(images, seed, num_inference_steps, steps_done, elapsed, settings)
