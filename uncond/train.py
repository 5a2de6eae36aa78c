"""Train the unconditional UNet with the DDPM objective (Ho et al. 2020, Algorithm 1).

    python -m uncond.train --data data/emoji --out runs/uncond [--config FILE] [--resume]
    accelerate launch -m uncond.train ...   (mixed precision, several GPUs; same flags)

Each step: x_0 from the data, t ~ U{0..T-1}, ε ~ N(0, I), x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε (`add_noise`),
loss = mean ||target - model(x_t, t)||² with target ε (Ho et al. eq. 14), or v = √ᾱ_t ε - √(1 - ᾱ_t) x_0
(Salimans & Ho 2022). The loop around it (`uncond.train_loop`) is shared with the other trainers: AdamW,
warm-up + cosine, EMA, accelerate, checkpoints in `OUT/checkpoint/` that resume exactly.

`OUT/` always holds the latest EMA model in `from_pretrained` form, with `train_config.json` and
`scheduler_config.json`. The scheduler config is written from the training config alone
(`scheduler_config`): the noise schedule and prediction type training used, and the sampling defaults
recorded with the model (`clip_sample`, `clip_sample_range`, `timestep_spacing`), so a retrain writes
the same file.
"""

import json
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from uncond import train_loop
from uncond.recipes import LOSS_WEIGHTINGS, TIMESTEP_SAMPLINGS, assign_noise, min_snr_weights, sample_timesteps
from uncond.schedule import TIMESTEP_SPACINGS
from uncond.scheduler import DDPMScheduler
from uncond.train_config import LoopConfig, config_from_args, training_parser
from uncond.train_loop import TrainingTask, batch_indices, step_generator
from uncond.unet import UNet, UNetConfig

SCHEDULER_CONFIG_NAME = "scheduler_config.json"
TRAIN_CONFIG_NAME = "train_config.json"


@dataclass
class TrainConfig(LoopConfig):
    """A UNet training run: the loop's settings, the diffusion process, sampling defaults, data and architecture."""

    image_size: int = 32
    ema_decay: float = 0.999  # 0 keeps no EMA
    prediction_type: str = "epsilon"  # or "v_prediction"
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    # sampling defaults, recorded in scheduler_config.json (training does not use them)
    clip_sample: bool = True  # clip the x_0 estimate to [-clip_sample_range, clip_sample_range]
    clip_sample_range: float = 1.0
    timestep_spacing: str = "leading"  # which train steps a short sampler visits (Lin et al. 2023, Table 2)
    random_flip: bool = False  # emoji are not symmetric
    sample_every: int = 1000
    num_sample_images: int = 16
    balance_variants: bool = False  # repeat rare emoji in each epoch (uncond.data.repeat_factors)
    # recipes (uncond/recipes.py), all off by default
    loss_weighting: str = "none"  # or "min_snr" (Hang et al. 2023)
    snr_gamma: float = 5.0  # γ of min-SNR-γ
    timestep_sampling: str = "uniform"  # or "lognormal" (EDM), "laplace" (Hang et al. 2024)
    immiscible: bool = False  # pair the batch's noise draws with its images by least distance (Li et al. 2024)
    init_from: str = ""  # a model folder to start from instead of random weights; ignored when resuming
    unet: dict = field(default_factory=dict)  # UNetConfig fields; sample_size follows image_size

    def __post_init__(self):
        super().__post_init__()
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {self.timestep_spacing!r}")
        if not isinstance(self.clip_sample_range, (int, float)) or self.clip_sample_range <= 0:
            raise ValueError(f"clip_sample_range must be > 0, got {self.clip_sample_range!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.sample_every < 1:
            raise ValueError(f"sample_every must be >= 1, got {self.sample_every}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}")
        if isinstance(self.snr_gamma, bool) or not isinstance(self.snr_gamma, (int, float)) or self.snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be a number > 0, got {self.snr_gamma!r}")
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ValueError(f"timestep_sampling must be one of {TIMESTEP_SAMPLINGS}, got {self.timestep_sampling!r}")


def build_scheduler(config: TrainConfig) -> DDPMScheduler:
    """The training noise schedule, carrying the sampling defaults; samplers are built from its config."""
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        clip_sample=config.clip_sample,
        clip_sample_range=float(config.clip_sample_range),
        timestep_spacing=config.timestep_spacing,
    )


