"""Text-to-image evaluation: CLIP score and caption retrieval per guidance scale, held-out pairs apart.

For each guidance scale, one image per caption of a fixed list (`evaluation_captions`), and for the held-out
(emoji, skin tone) pairs (`uncond.splits.held_out_skin_tones`) that text-to-image training leaves out: CLIP score, and top-1 / top-5
accuracy of finding the caption among all the data set's captions by CLIP similarity to the image. The same metrics
on the real images give the CLIP's own ceiling. The judge is the project's CLIP, which is also the text encoder.
"""

import os
import time

import torch

from evaluation.common import (
    GRID_IMAGES,
    autocast,
    check_batch_size,
    clip_image_features,
    clip_text_features,
    to_uint8,
    write_report,
)
from txt2img.clip import CLIPEmbedder
from txt2img.metrics import clip_score, retrieval_accuracy
from txt2img.pipeline import TextToImagePipeline
from uncond.data import ImageCaptionDataset
from uncond.images import save_grid
from uncond.pipeline import default_device
from uncond.splits import held_out_skin_tones, stable_hash

GUIDANCE_SCALES = (1.0, 2.0, 3.0, 5.0, 7.0)


def evaluation_captions(captions: list, n: int, exclude=()) -> list:
    """A fixed list of `n` distinct captions not in `exclude`: the data set's captions in CRC-32 order (stable under reordering)."""
    pool = sorted(set(captions) - set(exclude), key=lambda c: (stable_hash(c), c))
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(pool):
        raise ValueError(f"n must be an int in 1..{len(pool)} (the captions left after the held-out ones), got {n!r}")
    return pool[:n]


def generate_txt2img(
    pipe, prompts: list, guidance_scale: float, steps: int, scheduler: str, batch_size: int, seed: int, **options
) -> list:
    """One PIL image per prompt from a `TextToImagePipeline`, batch b seeded with seed + b (the same noise at every guidance scale)."""
    images = []
    for b, start in enumerate(range(0, len(prompts), batch_size)):
        result = pipe(
            prompts[start : start + batch_size],
            num_images=1,
            num_inference_steps=steps,
            scheduler=scheduler,
            guidance_scale=guidance_scale,
            seed=seed + b,
            add_style=False,  # the captions as written: how well the model follows its own captions
            **options,  # dynamic thresholding
        )
        images += result.images
    return images


def text_metrics(image_features: torch.Tensor, text_features: torch.Tensor, targets: list) -> dict | None:
    """CLIP score with the true caption and retrieval top-1 / top-5 among all captions; None for no images."""
    if not targets:
        return None
    similarity = image_features @ text_features.T  # (B, number of captions)
    return {
        "clip_score": clip_score(image_features, text_features[targets]).mean().item(),
        **retrieval_accuracy(similarity, targets),
    }


