"""White where white is meant: the corners of the cascade's 128 px pictures, and the detail the upsampler adds.

    python -m evaluation background --num-samples 8 --out eval/background

- corners: 255 minus the mean level of the four 8x8 corners, per picture, averaged (0: pure white). The real
  renderings are centred on white with a 6% margin (8 px at 128 px), so their corners are 0.
- detail: the RMS (levels 0-255) between a 128 px picture and its own 32 px version (Lanczos down, bicubic up):
  what the picture holds beyond 32 px. A blurry upsampler scores near 0.

Both on the two base models' samples through the cascade (`evaluation.upscale.base_samples`), with the
upsampler's sampling as shipped and with eps taken from the clipped x_0 (`uncond/upscale_pipeline.py`), and on
real 128 px pictures.
"""

import os

import torch

from evaluation.common import to_uint8, write_report
from evaluation.upscale import base_samples, unit
from uncond.data import ImageCaptionDataset
from uncond.pipeline import default_device
from uncond.upscale import downsample, upsample
from uncond.upscale_pipeline import UpscalePipeline

CORNER = 8  # pixels: the 6% margin of a 128 px rendering


def corner_levels(images: torch.Tensor, k: int = CORNER) -> float:
    """How far the four k x k corners of uint8 pictures (B, C, H, W) are from white: 255 - their mean level."""
    corners = torch.cat([images[..., :k, :k], images[..., :k, -k:], images[..., -k:, :k], images[..., -k:, -k:]], -1)
    return round(255 - corners.float().mean().item(), 2)


def detail_rms(images: torch.Tensor, scale_factor: int = 4) -> float:
    """Mean RMS (levels) of uint8 pictures (B, C, H, W) against their own low-res version upsampled bicubic."""
    size = images.shape[-1]
    low = downsample(images, size // scale_factor).float() / 127.5 - 1  # (B, C, h, w) in [-1, 1]
    back = (upsample(low, size).clamp(-1, 1) + 1) * 127.5
    return round(((images.float() - back) ** 2).flatten(1).mean(dim=1).sqrt().mean().item(), 2)


def evaluate_background(
    model: str,
    uncond: str,
    txt2img: str,
    data: str,
    out_dir: str,
    num_samples: int = 8,
    num_real: int = 256,
    steps: int = 15,
    base_steps: int = 25,
    seed: int = 0,
    device=None,
    log=print,
) -> dict:
    """Corners and detail of both tabs' cascades, the upsampler's eps unclipped (as before) and clipped, and of real
    pictures; writes OUT/report.json and plot.png."""
    device = device or default_device()
    up = UpscalePipeline.from_pretrained(model, device=device)
    samples = base_samples(uncond, txt2img, num_samples, base_steps, device, seed)
    rows = []
    for tab, base in samples.items():
        for label, clipped in (("eps from the unclipped x_0 (before)", False), ("eps from the clipped x_0", True)):
            result = up(unit(base), num_inference_steps=steps, seed=seed, use_clipped_model_output=clipped)
            images = to_uint8(result.images)
            rows.append({"tab": tab, "sampling": label, "corners": corner_levels(images), "detail": detail_rms(images)})
            log(rows[-1])
    real = ImageCaptionDataset(data).images
    chosen = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[:num_real]
    rows.append(
        {
            "tab": "real 128 px",
            "sampling": "-",
            "corners": corner_levels(real[chosen]),
            "detail": detail_rms(real[chosen]),
        }
    )
    log(rows[-1])
    report = {"task": "background", "model": model, "steps": steps, "num_samples": num_samples, "rows": rows}
    os.makedirs(out_dir, exist_ok=True)
    write_report(report, out_dir, plot_background)
    return report


def markdown_table(report: dict) -> str:
    """One row per tab and sampling: corners and detail."""
    lines = ["| pictures | upsampler's sampling | corners (levels off white) | detail (RMS) |"]
    lines.append("| --- | --- | --- | --- |")
    lines += [f"| {r['tab']} | {r['sampling']} | {r['corners']} | {r['detail']} |" for r in report["rows"]]
    return "\n".join(lines)


def plot_background(report: dict, path: str) -> None:
    """Corners against detail, one point per row."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    for r in report["rows"]:
        axes.scatter(r["detail"], r["corners"], label=f"{r['tab']}, {r['sampling']}")
    axes.axhline(8, color="k", linestyle="--", linewidth=1)
    axes.set(xlabel="detail (RMS over its own 32 px version)", ylabel="corners: levels off white")
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=120)
