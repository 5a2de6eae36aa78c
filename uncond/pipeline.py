"""The unconditional pipeline: a trained UNet and its noise schedule; call it to sample images.

    pipe = UnconditionalPipeline.from_pretrained("weights/uncond")
    result = pipe(num_images=4, num_inference_steps=50, scheduler="ddim", seed=0)
    result.images  # list of PIL images

    for event in pipe.stream(num_images=4, num_inference_steps=50, seed=0):
        ...  # a `uncond.sampling.Step` after each denoising step, then the `SampleOutput`

    pipe(image=picture, strength=0.6)   # from a picture (uncond/edit.py); with mask=... inpainting (uncond/repaint.py)
    pipe(seed=0, variation_seed=1, variation_strength=0.2)   # a variation (uncond/noise.py)

The loop itself is `uncond.sampling.denoise`; this module builds its inputs (the scheduler, x_T, the model function,
a picture to start from) and turns x_0 into pictures. "How it works" also finds here what training shows the
network (`forward_diffuse`) and the schedule's curves (`noise_schedule`).
"""

import json
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field

import torch
from PIL import Image

from uncond.checks import MAX_SEED, check_choice, check_float, check_int
from uncond.edit import INPAINT_SCHEDULERS, Edit, Mask, edit_stream, prepare_edit
from uncond.images import from_pil, to_pil
from uncond.noise import check_variation, starting_noise
from uncond.repaint import DEFAULT_JUMP_LENGTH, DEFAULT_JUMP_N_SAMPLE
from uncond.sampling import (
    SCHEDULER_NAMES,
    Callback,
    ModelFn,
    Step,
    denoise,
    make_scheduler,
    run_to_end,
    sample_dtype,
    unet_model_fn,
)
from uncond.scheduler import DDPMScheduler
from uncond.unet import UNet

SCHEDULER_CONFIG_NAME = "scheduler_config.json"


@dataclass
class SampleOutput:
    """What a pipeline call returns: the images and how they were made."""

    images: list  # PIL images
    seed: int
    num_inference_steps: (
        int  # the model steps the loop was to run (from a picture: strength's share, RePaint's revisits)
    )
    steps_done: int  # fewer than num_inference_steps when the caller stopped the loop
    elapsed: float  # seconds
    settings: dict = field(default_factory=dict)

    @property
    def stopped(self) -> bool:
        return self.steps_done < self.num_inference_steps


def check_sampling_args(
    num_images, num_inference_steps, scheduler: str, eta, seed, num_train_timesteps: int
) -> tuple[int, int, float, int]:
    """The sampling arguments both pipelines share, checked (ValueError naming the first bad one)."""
    check_choice("scheduler", scheduler, SCHEDULER_NAMES)
    num_images = check_int("num_images", num_images, 1, 4096)
    num_inference_steps = check_int("num_inference_steps", num_inference_steps, 1, num_train_timesteps)
    eta = check_float("eta", eta, 0.0, 1.0)
    seed = check_int("seed", seed, 0, MAX_SEED)
    return num_images, num_inference_steps, eta, seed


def read_scheduler_config(directory: str, path_or_hub_id: str) -> dict:
    """The training noise schedule beside the weights (ours), or in a diffusers pipeline's scheduler/ folder.

    A folder without one is refused: sampling with a default (linear) schedule a cosine model was not trained on
    gives noise, not a wrong-looking but plausible picture, and nothing would say why.
    """
    for candidate in (
        os.path.join(directory, SCHEDULER_CONFIG_NAME),
        os.path.join(directory, "..", "scheduler", SCHEDULER_CONFIG_NAME),
    ):
        if os.path.isfile(candidate):
            with open(candidate) as f:
                return json.load(f)
    raise ValueError(
        f"path_or_hub_id {path_or_hub_id!r} has no {SCHEDULER_CONFIG_NAME} (nor scheduler/{SCHEDULER_CONFIG_NAME}): "
        "the noise schedule the model was trained with is needed to sample from it"
    )


def prepare_for_sampling(unet):
    """The UNet in eval mode; on a GPU in half precision, with channels-last weights (the layout tensor-core convolutions want).

    On the CPU our convolutions choose oneDNN's layout themselves (`uncond.unet.Conv2d`).
    """
    unet.eval()
    parameter = next(unet.parameters(), None)
    if parameter is not None and parameter.device.type == "cuda" and parameter.dtype in (torch.float16, torch.bfloat16):
        unet.to(memory_format=torch.channels_last)
    return unet


