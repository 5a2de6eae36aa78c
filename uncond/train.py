"""Train the unconditional UNet with the DDPM objective (Ho et al. 2020, Algorithm 1).

    python -m uncond.train --data data/emoji --out runs/uncond [--config FILE] [--resume]
    accelerate launch -m uncond.train ...   (mixed precision, several GPUs; same flags)

Each step: x_0 from the data, t ~ U{0..T-1}, eps ~ N(0, I), x_t = add_noise(x_0, eps, t),
loss = ||target - model(x_t, t)||^2 with target eps (or v, Salimans & Ho 2022).
AdamW with linear warm-up and cosine decay; sampling uses an EMA of the weights.

Everything the run needs to continue is in `OUT/checkpoint/` (safetensors + JSON, written to a
temporary folder and renamed), and `OUT/` itself always holds the latest EMA model in
`from_pretrained` form. Data order and noise are functions of (seed, step), so a resumed run
takes exactly the batches and noise an uninterrupted one would have taken.
"""

import argparse
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from uncond.scheduler import DDPMScheduler
from uncond.unet import UNet, UNetConfig

CHECKPOINT_DIR = "checkpoint"
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
TRAIN_CONFIG_NAME = "train_config.json"


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings of a training run; saved with every checkpoint."""

    image_size: int = 32
    batch_size: int = 64
    max_steps: int = 20000
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 500
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    prediction_type: str = "epsilon"  # or "v_prediction"
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    random_flip: bool = False  # emoji are not symmetric
    mixed_precision: str = "no"  # "no", "bf16" or "fp16", through accelerate
    gradient_accumulation_steps: int = 1
    checkpoint_every: int = 250
    sample_every: int = 1000
    num_sample_images: int = 16
    seed: int = 0
    balance_variants: bool = False  # repeat rare emoji in each epoch (uncond.data.repeat_factors)
    init_from: str = (
        ""  # a model folder to start from instead of random weights (e.g. the shipped model); ignored when resuming
    )
    unet: dict = field(default_factory=dict)  # UNetConfig fields; sample_size follows image_size

    def __post_init__(self):
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        for name in ("batch_size", "max_steps", "checkpoint_every", "sample_every", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def learning_rate_factor(step: int, warmup_steps: int, max_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at max_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def update_ema(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * weights."""
    for ema_p, p in zip(ema_model.parameters(), model.parameters()):
        ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay warmed up over the first steps, so early weights are forgotten fast."""
    return min(decay, (1 + step) / (10 + step))


def batch_indices(step: int, num_items: int, batch_size: int, seed: int) -> torch.Tensor:
    """The data indices of global step `step`: epochs are seeded permutations, walked in order."""
    steps_per_epoch = max(1, num_items // batch_size)
    epoch, position = divmod(step, steps_per_epoch)
    permutation = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    if num_items < batch_size:  # a tiny data set: repeat it to fill the batch
        permutation = permutation.repeat(math.ceil(batch_size / num_items))
        position = 0
    return permutation[position * batch_size : (position + 1) * batch_size]


def load_batch(dataset, indices: torch.Tensor, random_flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Stack the data set's images at `indices` into (B, C, H, W) in [-1, 1], flipping half of them if asked."""
    x_0 = torch.stack([dataset[int(i)]["pixel_values"] for i in indices])
    if random_flip:
        flip = torch.rand(len(indices), generator=generator) < 0.5
        x_0[flip] = x_0[flip].flip(-1)
    return x_0


def diffusion_loss(
    model, scheduler: DDPMScheduler, x_0: torch.Tensor, generator: torch.Generator, prediction_type: str, **model_kwargs
) -> torch.Tensor:
    """The simplified DDPM loss (Ho et al. 2020, eq. 14) for one batch x_0 (B, C, H, W)."""
    # noise and timesteps are drawn on the CPU from a per-step generator: device-independent and resumable
    noise = torch.randn(x_0.shape, generator=generator).to(x_0.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (x_0.shape[0],), generator=generator).to(
        x_0.device
    )
    x_t = scheduler.add_noise(x_0, noise, timesteps)
    target = noise if prediction_type == "epsilon" else scheduler.get_velocity(x_0, noise, timesteps)
    model_output = model(x_t, timesteps, **model_kwargs)
    return F.mse_loss(model_output.float(), target.float())