def evaluate_txt2img(
    model: str,
    clip: str,
    data: str,
    out_dir: str,
    num_captions: int = 200,
    guidance_scales=GUIDANCE_SCALES,
    steps: int = 50,
    scheduler: str = "ddim",
    thresholding: dict | None = None,
    batch_size: int = 100,
    seed: int = 0,
    device=None,
    precision: str = "fp32",
    log=print,
) -> dict:
    """CLIP score and caption retrieval of a text-to-image model per guidance scale, held-out pairs apart; writes OUT/report.json, plot.png."""
    check_batch_size(batch_size)
    pipe = TextToImagePipeline.from_pretrained(model, device=device or default_device())
    embedder = CLIPEmbedder.from_pretrained(clip, device=pipe.device)
    data_set = ImageCaptionDataset(data, image_size=pipe.unet.config.sample_size)
    candidates = list(dict.fromkeys(data_set.captions))  # every distinct caption, in data set order
    index = {caption: i for i, caption in enumerate(candidates)}
    held_out = held_out_skin_tones(candidates)
    prompts = evaluation_captions(candidates, num_captions, exclude=held_out)
    targets, held_targets = [index[c] for c in prompts], [index[c] for c in held_out]
    text_features = clip_text_features(embedder, candidates, batch_size)  # (number of captions, P)

    # the CLIP's ceiling: the same metrics on the data set's own image for each caption
    first_image = {caption: i for i, caption in reversed(list(enumerate(data_set.captions)))}
    real = data_set.images[[first_image[c] for c in prompts + held_out]]
    real_features = clip_image_features(embedder, real, batch_size)
    n = len(prompts)
    reference = {
        **text_metrics(real_features[:n], text_features, targets),
        "held_out": text_metrics(real_features[n:], text_features, held_targets),
    }
    log(
        f"{n} captions + {len(held_out)} held out, ranked among {len(candidates)}; real images: top-1 {reference['top1']:.3f}, top-5 {reference['top5']:.3f}"
    )

    os.makedirs(out_dir, exist_ok=True)
    results = []
    for guidance_scale in guidance_scales:
        started = time.perf_counter()
        with autocast(pipe.device, precision):
            images = generate_txt2img(
                pipe, prompts + held_out, guidance_scale, steps, scheduler, batch_size, seed, **(thresholding or {})
            )
        features = clip_image_features(embedder, to_uint8(images), batch_size)
        row = {
            "guidance_scale": guidance_scale,
            **text_metrics(features[:n], text_features, targets),
            "held_out": text_metrics(features[n:], text_features, held_targets),
            "seconds": round(time.perf_counter() - started, 1),
        }
        results.append(row)
        save_grid(images[:GRID_IMAGES], os.path.join(out_dir, f"samples_guidance{guidance_scale:g}.png"), columns=8)
        held = row["held_out"]
        log(
            f"guidance {guidance_scale:g}: CLIP score {row['clip_score']:.2f}, top-1 {row['top1']:.3f}, top-5 {row['top5']:.3f}"
            + (f"; held out: top-1 {held['top1']:.3f}, top-5 {held['top5']:.3f}" if held else "")
            + f" ({row['seconds']} s)"
        )
    report = {
        "task": "txt2img",
        "model": model,
        "clip": clip,
        "data": data,
        "num_captions": n,
        "num_held_out": len(held_out),
        "num_candidates": len(candidates),
        "chance_top1": 1 / len(candidates),
        "chance_top5": min(1.0, 5 / len(candidates)),
        "steps": steps,
        "scheduler": scheduler,
        "thresholding": thresholding,
        "batch_size": batch_size,
        "seed": seed,
        "precision": precision,
        "captions": prompts,
        "held_out_captions": held_out,
        "reference_real_images": reference,
        "results": results,
    }
    write_report(report, out_dir, plot_txt2img)
    return report


def plot_txt2img(report: dict, path: str) -> None:
    """Caption retrieval top-1 / top-5 and CLIP score against guidance scale; held-out pairs dashed, real images dotted."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    retrieval_axes, score_axes = figure.subplots(1, 2)
    scales = [r["guidance_scale"] for r in report["results"]]
    reference = report["reference_real_images"]
    for metric, colour in (("top1", "C0"), ("top5", "C1")):
        retrieval_axes.plot(scales, [r[metric] for r in report["results"]], "o-", color=colour, label=f"{metric}")
        if report["num_held_out"]:
            retrieval_axes.plot(
                scales,
                [r["held_out"][metric] for r in report["results"]],
                "o--",
                color=colour,
                mfc="none",
                label=f"{metric} held out",
            )
        retrieval_axes.axhline(reference[metric], ls=":", color=colour, label=f"{metric} real images")
    score_axes.plot(scales, [r["clip_score"] for r in report["results"]], "o-", color="C2", label="captions")
    if report["num_held_out"]:
        score_axes.plot(
            scales,
            [r["held_out"]["clip_score"] for r in report["results"]],
            "o--",
            color="C2",
            mfc="none",
            label="held out",
        )
    score_axes.axhline(reference["clip_score"], ls=":", color="C2", label="real images")
    retrieval_axes.set(
        xlabel="guidance scale",
        ylabel="accuracy",
        ylim=(-0.02, 1.02),
        title=f"caption retrieval among {report['num_candidates']} captions",
    )
    score_axes.set(xlabel="guidance scale", ylabel="CLIP score", title=f"CLIP score, {report['num_captions']} captions")
    for axes in (retrieval_axes, score_axes):
        axes.set_xticks(scales, [f"{s:g}" for s in scales])
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    figure.savefig(path, dpi=120)
