"""The one training loop of the project's three trainers (the two UNets and CLIP).

    train(out_dir, config, make_task, resume=False, log=print) -> out_dir

What differs between them is a task (`TrainingTask`): the model it builds, the batch of a step and its
loss, what it saves and how it evaluates. The loop does the rest, once for all: processes, devices and
mixed precision (accelerate), gradient accumulation and clipping, AdamW, the learning-rate schedule, the
EMA of the weights, progress bar and `OUT/log.jsonl`, atomic checkpoints (`uncond.checkpoint`) and resume.

Exact resume: a step's data (`batch_indices`) and randomness (`step_generator`) are functions of
(seed, step) only, drawn on the CPU for the whole global batch, of which each process takes its share.
So a resumed run takes the batches and noise an uninterrupted one would have taken, and N processes
take the same samples and noise as one process at the same global batch.

From libraries, where they do the job: accelerate; diffusers' `get_scheduler` (warm-up from 0, then
cosine); diffusers' `EMAModel`, whose decay warms up as min(decay, (1 + n) / (10 + n)) at its n-th
update after the first (the first update copies the weights, decay 0).
"""

import contextlib
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch

from uncond.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from uncond.train_config import resumed_config

LOG_NAME = "log.jsonl"
CAPTION_STREAM = 1  # step_generator stream of caption draws (stream 0: flips, dropout, noise, timesteps)


def batch_indices(step: int, num_items: int, batch_size: int, seed: int) -> torch.Tensor:
    """The data indices of global step `step`: epochs are seeded permutations, walked in order."""
    steps_per_epoch = max(1, num_items // batch_size)
    epoch, position = divmod(step, steps_per_epoch)
    permutation = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    if num_items < batch_size:  # a tiny data set: repeat it to fill the batch
        permutation = permutation.repeat(math.ceil(batch_size / num_items))
        position = 0
    return permutation[position * batch_size : (position + 1) * batch_size]


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for one (micro-)step's random draws; `stream` (0..96) keeps independent draws apart."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 97 + stream)


def caption_lists(dataset) -> list:
    """Every training caption of each image: the data set's `caption_lists`, or its one caption per image."""
    lists = getattr(dataset, "caption_lists", None)
    if lists is None:
        lists = [[caption] for caption in dataset.captions]
    if len(lists) != len(dataset) or not all(lists):
        raise ValueError("caption_lists must hold a non-empty list of captions for every image")
    return [list(captions) for captions in lists]


def draw_captions(lists: list, indices: torch.Tensor, generator: torch.Generator) -> list:
    """One caption per item at `indices`, uniform over its image's list: lists[i][floor(u * len)], u ~ U[0, 1)."""
    u = torch.rand(len(indices), generator=generator, dtype=torch.float64)
    choices = []
    for i, u_i in zip(indices.tolist(), u.tolist()):
        captions = lists[i]
        choices.append(captions[min(int(u_i * len(captions)), len(captions) - 1)])
    return choices


class TrainingTask:
    """What the loop needs to know about the model it trains; each trainer subclasses it."""

    eval_every = 1000  # steps between evaluations (sample grids, retrieval)

    def build_model(self, config) -> torch.nn.Module:
        """A freshly initialised model of the configured architecture."""
        raise NotImplementedError

    def initialise(self, model: torch.nn.Module, config, log) -> None:
        """Warm start of a fresh run (not called when resuming); default: keep the random weights."""

    def build_optimizer(self, model: torch.nn.Module, config) -> torch.optim.Optimizer:
        """AdamW over all parameters."""
        return torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)

    def batch(self, step: int, part: slice, device) -> dict:
        """Inputs and targets of global (micro-)step `step`: this process's `part` of the global batch."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """The scalar loss of `batch` (run under autocast)."""
        raise NotImplementedError

    def after_step(self, model: torch.nn.Module) -> None:
        """Called after each optimiser step (e.g. to clamp a parameter)."""

    def log_row(self, model: torch.nn.Module) -> dict:
        """Extra numbers for the log rows."""
        return {}

    def save_model(self, out_dir: str, model: torch.nn.Module, config) -> None:
        """Write the model (the EMA weights, where kept) in `from_pretrained` form to `out_dir`."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, config, out_dir: str, step: int) -> dict | None:
        """Sample grids or metrics at step `step`; a returned dict is logged."""
        return None