# ---- checkpoints: safetensors and JSON only ----


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer's state into flat tensors (for safetensors) and JSON-able hyper-parameters."""
    state = optimizer.state_dict()
    tensors = {}
    for index, per_param in state["state"].items():
        for name, value in per_param.items():
            tensors[f"{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, {"param_groups": state["param_groups"]}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    """Inverse of `optimizer_to_tensors`."""
    per_param = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})


def save_checkpoint(out_dir: str, model, ema_model, optimizer, step: int, config: TrainConfig) -> None:
    """Write `out_dir/checkpoint` atomically: fill a temporary folder, then swap it in."""
    final = os.path.join(out_dir, CHECKPOINT_DIR)
    tmp, old = final + ".tmp", final + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(tmp, "model.safetensors"))
    save_file({k: v.contiguous() for k, v in ema_model.state_dict().items()}, os.path.join(tmp, "ema.safetensors"))
    tensors, meta = optimizer_to_tensors(optimizer)
    save_file(tensors, os.path.join(tmp, "optimizer.safetensors"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({"step": step, "optimizer": meta, "train_config": asdict(config)}, f, indent=2)
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(out_dir: str) -> str | None:
    """The newest complete checkpoint folder (a crash between the two renames leaves `.old`)."""
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        path = os.path.join(out_dir, name)
        if os.path.isfile(os.path.join(path, "state.json")):
            return path
    return None


def load_checkpoint(path: str, model, ema_model, optimizer) -> int:
    """Restore weights, EMA and optimizer from a checkpoint folder; returns the step to continue from."""
    model.load_state_dict(load_file(os.path.join(path, "model.safetensors")))
    ema_model.load_state_dict(load_file(os.path.join(path, "ema.safetensors")))
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    optimizer_from_tensors(optimizer, load_file(os.path.join(path, "optimizer.safetensors")), state["optimizer"])
    return state["step"]


def save_model_folder(out_dir: str, ema_model, scheduler: DDPMScheduler, config: TrainConfig, dtype=None) -> None:
    """Write the EMA model in `from_pretrained` form: config.json, model.safetensors, scheduler and training configs."""
    ema_model.save_pretrained(out_dir, dtype=dtype)
    with open(os.path.join(out_dir, SCHEDULER_CONFIG_NAME), "w") as f:
        json.dump(dict(scheduler.config), f, indent=2)
    with open(os.path.join(out_dir, TRAIN_CONFIG_NAME), "w") as f:
        json.dump(asdict(config), f, indent=2)


def build_scheduler(config: TrainConfig) -> DDPMScheduler:
    """The training noise schedule; samplers are built from its config."""
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
    )


class UnconditionalTask:
    """What the training loop needs to know about the model it trains; txt2img supplies its own task."""

    def __init__(self, dataset):
        self.dataset = dataset

    def build_model(self, config: TrainConfig) -> torch.nn.Module:
        """A freshly initialised UNet of the configured architecture."""
        return UNet(UNetConfig(**{**config.unet, "sample_size": config.image_size}))

    def model_kwargs(self, indices: torch.Tensor, generator: torch.Generator, device) -> dict:
        """Extra inputs of the model for the batch at `indices` (none: unconditional)."""
        return {}

    def save_samples(self, ema_model, scheduler: DDPMScheduler, config: TrainConfig, path: str) -> None:
        """A grid of DDIM-50 samples from the EMA weights, fixed seed, to watch training."""
        from uncond.images import save_grid
        from uncond.pipeline import sample_images

        save_grid(sample_images(ema_model, dict(scheduler.config), config.num_sample_images, 50, "ddim", seed=0), path)

    def save_model(self, out_dir: str, ema_model, scheduler: DDPMScheduler, config: TrainConfig) -> None:
        """The EMA model in `from_pretrained` form."""
        save_model_folder(out_dir, ema_model, scheduler, config)


def train(data: str, out_dir: str, config: TrainConfig, resume: bool = False, task=None, log=print) -> str:
    """Run (or continue) a training run; returns `out_dir`, which then holds the EMA model."""
    import copy

    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from uncond.data import ImageCaptionDataset, repeat_factors

    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps
    )
    checkpoint = find_checkpoint(out_dir) if resume else None
    if checkpoint is not None:
        with open(os.path.join(checkpoint, "state.json")) as f:
            saved = json.load(f)["train_config"]
        # the architecture and data settings come from the checkpoint; the length may be extended
        config = type(config)(**{**saved, "max_steps": config.max_steps})
    if task is None:
        task = UnconditionalTask(ImageCaptionDataset(data, image_size=config.image_size))
    dataset = task.dataset
    torch.manual_seed(config.seed)
    model = task.build_model(config)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    start_step = load_checkpoint(checkpoint, model, ema_model, optimizer) if checkpoint else 0
    if not checkpoint and config.init_from:
        # warm start: the saved (EMA) weights become both the trained and the EMA weights; the optimizer starts afresh
        state = type(model).from_pretrained(config.init_from).state_dict()
        model.load_state_dict(state)
        ema_model.load_state_dict(state)
        log(f"initialised from {config.init_from}")
    scheduler = build_scheduler(config)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: learning_rate_factor(step, config.warmup_steps, config.max_steps),
        last_epoch=start_step - 1,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    ema_model.to(accelerator.device)

    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"{type(ema_model).__name__} {n_params / 1e6:.2f}M parameters, {len(dataset)} images, step {start_step} -> {config.max_steps}, device {accelerator.device}"
    )
    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    # an epoch walks `pool`: every item once, or rare ones several times when balancing variants
    if config.balance_variants:
        pool = torch.repeat_interleave(torch.arange(len(dataset)), torch.tensor(repeat_factors(dataset.captions)))
        log(f"balance_variants: an epoch holds {len(pool)} items for {len(dataset)} images")
    else:
        pool = torch.arange(len(dataset))
    # each process takes its share of the global batch
    per_process = config.batch_size // accelerator.num_processes
    progress = tqdm(
        range(start_step, config.max_steps),
        initial=start_step,
        total=config.max_steps,
        disable=not accelerator.is_main_process,
    )
    started = time.time()
    for step in range(start_step, config.max_steps):
        for micro in range(config.gradient_accumulation_steps):
            global_step = step * config.gradient_accumulation_steps + micro
            indices = pool[batch_indices(global_step, len(pool), config.batch_size, config.seed)]
            indices = indices[accelerator.process_index * per_process : (accelerator.process_index + 1) * per_process]
            generator = torch.Generator().manual_seed(
                config.seed * 1_000_003 + global_step * 97 + accelerator.process_index
            )
            x_0 = load_batch(dataset, indices, config.random_flip, generator).to(accelerator.device)
            model_kwargs = task.model_kwargs(indices, generator, accelerator.device)
            torch.manual_seed(config.seed + global_step)  # dropout, if any
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = diffusion_loss(model, scheduler, x_0, generator, config.prediction_type, **model_kwargs)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        lr_schedule.step()
        update_ema(ema_model, accelerator.unwrap_model(model), ema_decay_at(step, config.ema_decay))
        done = step + 1
        images_per_s = (
            (done - start_step) * config.batch_size * config.gradient_accumulation_steps / (time.time() - started)
        )
        progress.update(1)
        progress.set_postfix(
            loss=f"{loss.item():.4f}", img_s=f"{images_per_s:.1f}", lr=f"{lr_schedule.get_last_lr()[0]:.2e}"
        )
        if accelerator.is_main_process and (done % config.checkpoint_every == 0 or done == config.max_steps):
            save_checkpoint(out_dir, accelerator.unwrap_model(model), ema_model, optimizer, done, config)
            task.save_model(out_dir, ema_model, scheduler, config)
        if accelerator.is_main_process and (done % config.sample_every == 0 or done == config.max_steps):
            task.save_samples(ema_model, scheduler, config, os.path.join(out_dir, "samples", f"step_{done:07d}.png"))
    progress.close()
    accelerator.wait_for_everyone()
    return out_dir


# TrainConfig fields that can also be given as flags (they override --config)
FLAG_OVERRIDES = (
    ("max_steps", int),
    ("batch_size", int),
    ("learning_rate", float),
    ("image_size", int),
    ("mixed_precision", str),
    ("checkpoint_every", int),
    ("sample_every", int),
    ("seed", int),
    ("prediction_type", str),
    ("init_from", str),
)
FLAG_SWITCHES = ("random_flip", "balance_variants")


def training_parser(description: str, config_help: str, extra_overrides=()) -> argparse.ArgumentParser:
    """The training commands' shared flags: data, out, config file, resume, and per-field overrides."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data",
        required=True,
        help="image folder (imagefolder layout, metadata.jsonl captions) or a Hugging Face dataset name",
    )
    parser.add_argument("--out", required=True, help="run folder: checkpoints, sample grids and the model")
    parser.add_argument("--config", help=config_help)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint if there is one")
    for name, kind in FLAG_OVERRIDES + tuple(extra_overrides):
        parser.add_argument("--" + name.replace("_", "-"), type=kind, dest=name)
    for name in FLAG_SWITCHES:
        parser.add_argument("--" + name.replace("_", "-"), action="store_true", default=None, dest=name)
    return parser


def config_from_args(args: argparse.Namespace, config_class=TrainConfig):
    """The --config file's values, overridden by the flags that were given."""
    values = {}
    if args.config:
        with open(args.config) as f:
            values = json.load(f)
    for name in config_class.__dataclass_fields__:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return config_class(**values)


def main(argv=None):
    parser = training_parser(
        "Train the unconditional DDPM UNet.", "JSON file with TrainConfig fields (and 'unet': UNetConfig fields)"
    )
    args = parser.parse_args(argv)
    train(args.data, args.out, config_from_args(args), resume=args.resume)


if __name__ == "__main__":
    main()
