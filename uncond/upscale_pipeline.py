"""The super-resolution stage of the cascade: 32 px pictures in, 128 px pictures out (Ho et al. 2021; Imagen).

    up = UpscalePipeline.from_pretrained("runs/upscale")
    base = UnconditionalPipeline.from_pretrained("weights/uncond")(num_images=4, seed=0)
    result = up(base.images, num_inference_steps=25, noise_level=50, seed=0)
    result.images  # 128 px PIL images

    for event in up.stream(base.images, num_inference_steps=25, seed=0):
        ...  # a `uncond.sampling.Step` (x_t at 128 px) after each step, then the `SampleOutput`

The loop is `uncond.sampling.denoise`, as for the base models; the low-res picture enters through the model
function (`uncond.upscale.low_res_model_fn`). The UNet is fully convolutional, so it samples any size that its
levels divide (training saw 64 px crops; the whole 128 px picture is sampled here). Seeds are device-independent:
x_T, then the augmentation noise of the low-res input, then DDPM's per-step noise come from one CPU generator,
and the noised, upsampled conditioning is computed on the CPU in float32.

A folder holds the UNet (config.json, model.safetensors), scheduler_config.json and upscale_config.json.
"""

import json
import os
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, replace

import torch
from PIL import Image

from uncond.checks import MAX_SEED, check_int
from uncond.images import from_pil, to_pil
from uncond.pipeline import (
    SCHEDULER_CONFIG_NAME,
    SampleOutput,
    check_sampling_args,
    default_device,
    prepare_for_sampling,
    read_scheduler_config,
)
from uncond.sampling import Callback, Step, denoise, initial_noise, make_scheduler, run_to_end
from uncond.scheduler import DDPMScheduler
from uncond.unet import UNet
from uncond.upscale import DEFAULT_SCALE_FACTOR, check_noise_level, conditioning, low_res_model_fn

UPSCALE_CONFIG_NAME = "upscale_config.json"
DEFAULT_STEPS = 15  # the upsampler's DDIM steps by default (the app's; README "The cascade" measured them)
MAX_OUTPUT_SIZE = 1024  # pixels per side; a larger request is refused rather than run out of memory


@dataclass
class UpscaleConfig:
    """What a super-resolution folder says besides its UNet: the scale factor and the augmentation levels."""

    scale_factor: int = DEFAULT_SCALE_FACTOR  # output size / input size
    max_noise_level: int = 350  # training drew augmentation levels s ~ U{0..max_noise_level}
    noise_level: int = 50  # the default level at sampling (provisional until measured on the trained stage)

    @classmethod
    def from_dict(cls, d: dict) -> "UpscaleConfig":
        """A config from upscale_config.json, keys that are not fields ignored."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def write_upscale_config(directory: str, config: UpscaleConfig) -> None:
    """upscale_config.json beside the weights."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, UPSCALE_CONFIG_NAME), "w") as f:
        json.dump(asdict(config), f, indent=2)


def low_res_tensor(images) -> torch.Tensor:
    """The low-res pictures as (B, 3, h, h) float32 in [-1, 1]: PIL images of one square size, or such a tensor."""
    if isinstance(images, Image.Image):
        images = [images]
    if torch.is_tensor(images):
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3] or not len(images):
            raise ValueError(f"images must be (B, 3, h, h), got a tensor of shape {tuple(images.shape)}")
        if not images.is_floating_point() or images.isnan().any() or images.abs().max() > 1:
            raise ValueError("images must hold floats in [-1, 1] (a tensor), or be PIL images")
        return images.detach().float().cpu()
    if not isinstance(images, (list, tuple)) or not images or not all(isinstance(i, Image.Image) for i in images):
        raise ValueError(f"images must be a PIL image, a non-empty list of PIL images or a tensor, got {type(images)}")
    sizes = {image.size for image in images}
    if len(sizes) > 1 or images[0].width != images[0].height:
        raise ValueError(f"images must all be square and of one size, got sizes {sorted(sizes)[:3]}")
    return torch.cat([from_pil(image, image.width) for image in images])


def draw_noise(batch: int, size: int, low_res_shape: tuple, seed: int, device):
    """x_T (B, 3, size, size) on `device`, the low-res augmentation noise (CPU) and the generator, all from `seed`."""
    x_t, generator = initial_noise((batch, 3, size, size), seed, device)
    return x_t, torch.randn(low_res_shape, generator=generator), generator  # drawn after x_T, on the CPU