def make_ema(model: torch.nn.Module, decay: float):
    """diffusers' `EMAModel` over `model`'s parameters: ema <- d ema + (1 - d) weights, d warmed up (module doc)."""
    from diffusers.training_utils import EMAModel

    return EMAModel(model.parameters(), decay=decay, foreach=True)


def copy_ema_weights(ema, module: torch.nn.Module) -> None:
    """The EMA weights into `module`'s parameters, in place, each version counter bumped.

    diffusers' `EMAModel.copy_to` writes through `.data`, which leaves the version counters as they were; the UNet's
    packed convolutions (uncond/conv.py) then take their pack for current and keep computing with the old weights.
    """
    with torch.no_grad():
        for parameter, average in zip(module.parameters(), ema.shadow_params, strict=True):
            parameter.copy_(average)


def build_lr_schedule(optimizer: torch.optim.Optimizer, config, start_step: int = 0):
    """diffusers' `get_scheduler`: lr x (s / warmup_steps) while s < warmup_steps, then the named shape
    ("cosine": 0.5 (1 + cos(pi (s - warmup_steps) / (max_steps - warmup_steps)))), at optimiser step s."""
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=config.max_steps,
        last_epoch=start_step - 1,  # resuming: the optimizer's param_groups hold `initial_lr`
    )


def open_log(out_dir: str, start_step: int):
    """OUT/log.jsonl for appending, without rows past `start_step` (a killed run logged steps it will redo)."""
    path = os.path.join(out_dir, LOG_NAME)
    rows = []
    if start_step and os.path.isfile(path):
        with open(path) as f:
            rows = [line for line in f if line.strip() and _row_step(json.loads(line)) <= start_step]
    with open(path, "w") as f:
        f.writelines(rows)
    return open(path, "a")


def _row_step(row: dict) -> int:
    return row["eval"]["step"] if "eval" in row else row["step"]


@dataclass
class Run:
    """A run's moving parts, as `prepare` builds them."""

    accelerator: object
    task: TrainingTask
    config: object
    model: torch.nn.Module  # as prepared by accelerate (wrapped in DDP with several processes)
    optimizer: torch.optim.Optimizer
    lr_schedule: object
    ema: object  # diffusers' EMAModel, or None
    ema_model: torch.nn.Module | None  # the module the EMA weights are copied into to save and sample
    start_step: int
    part: slice  # this process's share of each global batch


def prepare(out_dir: str, config, task: TrainingTask, resume: bool, log) -> Run:
    """Accelerator, model (fresh, warm-started or from OUT/checkpoint), EMA, AdamW and learning-rate schedule."""
    from accelerate import Accelerator

    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps
    )
    if config.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {config.batch_size} must divide into {accelerator.num_processes} processes")
    per_process = config.batch_size // accelerator.num_processes
    checkpoint = find_checkpoint(out_dir) if resume else None
    torch.manual_seed(config.seed)
    model = task.build_model(config)
    if checkpoint is None:
        task.initialise(model, config, log)
    ema_decay = getattr(config, "ema_decay", 0.0)  # configs with an ema_decay keep an EMA of the weights
    ema_model = copy.deepcopy(model).requires_grad_(False) if ema_decay else None
    modules = {"model": model, **({"ema": ema_model} if ema_decay else {})}
    optimizer = task.build_optimizer(model, config)
    start_step = load_checkpoint(checkpoint, modules, optimizer)["step"] if checkpoint else 0
    ema = None
    if ema_decay:
        ema = make_ema(ema_model, ema_decay)
        ema.optimization_step = start_step  # one EMA update per step so far
        ema_model.to(accelerator.device)
        ema.to(accelerator.device)
    lr_schedule = build_lr_schedule(optimizer, config, start_step)
    model, optimizer = accelerator.prepare(model, optimizer)
    part = slice(accelerator.process_index * per_process, (accelerator.process_index + 1) * per_process)
    return Run(accelerator, task, config, model, optimizer, lr_schedule, ema, ema_model, start_step, part)


