"""Training configuration, written once for every trainer: the loop's settings, JSON files, flags, resume.

Each trainer's config is a dataclass that extends `LoopConfig`; it is saved as JSON in every checkpoint
and beside the weights (`train_config.json`). Old files stay readable: a field added later takes its
default. A resumed run continues with the checkpoint's config; only `max_steps` may be changed.
"""

import argparse
import json
import os
from dataclasses import dataclass, fields

from uncond.checkpoint import find_checkpoint, read_state

MIXED_PRECISIONS = ("no", "bf16", "fp16")
# the names diffusers.optimization.get_scheduler takes (the ones that need no extra arguments)
LR_SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")


@dataclass
class LoopConfig:
    """What the training loop itself needs: batch, length, optimiser, learning-rate schedule, precision, bookkeeping."""

    batch_size: int = 64  # the global batch of one micro-step, all processes together
    max_steps: int = 20000  # optimiser steps
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"  # linear warm-up from 0, then one of diffusers' get_scheduler shapes
    warmup_steps: int = 500
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    mixed_precision: str = "no"  # "no", "bf16" or "fp16", through accelerate
    gradient_accumulation_steps: int = 1
    checkpoint_every: int = 250
    log_every: int = 25  # rows of OUT/log.jsonl
    seed: int = 0

    def __post_init__(self):
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, got {self.lr_scheduler!r}")
        for name in ("batch_size", "max_steps", "checkpoint_every", "log_every", "gradient_accumulation_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")


def config_from_dict(config_class, values: dict):
    """`config_class(**values)`, with a ValueError naming any key the class does not have."""
    unknown = set(values) - {f.name for f in fields(config_class)}
    if unknown:
        raise ValueError(f"config: unknown fields {sorted(unknown)} for {config_class.__name__}")
    return config_class(**values)


def load_config(path: str, config_class):
    """A config from a JSON file; fields the file lacks (older files) take their defaults."""
    with open(path) as f:
        return config_from_dict(config_class, json.load(f))


def resumed_config(out_dir: str, config, resume: bool):
    """The config a run continues with: the checkpoint's when resuming (only `max_steps` taken from `config`)."""
    checkpoint = find_checkpoint(out_dir) if resume else None
    if checkpoint is None:
        return config
    saved = read_state(checkpoint)["train_config"]
    return config_from_dict(type(config), {**saved, "max_steps": config.max_steps})


# ---- command lines ----


def training_parser(description: str, config_class, config_help: str) -> argparse.ArgumentParser:
    """The training commands' flags: data, out, config file, resume, and one flag per scalar config field."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data",
        required=True,
        help="image folder (imagefolder layout, metadata.jsonl captions) or a Hugging Face dataset name",
    )
    parser.add_argument("--out", required=True, help="run folder: checkpoint, log, samples and the model")
    parser.add_argument("--config", help=config_help)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint if there is one")
    for field in fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        kind = field.type
        if kind is bool:  # a switch: given means true (the JSON file can say false)
            parser.add_argument(flag, action="store_true", default=None, dest=field.name)
        elif kind in (int, float, str):
            parser.add_argument(flag, type=kind, dest=field.name)
    return parser


def config_from_args(args: argparse.Namespace, config_class):
    """The --config file's values, overridden by the flags that were given."""
    values = {}
    if args.config:
        with open(args.config) as f:
            values = json.load(f)
    for field in fields(config_class):
        if getattr(args, field.name, None) is not None:
            values[field.name] = getattr(args, field.name)
    return config_from_dict(config_class, values)


def save_config(config, path: str) -> None:
    """Write `config` as JSON (train_config.json)."""
    from dataclasses import asdict

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(asdict(config), f, indent=2, ensure_ascii=False)