def default_device() -> torch.device:
    """CUDA when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sampling_stream(
    model_fn: ModelFn,
    scheduler,
    shape: tuple,
    seed: int,
    device,
    num_inference_steps: int,
    callback=None,
    *,
    variation_seed: int | None = None,
    variation_strength: float = 0.0,
    edit: Edit | None = None,
    dtype: torch.dtype = torch.float32,
    **options,
):
    """The scheduler set to its steps, x_T drawn from `seed` (moved towards `variation_seed`'s), then the loop, from
    noise (`denoise`) or from a picture (`uncond.edit.edit_stream`): yields its steps, returns (x_0, steps done).
    `dtype`: x_t's (`uncond.sampling.sample_dtype` of the UNet: float32, or float64 for a float64 UNet)."""
    scheduler.set_timesteps(num_inference_steps)
    x_t, generator = starting_noise(shape, seed, device, variation_seed, variation_strength, dtype)
    if edit is not None:
        return (yield from edit_stream(model_fn, scheduler, edit, x_t, generator, callback, **options))
    return (yield from denoise(model_fn, scheduler, x_t, generator, callback, **options))


def check_edit_scheduler(edit: Edit | None, scheduler: str) -> None:
    """Inpainting goes back up the chain, which DDPM and DDIM allow (their step depends on t alone); multistep
    DPM-Solver++ and Euler's sigmas do not, so a mask with them is refused by name."""
    if edit is not None and edit.mask is not None and scheduler not in INPAINT_SCHEDULERS:
        raise ValueError(f"scheduler must be one of {', '.join(INPAINT_SCHEDULERS)} with a mask, got {scheduler!r}.")


def sample_images(
    unet,
    scheduler_config: dict,
    num_images: int,
    num_inference_steps: int,
    scheduler: str = "ddim",
    eta: float = 0.0,
    seed: int = 0,
) -> list:
    """`num_images` PIL images of an unconditional UNet with a fresh scheduler (training's sample grids)."""
    scheduler = make_scheduler(scheduler, scheduler_config)
    size, channels = unet.config.sample_size, unet.config.in_channels
    device = next(unet.parameters()).device
    was_training = unet.training
    unet.eval()
    shape = (num_images, channels, size, size)
    model_fn = unet_model_fn(unet)
    stream = sampling_stream(
        model_fn, scheduler, shape, seed, device, num_inference_steps, dtype=sample_dtype(unet), eta=eta
    )
    x_0, _ = run_to_end(stream)
    unet.train(was_training)
    return to_pil(x_0)


def forward_diffuse(image, timestep: int, scheduler_config: dict, size: int, seed: int = 0):
    """x_t ~ q(x_t | x_0) for a picture x_0 (Ho et al. 2020 eq. 4): what training shows the network."""
    scheduler = DDPMScheduler.from_config(scheduler_config)
    timestep = check_int("timestep", timestep, 0, scheduler.config.num_train_timesteps - 1)
    x_0 = from_pil(image, size)
    noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(seed))
    return to_pil(scheduler.add_noise(x_0, noise, torch.tensor([timestep])))[0]


def noise_schedule(scheduler_config: dict) -> dict:
    """beta_t, alpha-bar_t, the noise level, and alpha-bar_t rescaled to zero terminal SNR, per training timestep.

    The rescale (Lin et al. 2024, Alg. 1) shifts and scales sqrt(alpha-bar_t) so that the last step is pure noise
    (alpha-bar_T = 0): training then sees what sampling starts from. The shipped cosine schedule already ends at
    alpha-bar_T = 2.4e-9, so its two curves overlap; a linear schedule's end, 4e-5, is where it matters.
    """
    scheduler = DDPMScheduler.from_config(scheduler_config)
    rescaled = DDPMScheduler.from_config({**scheduler_config, "rescale_betas_zero_snr": True})
    alphas_cumprod = scheduler.alphas_cumprod
    return {
        "t": list(range(len(alphas_cumprod))),
        "beta": scheduler.betas.tolist(),
        "alpha_bar": alphas_cumprod.tolist(),
        "noise_level": (1 - alphas_cumprod).sqrt().tolist(),  # std of the noise in x_t
        "alpha_bar_zero_snr": rescaled.alphas_cumprod.tolist(),
    }