def output_size(unet, low_res: torch.Tensor, scale_factor: int) -> int:
    """The output's side: the input's times the scale factor, checked against the UNet's levels."""
    size = low_res.shape[-1] * scale_factor
    multiple = 2 ** (len(unet.config.block_out_channels) - 1)
    if size % multiple or size > MAX_OUTPUT_SIZE:
        raise ValueError(
            f"images of {low_res.shape[-1]} px give {size} px outputs: they must be a multiple of {multiple}, "
            f"at most {MAX_OUTPUT_SIZE}"
        )
    return size


def upscale_stream(
    unet,
    scheduler_config: dict,
    low_res,
    scale_factor,
    noise_level,
    seed,
    num_inference_steps,
    scheduler="ddim",
    callback=None,
    **options,
):
    """x_T and the noised, upsampled low-res input drawn from `seed`, then `denoise`: yields steps, returns (x_0, steps).

    The conditioning is computed on the CPU in float32 (the same on any device) and moved to the UNet's device once.
    """
    size, device = output_size(unet, low_res, scale_factor), next(unet.parameters()).device
    sampler = make_scheduler(scheduler, scheduler_config)
    sampler.set_timesteps(num_inference_steps)
    x_t, noise, generator = draw_noise(len(low_res), size, low_res.shape, seed, device)
    levels = torch.full((len(low_res),), noise_level)
    cond = conditioning(DDPMScheduler.from_config(scheduler_config), low_res, noise, levels, size)  # (B, 3, size, size)
    model_fn = low_res_model_fn(unet, cond.to(device, non_blocking=True), levels)
    return (yield from denoise(model_fn, sampler, x_t, generator, callback, **options))


class UpscalePipeline:
    """A super-resolution UNet, its training noise schedule and its `UpscaleConfig`; call it with low-res pictures."""

    def __init__(self, unet: UNet, scheduler_config: dict, config: UpscaleConfig | None = None, name: str = "upscale"):
        if not unet.config.low_res_channels or not unet.config.noise_level_embedding:
            raise ValueError("unet must have low_res_channels and noise_level_embedding: a super-resolution stage")
        self.unet = prepare_for_sampling(unet)
        self.scheduler_config = dict(scheduler_config)
        self.config = config or UpscaleConfig()
        self.name = name
        self.augmentation = DDPMScheduler.from_config(self.scheduler_config)  # add_noise of the training schedule

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str, device=None, dtype: torch.dtype | None = None) -> "UpscalePipeline":
        """Load a folder written by `save_pretrained` or by `python -m uncond.train_upscale`."""
        from uncond.hub import resolve_model_dir

        directory = resolve_model_dir(path_or_hub_id)
        scheduler_config = read_scheduler_config(directory, path_or_hub_id)
        unet = UNet.from_pretrained(directory)
        if not unet.config.low_res_channels:
            raise ValueError(
                f"path_or_hub_id {path_or_hub_id!r} holds a UNet without low_res_channels: not an upsampler"
            )
        config = UpscaleConfig()
        if os.path.isfile(os.path.join(directory, UPSCALE_CONFIG_NAME)):
            with open(os.path.join(directory, UPSCALE_CONFIG_NAME)) as f:
                config = UpscaleConfig.from_dict(json.load(f))
        unet.to(device=device or default_device(), dtype=dtype or torch.float32)
        return cls(unet, scheduler_config, config, name=os.path.basename(os.path.normpath(str(path_or_hub_id))))

    def save_pretrained(self, directory: str, dtype: torch.dtype | None = None) -> None:
        """Write the UNet (optionally cast, e.g. to fp16), scheduler_config.json and upscale_config.json."""
        self.unet.save_pretrained(directory, dtype=dtype)
        with open(os.path.join(directory, SCHEDULER_CONFIG_NAME), "w") as f:
            json.dump(self.scheduler_config, f, indent=2)
        write_upscale_config(directory, self.config)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def noised_low_res(self, images, noise_level: int | None = None, seed: int = 0) -> list:
        """The low-res input as the stage sees it, noised to `noise_level` (before upsampling): for "How it works"."""
        low_res = low_res_tensor(images)
        level = self._level(noise_level)
        size = output_size(self.unet, low_res, self.config.scale_factor)
        _, noise, _ = draw_noise(len(low_res), size, low_res.shape, check_int("seed", seed, 0, MAX_SEED), "cpu")
        return to_pil(self.augmentation.add_noise(low_res, noise, torch.full((len(low_res),), level)))

    def _level(self, noise_level) -> int:
        """The given level, or the folder's default; at most the largest level training drew."""
        level = self.config.noise_level if noise_level is None else noise_level
        return check_noise_level(level, self.config.max_noise_level)

    def stream(
        self,
        images,
        num_inference_steps: int = DEFAULT_STEPS,
        noise_level: int | None = None,
        seed: int = 0,
        scheduler: str = "ddim",
        eta: float = 0.0,
        callback: Callback | None = None,
        use_clipped_model_output: bool = True,
    ) -> Generator[Step | SampleOutput]:
        """Upsample `images` (PIL images or (B, 3, h, h) in [-1, 1]), yielding each `Step`, the `SampleOutput` last.

        noise_level: the augmentation level s of the low-res input, a timestep of the training schedule (None: the
        folder's default); the same seed gives the same pictures on any device. `callback` as for the base pipelines.
        use_clipped_model_output: DDIM's eps from the clipped x_0 (improved-diffusion's rule). The white background
        is x_0 = 1, the edge of the clipping range: the network's estimate there lands above 1 about half the time,
        clipping takes the excess off x_0, and an eps computed from the unclipped estimate would carry it back into
        x_{t-1} as a darker background, step after step (the shipped model's corners: 9 levels off white; clipped, see README).
        """
        low_res = low_res_tensor(images)
        num_train_timesteps = self.scheduler_config.get("num_train_timesteps", 1000)
        _, num_inference_steps, eta, seed = check_sampling_args(
            len(low_res), num_inference_steps, scheduler, eta, seed, num_train_timesteps
        )
        if not isinstance(use_clipped_model_output, bool):
            raise ValueError(f"use_clipped_model_output must be True or False, got {use_clipped_model_output!r}")
        level, size = self._level(noise_level), output_size(self.unet, low_res, self.config.scale_factor)
        started = time.perf_counter()
        x_0, steps_done = yield from upscale_stream(
            self.unet,
            self.scheduler_config,
            low_res,
            self.config.scale_factor,
            level,
            seed,
            num_inference_steps,
            scheduler,
            callback,
            eta=eta,
            use_clipped_model_output=use_clipped_model_output,
        )
        elapsed = time.perf_counter() - started
        settings = {
            "upscale_model": self.name,
            "upscale_scheduler": scheduler,
            "upscale_steps": num_inference_steps,
            "upscale_eta": eta,
            "upscale_clipped_eps": use_clipped_model_output,
            "noise_level": level,
            "seed": seed,
            "size": size,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "elapsed": round(elapsed, 3),
        }
        yield SampleOutput(to_pil(x_0), seed, num_inference_steps, steps_done, elapsed, settings)

    def __call__(self, images, **kwargs) -> SampleOutput:
        """Upsample pictures: `stream` run to its end (the same arguments)."""
        *_, result = self.stream(images, **kwargs)
        return result


