"""The training recipes measured one at a time, on one fixed budget (the README's ablation table).

    python -m evaluation.ablation --data data/emoji-multi/32 --out runs/ablation --steps 300 \
        --levers baseline names_and_styles min_snr lognormal immiscible

Every lever starts from the same warm start (the shipped text-to-image UNet and its training config), trains the
same number of steps with the same seed, and is measured the same way: the held-out denoising loss
(`evaluation.loss`) and both judges of `evaluation.natural` on a fixed quarter of the natural prompts (every
fourth), two images each, DDIM 20, guidance 4. A lever differs from the baseline in its `LEVERS` entry only.
Runs already finished are read back, so the command resumes where a session stopped.
"""

import argparse
import json
import os
import time

import torch

from evaluation.common import WEIGHTS
from evaluation.loss import held_out_loss
from evaluation.natural import PROMPTS_FILE, evaluate_natural, read_prompts
from txt2img.train import TextToImageTrainConfig, train_text_to_image
from uncond.train_config import config_from_dict, load_config

MONOCHROME = ["openmoji-line", "fluent-high-contrast"]
LEVERS = {
    "baseline": {},
    "names_and_styles": {"p_name": 0.5, "always_styled": MONOCHROME},  # the data mix of the captions
    "min_snr": {"loss_weighting": "min_snr", "snr_gamma": 5.0},
    "lognormal": {"timestep_sampling": "lognormal"},
    "laplace": {"timestep_sampling": "laplace"},
    "immiscible": {"immiscible": True},
}
SUBSET_EVERY = 4  # the evaluation's prompts: every fourth natural prompt


def lever_config(base: TextToImageTrainConfig, lever: str, steps: int, seed: int) -> TextToImageTrainConfig:
    """The base run's config warm-started from the shipped UNet, `steps` long, with the lever's fields set."""
    if lever not in LEVERS:
        raise ValueError(f"lever must be one of {', '.join(LEVERS)}, got {lever!r}")
    values = {**vars(base), **LEVERS[lever]}
    values.update(
        max_steps=steps,
        warmup_steps=min(base.warmup_steps, steps // 4),
        seed=seed,
        init_from=os.path.join(WEIGHTS, "txt2img", "unet"),
        clip=os.path.join(WEIGHTS, "clip"),
        checkpoint_every=50,
        sample_every=steps,
    )
    return config_from_dict(TextToImageTrainConfig, values)


def subset_prompts(out_dir: str) -> str:
    """OUT/prompts.json: every SUBSET_EVERY-th natural prompt, written once."""
    path = os.path.join(out_dir, "prompts.json")
    if not os.path.isfile(path):
        prompts = read_prompts(PROMPTS_FILE)[::SUBSET_EVERY]
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"prompts": prompts}, f, ensure_ascii=False, indent=1)
    return path


def run_lever(lever: str, args, base: TextToImageTrainConfig) -> dict:
    """Train one lever (resuming), evaluate it; returns its row, also written to OUT/LEVER/row.json."""
    run_dir = os.path.join(args.out, lever)
    row_path = os.path.join(run_dir, "row.json")
    if os.path.isfile(row_path):
        with open(row_path) as f:
            return json.load(f)
    config = lever_config(base, lever, args.steps, args.seed)
    started = time.time()
    train_text_to_image(args.data, run_dir, config, resume=True)
    row = {"lever": lever, "fields": LEVERS[lever], "steps": args.steps, "threads": torch.get_num_threads()}
    row.update(train_seconds=round(time.time() - started), **measure(run_dir, args))
    with open(row_path, "w") as f:
        json.dump(row, f, indent=2)
    return row


def measure(model_dir: str, args) -> dict:
    """The ablation's measures of a pipeline folder: held-out loss, both judges on the prompt subset, diversity."""
    loss = held_out_loss(model_dir, args.data)
    natural = evaluate_natural(
        model_dir,
        os.path.join(WEIGHTS, "clip"),
        args.data,
        os.path.join(args.out, "eval", os.path.basename(os.path.normpath(model_dir))),
        prompts_file=subset_prompts(args.out),
        num_images=2,
        steps=20,
        batch_size=64,
        precision="bf16",
    )
    row = {"held_out_loss": loss["loss"]}
    for judge, name in (("CLIP", "CLIP"), ("pixels", "nearest real image")):
        scores = natural["natural"][name]
        row[f"exact_{judge}"], row[f"natural_{judge}"] = scores["exact_top5"], scores["natural_top5"]
    row["diversity"] = natural["diversity"]["cosine"]["ratio"]
    row["style_pairs_pixels"] = natural["held_out_style_pairs"]["nearest real image"]["style_and_emoji"]
    return row


def reference_row(args) -> dict:
    """The shipped model measured the same way, as the table's step-0 row (OUT/shipped.json, written once)."""
    path = os.path.join(args.out, "shipped.json")
    if not os.path.isfile(path):
        row = {"lever": "shipped (0 steps)", "fields": {}, "steps": 0, "train_seconds": 0}
        row.update(measure(os.path.join(WEIGHTS, "txt2img"), args))
        with open(path, "w") as f:
            json.dump(row, f, indent=2)
    with open(path) as f:
        return json.load(f)


def table(rows: list) -> str:
    """The rows as a Markdown table, with each lever's change against the baseline's scores."""
    base = next((r for r in rows if r["lever"] == "baseline"), None)
    lines = [
        "| lever | held-out loss | exact names, pixels / CLIP | natural prompts, pixels / CLIP | diversity | train min |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        delta = "" if base is None or r is base else f" ({100 * (r['exact_pixels'] - base['exact_pixels']):+.1f})"
        lines.append(
            f"| {r['lever']} | {r['held_out_loss']:.4f} | {100 * r['exact_pixels']:.1f}%{delta} / "
            f"{100 * r['exact_CLIP']:.1f}% | {100 * r['natural_pixels']:.1f}% / {100 * r['natural_CLIP']:.1f}% | "
            f"{r['diversity']} | {r['train_seconds'] / 60:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(prog="python -m evaluation.ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/emoji-multi/32")
    parser.add_argument("--out", required=True, help="one run folder per lever, and ablation.md")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--reference", action="store_true", help="measure the shipped model first (a step-0 row)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    base = load_config(os.path.join(WEIGHTS, "txt2img", "train_config.json"), TextToImageTrainConfig)
    rows = [reference_row(args)] if args.reference else []
    for lever in args.levers:
        rows.append(run_lever(lever, args, base))
        with open(os.path.join(args.out, "ablation.md"), "w") as f:
            f.write(table(rows) + "\n")
        print(table(rows), flush=True)
    return rows


if __name__ == "__main__":
    main()