def describe(pipe, **settings) -> dict:
    """The settings a result records (in its PNGs too): the model, the given settings, the device and dtype."""
    return {
        "model": pipe.name,
        **settings,
        "size": pipe.unet.config.sample_size,
        "device": str(pipe.device),
        "dtype": str(pipe.dtype).replace("torch.", ""),
    }


def edit_settings(edit: Edit | None, variation_seed: int | None, variation_strength: float) -> dict:
    """What a picture to start from, a mask or a variation adds to a result's settings (nothing when unused)."""
    settings = {}
    if variation_seed is not None and variation_strength > 0:
        settings.update(variation_seed=variation_seed, variation_strength=variation_strength)
    if edit is not None:
        settings["strength"] = edit.strength
        if edit.mask is not None:
            settings.update(inpainting=True, jump_length=edit.jump_length, jump_n_sample=edit.jump_n_sample)
    return settings


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
        from uncond.convert import load_unet
        from uncond.hub import resolve_model_dir

        directory = resolve_model_dir(path_or_hub_id)
        scheduler_config = read_scheduler_config(directory, path_or_hub_id)
        unet = load_unet(directory)
        unet.to(device=device or default_device(), dtype=dtype or torch.float32)
        return cls(unet, scheduler_config, name=os.path.basename(os.path.normpath(str(path_or_hub_id))))

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def stream(
        self,
        num_images: int = 4,
        num_inference_steps: int = 50,
        scheduler: str = "ddim",
        eta: float = 0.0,
        seed: int = 0,
        callback: Callback | None = None,
        image: Image.Image | None = None,
        strength: float | None = None,
        mask: Mask | None = None,
        jump_length: int = DEFAULT_JUMP_LENGTH,
        jump_n_sample: int = DEFAULT_JUMP_N_SAMPLE,
        variation_seed: int | None = None,
        variation_strength: float = 0.0,
    ) -> Generator[Step | SampleOutput]:
        """Sample images, yielding a `Step` after each denoising step and the `SampleOutput` last; same seed, same images.

        `callback(step, t, x_t, pred_original_sample)` returning True stops after that step (the output then holds
        the estimate of x_0 so far); closing the generator stops it with no output.
        image: start from this picture (SDEdit, `uncond.edit`), noised to `strength` (default 0.8); with a `mask`
        (white where to fill, the picture's size) inpaint it instead (RePaint, `uncond.repaint`; ddpm or ddim;
        strength default 1), jumping back `jump_length` steps for `jump_n_sample` passes.
        variation_seed, variation_strength: x_T moved that far towards another seed's (`uncond.noise`).
        """
        num_train_timesteps = self.scheduler_config.get("num_train_timesteps", 1000)
        num_images, num_inference_steps, eta, seed = check_sampling_args(
            num_images, num_inference_steps, scheduler, eta, seed, num_train_timesteps
        )
        variation_seed, variation_strength = check_variation(variation_seed, variation_strength)
        size, channels = self.unet.config.sample_size, self.unet.config.in_channels
        edit = prepare_edit(image, size, channels, strength, mask, jump_length, jump_n_sample)
        check_edit_scheduler(edit, scheduler)
        started = time.perf_counter()
        x_0, steps_done = yield from sampling_stream(
            unet_model_fn(self.unet),
            make_scheduler(scheduler, self.scheduler_config),
            (num_images, channels, size, size),
            seed,
            self.device,
            num_inference_steps,
            callback,
            variation_seed=variation_seed,
            variation_strength=variation_strength,
            edit=edit,
            dtype=sample_dtype(self.unet),
            eta=eta,
        )
        elapsed = time.perf_counter() - started
        settings = describe(self, scheduler=scheduler, steps=num_inference_steps, eta=eta, seed=seed)
        settings.update(edit_settings(edit, variation_seed, variation_strength))
        settings["elapsed"] = round(elapsed, 3)
        planned = num_inference_steps if edit is None else edit.planned_steps(num_inference_steps)
        yield SampleOutput(to_pil(x_0), seed, planned, steps_done, elapsed, settings)

    def __call__(self, **kwargs) -> SampleOutput:
        """Sample images: `stream` run to its end (the same arguments)."""
        *_, result = self.stream(**kwargs)
        return result