def scheduler_config(config: TrainConfig) -> dict:
    """What training writes as scheduler_config.json: a function of the training config only (every public key)."""
    return {key: value for key, value in build_scheduler(config).config.items() if not key.startswith("_")}


# ---- the loss ----


def draw_noise(shape: tuple, num_train_timesteps: int, generator: torch.Generator) -> tuple:
    """ε ~ N(0, I) of `shape` and t ~ U{0..T-1} per item, drawn on the CPU (device-independent, resumable)."""
    noise = torch.randn(shape, generator=generator)
    timesteps = torch.randint(0, num_train_timesteps, (shape[0],), generator=generator)
    return noise, timesteps


def draw_training_noise(x_0: torch.Tensor, scheduler, config: TrainConfig, generator: torch.Generator) -> tuple:
    """ε and t of a global batch x_0 (B, C, H, W) under the config's recipes; with all off, `draw_noise`'s draws
    (ε first, then t ~ U{0..T-1}: `sample_timesteps("uniform")` is that randint)."""
    noise = torch.randn(x_0.shape, generator=generator)
    timesteps = sample_timesteps(config.timestep_sampling, x_0.shape[0], scheduler.alphas_cumprod, generator)
    if config.immiscible:
        noise = assign_noise(x_0, noise)
    return noise, timesteps


def loss_weights(scheduler, config: TrainConfig, timesteps: torch.Tensor) -> torch.Tensor | None:
    """(B,) per-item loss weights of the config's weighting, None for the plain mean."""
    if config.loss_weighting == "none":
        return None
    return min_snr_weights(scheduler.alphas_cumprod, timesteps, float(config.snr_gamma), config.prediction_type)


def noisy_inputs(scheduler, x_0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, prediction_type: str):
    """(x_t, target): x_t from q(x_t | x_0) (Ho et al. eq. 4) and the regression target, ε or v."""
    x_t = scheduler.add_noise(x_0, noise, timesteps)
    target = noise if prediction_type == "epsilon" else scheduler.get_velocity(x_0, noise, timesteps)
    return x_t, target