def training_attention(device: torch.device, mixed_precision: str):
    """SDPA's math backend for bf16 training on a CPU, else PyTorch's choice.

    PyTorch 2.13 picks its flash kernel on CPUs, whose backward in bf16 took a third of a text-to-image step
    (profiled: 1.8 s of 5.3 s at batch 64, one thread); the math backend (two batched matmuls and a softmax)
    made the whole step 15% cheaper in CPU seconds (2.0 against 2.3-2.5 s). Sampling keeps the flash kernel."""
    if torch.device(device).type != "cpu" or mixed_precision != "bf16":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def optimiser_step(run: Run, step: int) -> torch.Tensor:
    """One optimiser step (its gradient accumulation micro-steps), then the EMA; returns the last micro-step's loss."""
    accelerator, config, model, optimizer = run.accelerator, run.config, run.model, run.optimizer
    for micro in range(config.gradient_accumulation_steps):
        global_step = step * config.gradient_accumulation_steps + micro
        torch.manual_seed(config.seed + global_step)  # dropout, if any
        batch = run.task.batch(global_step, run.part, accelerator.device)
        with accelerator.accumulate(model), training_attention(accelerator.device, config.mixed_precision):
            with accelerator.autocast():
                loss = run.task.loss(model, batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    run.lr_schedule.step()
    unwrapped = accelerator.unwrap_model(model)
    run.task.after_step(unwrapped)
    if run.ema is not None:
        run.ema.step(unwrapped.parameters())
    return loss


def save_and_evaluate(run: Run, out_dir: str, done: int, log_file) -> None:
    """At their intervals: the checkpoint, the model folder (EMA weights where kept), the task's evaluation."""
    config, task = run.config, run.task
    checkpoint_due = done % config.checkpoint_every == 0 or done == config.max_steps
    eval_due = done % task.eval_every == 0 or done == config.max_steps
    if not (checkpoint_due or eval_due):
        return
    model = run.accelerator.unwrap_model(run.model)
    if run.ema is not None:
        copy_ema_weights(run.ema, run.ema_model)
    if checkpoint_due:
        modules = {"model": model, **({"ema": run.ema_model} if run.ema is not None else {})}
        save_checkpoint(out_dir, modules, run.optimizer, {"step": done, "train_config": asdict(config)})
    kept = run.ema_model if run.ema is not None else model
    task.save_model(out_dir, kept, config)
    metrics = task.evaluate(kept, config, out_dir, done) if eval_due else None
    if metrics is not None:
        log_file.write(json.dumps({"eval": metrics}) + "\n")
        log_file.flush()


def train(out_dir: str, config, make_task, resume: bool = False, log=print) -> str:
    """Run (or continue, if `resume` and OUT/checkpoint exists) a training run; returns `out_dir`."""
    from tqdm.auto import tqdm

    config = resumed_config(out_dir, config, resume)  # the task must see the config the run continues with
    task = make_task(config)
    run = prepare(out_dir, config, task, resume, log)
    accelerator, start = run.accelerator, run.start_step
    n_params = sum(p.numel() for p in run.model.parameters())
    log(
        f"{type(accelerator.unwrap_model(run.model)).__name__} {n_params / 1e6:.2f}M parameters, {len(task.dataset)} "
        f"items, step {start} -> {config.max_steps}, {accelerator.num_processes} process(es), device {accelerator.device}"
    )
    main_process = accelerator.is_main_process
    os.makedirs(out_dir, exist_ok=True)
    log_file = open_log(out_dir, start) if main_process else None
    progress = tqdm(initial=start, total=config.max_steps, disable=not main_process)
    started = time.time()
    for step in range(start, config.max_steps):
        loss = optimiser_step(run, step)
        done, lr = step + 1, run.lr_schedule.get_last_lr()[0]
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
        if not main_process:
            continue
        if done % config.log_every == 0 or done == config.max_steps:
            items_per_s = (
                (done - start) * config.batch_size * config.gradient_accumulation_steps / (time.time() - started)
            )
            row = {"step": done, "loss": loss.item(), "lr": lr, "items_per_s": items_per_s}
            log_file.write(json.dumps({**row, **task.log_row(accelerator.unwrap_model(run.model))}) + "\n")
            log_file.flush()
        save_and_evaluate(run, out_dir, done, log_file)
    progress.close()
    if log_file is not None:
        log_file.close()
    accelerator.wait_for_everyone()
    return out_dir