def upscale_images(
    unet, scheduler_config: dict, low_res: torch.Tensor, scale_factor: int, steps: int, noise_level: int, seed: int = 0
) -> torch.Tensor:
    """(B, 3, H, W) x_0 of a super-resolution UNet for low-res (B, 3, h, h) in [-1, 1], DDIM (training's evaluation)."""
    was_training = unet.training
    unet.eval()
    low_res = low_res.float().cpu()
    # eps from the clipped x_0, as the pipeline samples (UpscalePipeline.stream: why the background stays white)
    stream = upscale_stream(
        unet, scheduler_config, low_res, scale_factor, noise_level, seed, steps, use_clipped_model_output=True
    )
    x_0, _ = run_to_end(stream)
    unet.train(was_training)
    return x_0


# ---- the cascade: a base pipeline's output, then this stage ----


def merge_outputs(base: SampleOutput, upscaled: SampleOutput) -> SampleOutput:
    """The base output (its type, seed, steps, warnings) with the upsampled images and both stages' settings."""
    elapsed = base.elapsed + upscaled.elapsed
    settings = {
        **base.settings,
        **upscaled.settings,
        "base_size": base.settings.get("size"),
        "elapsed": round(elapsed, 3),
    }
    settings["upscale_steps_done"] = upscaled.steps_done
    return replace(base, images=upscaled.images, elapsed=elapsed, settings=settings)


def cascade_stream(base_events, upscaler: "UpscalePipeline", **options) -> Generator[Step | SampleOutput]:
    """A base pipeline's stream, then the upsampler's on its images (same seed): both stages' `Step`s (32 px, then
    128 px x_t), and last the merged output. A base run stopped early is returned as it is, not upsampled."""
    base = None
    for event in base_events:
        if isinstance(event, SampleOutput):
            base = event
        else:
            yield event
    if base is None:
        return
    if base.stopped:
        yield base
        return
    for event in upscaler.stream(base.images, seed=base.seed, **options):
        if isinstance(event, SampleOutput):
            yield merge_outputs(base, event)
        else:
            yield event


def upscale_result(base: SampleOutput, upscaler: "UpscalePipeline", **options) -> SampleOutput:
    """A base pipeline's output upsampled (`cascade_stream` run to its end)."""
    *_, result = cascade_stream([base], upscaler, **options)
    return result
