"""Unconditional evaluation: FID_CLIP, precision / recall and memorisation of samples against the data set.

N seeded samples for each sampler setting (default DDPM 1000 steps, DDIM 10/25/50/100), compared with the whole data
set: FID_CLIP (Fréchet distance of the project's CLIP image embeddings; Inception weights cannot be downloaded here, so
numbers are not comparable with published FIDs), precision / recall of the k-NN manifolds (Kynkäänniemi et al. 2019),
the memorisation rate (share of samples within an RMS pixel distance of a training image) and the filled rate (share
of pictures whose ink covers 70% of the frame: the coloured-square mode, `uncond.metrics.filled_rate`). For scale the
report adds the same metrics between two random halves of the data set, and the data set's own filled rate. Batch b
uses seed `seed + b`.
"""

import os
import time

import torch

from evaluation.common import (
    GRID_IMAGES,
    autocast,
    check_batch_size,
    clip_image_features,
    parse_sampler,
    sampler_label,
    to_uint8,
    write_report,
)
from txt2img.clip import CLIPEmbedder
from uncond.data import ImageCaptionDataset
from uncond.images import save_grid
from uncond.metrics import (
    filled_rate,
    frechet_distance,
    memorisation_rate,
    nearest_training_image,
    precision_recall,
)
from uncond.pipeline import UnconditionalPipeline, default_device

SAMPLERS = ("ddpm:1000", "ddim:10", "ddim:25", "ddim:50", "ddim:100")

MEMORISATION_THRESHOLD = 0.05  # RMS pixel distance in [0, 1] units; see uncond.metrics.memorisation_rate


def generate_uncond(
    pipe, num_samples: int, scheduler: str, steps: int, batch_size: int, seed: int, eta: float = 0.0
) -> list:
    """`num_samples` PIL images from an `UnconditionalPipeline`, batch b seeded with seed + b."""
    images = []
    for b, start in enumerate(range(0, num_samples, batch_size)):
        result = pipe(
            num_images=min(batch_size, num_samples - start),
            num_inference_steps=steps,
            scheduler=scheduler,
            eta=eta,
            seed=seed + b,
        )
        images += result.images
    return images