def mse_loss(model_output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over all elements of (model_output - target)², in float32 (Ho et al. eq. 14); with (B,) `weights`,
    each item's mean is weighted first (min-SNR-γ)."""
    if weights is None:
        return F.mse_loss(model_output.float(), target.float())
    per_item = (model_output.float() - target.float()).pow(2).flatten(1).mean(dim=1)  # (B,)
    return (per_item * weights.to(per_item.device)).mean()


def diffusion_loss(
    model, scheduler: DDPMScheduler, x_0: torch.Tensor, generator: torch.Generator, prediction_type: str, **model_kwargs
) -> torch.Tensor:
    """The simplified DDPM loss (Ho et al. 2020, eq. 14) for one batch x_0 (B, C, H, W)."""
    noise, timesteps = draw_noise(x_0.shape, scheduler.config.num_train_timesteps, generator)
    x_t, target = noisy_inputs(scheduler, x_0, noise.to(x_0.device), timesteps.to(x_0.device), prediction_type)
    return mse_loss(model(x_t, timesteps.to(x_0.device), **model_kwargs), target)


# ---- the task ----


def load_batch(dataset, indices: torch.Tensor, random_flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Stack the data set's images at `indices` into (B, C, H, W) in [-1, 1], flipping half of them if asked."""
    x_0 = torch.stack([dataset[int(i)]["pixel_values"] for i in indices])
    if random_flip:
        flip = torch.rand(len(indices), generator=generator) < 0.5
        x_0[flip] = x_0[flip].flip(-1)
    return x_0


def epoch_pool(captions: list, balance_variants: bool) -> torch.Tensor:
    """The items an epoch walks: each once, or rare emoji several times (repeat factor sampling)."""
    if not balance_variants:
        return torch.arange(len(captions))
    from uncond.data import repeat_factors

    return torch.repeat_interleave(torch.arange(len(captions)), torch.tensor(repeat_factors(captions)))


class UnconditionalTask(TrainingTask):
    """The DDPM objective on a UNet; txt2img's task extends it with text."""

    def __init__(self, dataset, config: TrainConfig, log=print):
        self.dataset, self.config = dataset, config
        self.scheduler = build_scheduler(config)
        self.eval_every = config.sample_every
        self.pool = epoch_pool(list(dataset.captions), config.balance_variants)
        if config.balance_variants:
            log(f"balance_variants: an epoch holds {len(self.pool)} items for {len(dataset)} images")

    def build_model(self, config: TrainConfig) -> torch.nn.Module:
        """A freshly initialised UNet of the configured architecture."""
        return UNet(UNetConfig(**{**config.unet, "sample_size": config.image_size}))

    def initialise(self, model, config: TrainConfig, log) -> None:
        """Warm start from `init_from`'s (EMA) weights; the optimizer starts afresh."""
        if config.init_from:
            model.load_state_dict(type(model).from_pretrained(config.init_from).state_dict())
            log(f"initialised from {config.init_from}")

    def batch(self, step: int, part: slice, device) -> dict:
        """x_0, ε, t, x_t and the target of step `step`, drawn for the global batch, this process's `part` kept."""
        c = self.config
        indices = self.pool[batch_indices(step, len(self.pool), c.batch_size, c.seed)]
        generator = step_generator(c.seed, step)
        x_0 = load_batch(self.dataset, indices, c.random_flip, generator)  # (B, C, H, W)
        model_kwargs = self.model_kwargs(step, indices, generator, part, device)
        noise, timesteps = draw_training_noise(x_0, self.scheduler, c, generator)
        weights = loss_weights(self.scheduler, c, timesteps[part])
        x_0, noise, timesteps = x_0[part].to(device), noise[part].to(device), timesteps[part].to(device)
        x_t, target = noisy_inputs(self.scheduler, x_0, noise, timesteps, c.prediction_type)
        batch = {"x_0": x_0, "timesteps": timesteps, "x_t": x_t, "target": target, "model_kwargs": model_kwargs}
        return {**batch, "weights": weights}

    def model_kwargs(self, step: int, indices: torch.Tensor, generator: torch.Generator, part: slice, device) -> dict:
        """Extra inputs of the model for step `step`'s global batch at `indices`, `part` kept (none: unconditional)."""
        return {}

    def loss(self, model, batch: dict) -> torch.Tensor:
        """||target - model(x_t, t)||², averaged (each item weighted first where a weighting is set)."""
        output = model(batch["x_t"], batch["timesteps"], **batch["model_kwargs"])
        return mse_loss(output, batch["target"], batch.get("weights"))

    def save_model(self, out_dir: str, model, config: TrainConfig) -> None:
        """The EMA model in `from_pretrained` form, with its scheduler and training configs."""
        model.save_pretrained(out_dir)
        write_configs(out_dir, config)

    def evaluate(self, model, config: TrainConfig, out_dir: str, step: int) -> None:
        """A grid of DDIM-50 samples from the EMA weights, fixed seed, to watch training."""
        from uncond.images import save_grid
        from uncond.pipeline import sample_images

        images = sample_images(model, scheduler_config(config), config.num_sample_images, 50, "ddim", seed=0)
        save_grid(images, samples_path(out_dir, step))


def samples_path(out_dir: str, step: int) -> str:
    """OUT/samples/step_NNNNNNN.png."""
    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    return os.path.join(out_dir, "samples", f"step_{step:07d}.png")


def write_configs(out_dir: str, config: TrainConfig) -> None:
    """scheduler_config.json (from the training config) and train_config.json beside the weights."""
    with open(os.path.join(out_dir, SCHEDULER_CONFIG_NAME), "w") as f:
        json.dump(scheduler_config(config), f, indent=2)
    with open(os.path.join(out_dir, TRAIN_CONFIG_NAME), "w") as f:
        json.dump(asdict(config), f, indent=2)


def train(data: str, out_dir: str, config: TrainConfig, resume: bool = False, task=None, log=print) -> str:
    """Run (or continue) a training run on the images at `data`; returns `out_dir`, which then holds the EMA model."""
    from uncond.data import ImageCaptionDataset

    def make_task(config):
        if task is not None:
            return task
        return UnconditionalTask(ImageCaptionDataset(data, image_size=config.image_size), config, log)

    return train_loop.train(out_dir, config, make_task, resume=resume, log=log)


def main(argv=None):
    parser = training_parser(
        "Train the unconditional DDPM UNet.", TrainConfig, "JSON file with TrainConfig fields (and 'unet': UNetConfig)"
    )
    args = parser.parse_args(argv)
    train(args.data, args.out, config_from_args(args, TrainConfig), resume=args.resume)


if __name__ == "__main__":
    main()
