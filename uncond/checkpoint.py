"""Training checkpoints in safetensors and JSON only (no pickles), written atomically.

    OUT/checkpoint/model.safetensors      the trained weights
    OUT/checkpoint/ema.safetensors        their exponential moving average (trainers that keep one)
    OUT/checkpoint/optimizer.safetensors  the optimizer's per-parameter tensors (AdamW's moments, step)
    OUT/checkpoint/state.json             {"step", "optimizer": {"param_groups"}, "train_config"}

A checkpoint is filled in `checkpoint.tmp` and swapped in by two renames, so a process killed at any
moment leaves a complete checkpoint behind (`checkpoint`, or `checkpoint.old` between the renames).
This layout is the one the first trainers wrote; their checkpoints resume as they are.
"""

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_DIR = "checkpoint"
STATE_NAME = "state.json"


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


def save_checkpoint(out_dir: str, modules: dict, optimizer, state: dict) -> None:
    """Write `out_dir/checkpoint`: each module's weights as NAME.safetensors, the optimizer, and `state` as JSON."""
    final = os.path.join(out_dir, CHECKPOINT_DIR)
    tmp, old = final + ".tmp", final + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name, module in modules.items():
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, os.path.join(tmp, f"{name}.safetensors"))
    tensors, meta = optimizer_to_tensors(optimizer)
    save_file(tensors, os.path.join(tmp, "optimizer.safetensors"))
    with open(os.path.join(tmp, STATE_NAME), "w") as f:
        json.dump({**state, "optimizer": meta}, f, indent=2, ensure_ascii=False)
    shutil.rmtree(old, ignore_errors=True)
    if os.path.isdir(final):
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(out_dir: str) -> str | None:
    """The newest complete checkpoint folder (a crash between the two renames leaves `.old`)."""
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        path = os.path.join(out_dir, name)
        if os.path.isfile(os.path.join(path, STATE_NAME)):
            return path
    return None


def read_state(path: str) -> dict:
    """A checkpoint folder's state.json: step, optimizer hyper-parameters, train_config."""
    with open(os.path.join(path, STATE_NAME)) as f:
        return json.load(f)


def load_checkpoint(path: str, modules: dict, optimizer) -> dict:
    """Restore each module's weights and the optimizer from a checkpoint folder; returns its state."""
    for name, module in modules.items():
        module.load_state_dict(load_file(os.path.join(path, f"{name}.safetensors")))
    state = read_state(path)
    optimizer_from_tensors(optimizer, load_file(os.path.join(path, "optimizer.safetensors")), state["optimizer"])
    return state