def evaluate_uncond(
    model: str,
    clip: str,
    data: str,
    out_dir: str,
    num_samples: int = 1000,
    samplers=SAMPLERS,
    batch_size: int = 250,
    seed: int = 0,
    k: int = 3,
    threshold: float = MEMORISATION_THRESHOLD,
    device=None,
    precision: str = "fp32",
    log=print,
) -> dict:
    """FID_CLIP, precision / recall and memorisation of an unconditional model per sampler setting; writes OUT/report.json, plot.png."""
    settings = [parse_sampler(s) for s in samplers]
    check_batch_size(batch_size)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= k:
        raise ValueError(f"num_samples must be an int > k = {k}, got {num_samples!r}")
    pipe = UnconditionalPipeline.from_pretrained(model, device=device or default_device())
    embedder = CLIPEmbedder.from_pretrained(clip, device=pipe.device)
    size, channels = pipe.unet.config.sample_size, pipe.unet.config.in_channels
    real = ImageCaptionDataset(
        data, image_size=size, channels=channels
    ).images  # (M, C, H, W) uint8, at the model's size
    if len(real) < 2 * (k + 1):
        raise ValueError(
            f"data {data!r} holds {len(real)} images; comparing two halves with k = {k} needs at least {2 * (k + 1)}"
        )
    real_features = clip_image_features(embedder, real, batch_size)  # (M, P)
    real_pixels = real.float() / 255

    # for scale: the metrics between two random halves of the data set (FID grows as sets shrink, so this is a rough floor)
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    half_a, half_b = real_features[order[: len(real) // 2]], real_features[order[len(real) // 2 :]]
    reference = {"fid_clip": frechet_distance(half_a, half_b), **precision_recall(half_a, half_b, k)}
    reference["filled_rate"] = filled_rate(real_pixels)
    log(
        f"{len(real)} training images, {size}x{size}; data halves: FID_CLIP {reference['fid_clip']:.4f}; "
        f"filled {reference['filled_rate']:.1%}"
    )

    os.makedirs(out_dir, exist_ok=True)
    results = []
    for name, steps, eta in settings:
        started = time.perf_counter()
        with autocast(pipe.device, precision):
            images = generate_uncond(pipe, num_samples, name, steps, batch_size, seed, eta)
        fake = to_uint8(images)  # (N, C, H, W)
        fake_features = clip_image_features(embedder, fake, batch_size)
        fake_pixels = fake.float() / 255
        distances, _ = nearest_training_image(fake_pixels, real_pixels)  # (N,) RMS pixel distance
        row = {
            "sampler": name,
            "steps": steps,
            "eta": eta,
            "fid_clip": frechet_distance(real_features, fake_features),
            **precision_recall(real_features, fake_features, k),
            "memorisation_rate": memorisation_rate(distances, threshold),
            "filled_rate": filled_rate(fake_pixels),
            "nearest_distance_median": distances.median().item(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        results.append(row)
        save_grid(
            images[:GRID_IMAGES],
            os.path.join(out_dir, f"samples_{name}{steps}" + (f"_eta{eta:g}" if eta else "") + ".png"),
        )
        log(
            f"{sampler_label(name, eta)} {steps:4d} steps: FID_CLIP {row['fid_clip']:.4f}, precision {row['precision']:.3f}, recall {row['recall']:.3f}, "
            f"memorised {row['memorisation_rate']:.1%}, filled {row['filled_rate']:.1%} ({row['seconds']} s)"
        )
    report = {
        "task": "uncond",
        "model": model,
        "clip": clip,
        "data": data,
        "num_samples": num_samples,
        "num_training_images": len(real),
        "image_size": size,
        "feature": f"CLIP image embedding (unit norm, {real_features.shape[1]}-d)",
        "k": k,
        "memorisation_threshold": threshold,
        "memorisation_distance": "RMS pixel distance, pixels in [0, 1]",
        "batch_size": batch_size,
        "precision": precision,
        "seed": seed,
        "reference_data_halves": reference,
        "results": results,
    }
    write_report(report, out_dir, plot_uncond)
    return report


def plot_uncond(report: dict, path: str) -> None:
    """FID_CLIP, and precision / recall, against sampling steps; DDIM as lines, DDPM as points."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    fid_axes, pr_axes = figure.subplots(1, 2)
    groups = sorted(
        {(r["sampler"], r.get("eta", 0.0)) for r in report["results"]}, key=lambda g: (g[0] == "ddpm", g[1])
    )
    for (sampler, eta), style in zip(groups, ("o-", "^--", "v:", "D-.", "x-")):
        rows = sorted(
            (r for r in report["results"] if (r["sampler"], r.get("eta", 0.0)) == (sampler, eta)),
            key=lambda r: r["steps"],
        )
        steps, label = [r["steps"] for r in rows], sampler_label(sampler, eta)
        style = "s" if sampler == "ddpm" else style  # DDPM: one point per step count
        fid_axes.plot(steps, [r["fid_clip"] for r in rows], style, label=label)
        pr_axes.plot(steps, [r["precision"] for r in rows], style, color="C0", label=f"precision ({label})")
        pr_axes.plot(steps, [r["recall"] for r in rows], style, color="C1", label=f"recall ({label})", mfc="none")
    fid_axes.axhline(report["reference_data_halves"]["fid_clip"], ls=":", color="grey", label="data vs data (halves)")
    fid_axes.set(
        xscale="log",
        xlabel="sampling steps",
        ylabel="FID_CLIP",
        title=f"FID in CLIP space, {report['num_samples']} samples",
    )
    pr_axes.set(
        xscale="log", xlabel="sampling steps", ylim=(-0.02, 1.02), title=f"precision / recall (k = {report['k']})"
    )
    ticks = sorted({r["steps"] for r in report["results"]})
    for axes in (fid_axes, pr_axes):
        axes.set_xticks(ticks, [str(t) for t in ticks])
        axes.minorticks_off()
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    figure.savefig(path, dpi=120)
