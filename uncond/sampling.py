"""The denoising loop, written once: x_T -> x_0 over a scheduler's timesteps, for any model function.

    x_t, generator = initial_noise((4, 3, 32, 32), seed=0, device="cpu")
    scheduler = make_scheduler("ddim", scheduler_config)
    scheduler.set_timesteps(50)
    x_0, steps_done = sample(unet_model_fn(unet), scheduler, x_t, generator, eta=1.0)

What differs between the pipelines is the model function handed to the loop, `model_fn(x_t, t) -> model_output`
(k-diffusion's lesson): `unet_model_fn` for an unconditional UNet, `txt2img.guidance.guided_model_fn` for a
text-conditional UNet with classifier-free guidance; an upsampler will concatenate its low-res image the same way.
Every scheduler, ours or diffusers', goes through the same `step` call; the keyword arguments a scheduler's `step`
takes (eta, generator, ...) are read from its signature, as diffusers' pipelines do (`prepare_extra_step_kwargs`).

`denoise` is a generator that yields a `Step` after each step, so a caller can show previews, stop after any step
(a callback returning True, or closing the generator), or stream it to a web page; `sample` runs it to the end.

Seeds are device-independent: x_T and DDPM's per-step noise come from a CPU `torch.Generator` and are moved to the
device. Precision: x_t and the scheduler's arithmetic stay float32 whatever the UNet runs in (`sample_dtype`); the model
function casts the UNet's input down and its output back up, so rounding does not pile up over the steps in half
precision. In the unconditional and text-to-image pipelines a float64 UNet gets a float64 loop, noise included: the
pinned tests run so, where rounding then differs between CPUs by about 1e-14 instead of float32's 1e-6, which a few
steps amplify to a flipped 8-bit pixel.
On a GPU the loop never waits for the device: the timesteps go over once, the CPU noise is drawn into pinned memory.
"""

import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch

from uncond.scheduler import DDIMScheduler, DDPMScheduler

# name -> our schedulers; and diffusers' samplers that fit the same loop (set_timesteps, scale_model_input, step)
SCHEDULER_CLASSES = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}
DIFFUSERS_SCHEDULERS = {"dpm++": "DPMSolverMultistepScheduler", "euler": "EulerDiscreteScheduler"}
SCHEDULER_NAMES = tuple(SCHEDULER_CLASSES) + tuple(DIFFUSERS_SCHEDULERS)
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

# model_fn(x_t (B, C, H, W) float32 (float64 for a float64 UNet), t (a 0-d tensor on x_t's device)) -> model_output (B, C, H, W) float32
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# callback(step, timestep, x_t, pred_original_sample) -> truthy to stop the loop after this step
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], bool | None]
# hook(step, timestep, prev_sample) -> the sample the loop goes on from (RePaint: the known region pasted in)
Hook = Callable[[int, int, torch.Tensor], torch.Tensor]


@dataclass
class Step:
    """One denoising step done: its index (0-based), the timestep it denoised, x_{t-1} and the estimate of x_0."""

    index: int
    timestep: int
    x_t: torch.Tensor  # the sample after this step (B, C, H, W), float32 (float64 for a float64 UNet)
    pred_original_sample: torch.Tensor  # the step's estimate of x_0, for previews


def make_scheduler(name: str, config: dict, **options):
    """A fresh sampler built from the training schedule's config: our DDPM or DDIM, or diffusers' DPM-Solver++ or Euler.

    `options` are sampling-time settings of the scheduler (thresholding, dynamic_thresholding_ratio, ...); one that
    the named scheduler does not have is refused by name.
    """
    if name in SCHEDULER_CLASSES:
        cls, shared = SCHEDULER_CLASSES[name], dict(config)
    elif name in DIFFUSERS_SCHEDULERS:
        import diffusers

        cls = getattr(diffusers, DIFFUSERS_SCHEDULERS[name])
        shared = {k: v for k, v in config.items() if k in SHARED_SCHEDULE_KEYS}
    else:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULER_NAMES)}, got {name!r}")
    accepted = inspect.signature(cls.__init__).parameters
    for option in options:
        if option not in accepted:
            raise ValueError(f"{option} is not available with the {name} scheduler")
    return cls.from_config({**shared, **options})


def initial_noise(shape: tuple, seed: int, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Generator]:
    """x_T ~ N(0, I) drawn on the CPU from `seed` (device-independent), and the generator for later noise.

    Drawn in float32 and cast to `dtype` (a half-precision run gets the float32 run's noise), except float64, drawn
    in float64: float32's draw is vectorised per CPU (its log and cos differ in the last bit between kernels)."""
    generator = torch.Generator().manual_seed(seed)
    pinned = torch.device(device).type == "cuda"  # pinned memory: the copy below does not block the host
    draw = torch.float64 if dtype == torch.float64 else torch.float32
    x_t = torch.randn(shape, generator=generator, dtype=draw, pin_memory=pinned)
    return x_t.to(device=device, dtype=dtype, non_blocking=True), generator


def model_dtype(module, default: torch.dtype) -> torch.dtype:
    """The dtype a module computes in (its first parameter's), or `default` for one without parameters."""
    parameter = next(module.parameters(), None)
    return default if parameter is None else parameter.dtype


def sample_dtype(unet) -> torch.dtype:
    """x_t's dtype for a UNet: float32, whatever the UNet computes in, except float64 for a float64 UNet."""
    return torch.float64 if model_dtype(unet, torch.float32) == torch.float64 else torch.float32


def unet_model_fn(unet) -> ModelFn:
    """The model function of an unconditional UNet: its input cast to the UNet's dtype, its output back to x_t's."""
    dtype = model_dtype(unet, torch.float32)

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet(x_t.to(dtype), t).to(x_t.dtype)

    return model_fn


def step_kwargs(scheduler, **options) -> dict:
    """Those of `options` (eta, generator, use_clipped_model_output, ...) that this scheduler's `step` accepts."""
    accepted = inspect.signature(scheduler.step).parameters
    return {name: value for name, value in options.items() if name in accepted}


def predicted_x0(step_output, x_t: torch.Tensor) -> torch.Tensor:
    """The step's estimate of x_0 for previews; DPM-Solver++ reports none, so x_t stands in."""
    pred_original_sample = getattr(step_output, "pred_original_sample", None)
    return x_t if pred_original_sample is None else pred_original_sample


def denoise(
    model_fn: ModelFn,
    scheduler,
    x_t: torch.Tensor,
    generator=None,
    callback: Callback | None = None,
    *,
    timesteps=None,
    hook: Hook | None = None,
    **options,
) -> Generator[Step, None, tuple[torch.Tensor, int]]:
    """Run the reverse process from x_T = `x_t`, yielding each step; returns (x_0, steps done).

    Ho et al. 2020 Alg. 2 (DDPM) / Song et al. 2021 eq. 12 (DDIM), or whatever the scheduler's `step` computes.
    `options` go to the scheduler's `step` where it takes them (`step_kwargs`): eta for DDIM, for instance.
    `callback(step, timestep, x_t, pred_original_sample)` returning True stops the loop after that step; the best
    estimate of x_0 is then the step's `pred_original_sample`.
    `timesteps`: the timesteps to step from, in order (default `scheduler.timesteps`, all of them): a tail of them
    starts part-way (image to image), and DDPM and DDIM, whose step depends on t alone, may revisit timesteps
    (RePaint's jumps). A run that starts at the schedule's first timestep takes `x_t` as x_T ~ N(0, I) and scales it
    by `init_noise_sigma`; one that starts later takes `x_t` at that timestep's noise level as it is (`add_noise`'s).
    `hook(step, timestep, prev_sample) -> x_t` may change the sample after each step (RePaint pastes the known
    region); the step yielded and the next step see what it returns.
    """
    extra = step_kwargs(scheduler, generator=generator, **options)
    run = scheduler.timesteps if timesteps is None else torch.as_tensor(timesteps)
    on_device = run.to(x_t.device, non_blocking=True)  # once, not a host-to-device copy per step
    if timesteps is None or (len(run) and int(run[0]) == int(scheduler.timesteps[0])):
        x_t = x_t * scheduler.init_noise_sigma  # 1 for DDPM/DDIM; sigma_max for Euler
    for i, t in enumerate(run):
        model_input = scheduler.scale_model_input(x_t, t)  # the identity for DDPM/DDIM
        out = scheduler.step(model_fn(model_input, on_device[i]), t, x_t, **extra)
        x_t = out.prev_sample if hook is None else hook(i, int(t), out.prev_sample)
        step = Step(i, int(t), x_t, predicted_x0(out, x_t))
        yield step
        if callback is not None and callback(i, step.timestep, x_t, step.pred_original_sample):
            return step.pred_original_sample, i + 1
    return x_t, len(run)


# Inference mode for each resumption of the generator (torch wraps a generator function step by step, so the caller's
# code between steps runs outside it). Applied here, not as a decorator, because mutmut skips decorated functions.
denoise = torch.inference_mode()(denoise)


def run_to_end(stream: Generator):
    """Exhaust a generator and return what it returns (`denoise`'s (x_0, steps done), for instance)."""
    while True:
        try:
            next(stream)
        except StopIteration as stop:
            return stop.value


def sample(
    model_fn: ModelFn, scheduler, x_t: torch.Tensor, generator=None, callback: Callback | None = None, **options
) -> tuple[torch.Tensor, int]:
    """`denoise` without the stream of steps: returns (x_0, steps done)."""
    return run_to_end(denoise(model_fn, scheduler, x_t, generator, callback, **options))
