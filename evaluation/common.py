"""What both evaluations share: pictures as uint8 tensors, their CLIP features, sampler settings, the report file."""

import json
import os

import numpy as np
import torch

from txt2img.clip import CLIPEmbedder

GRID_IMAGES = 64  # samples shown per setting in OUT/samples_*.png
WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")  # the shipped models


def to_uint8(images: list) -> torch.Tensor:
    """PIL images -> uint8 (B, C, H, W)."""
    arrays = [np.asarray(image) for image in images]
    return torch.stack(
        [torch.from_numpy(a.copy()).reshape(a.shape[0], a.shape[1], -1).permute(2, 0, 1) for a in arrays]
    )


def clip_image_features(clip: CLIPEmbedder, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Unit-norm CLIP image embeddings (N, P) of uint8 images (N, C, H, W), resized to the CLIP's image size."""
    features = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].float() / 127.5 - 1.0  # (B, C, H, W) in [-1, 1]
        features.append(clip.image_features(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).cpu())
    return torch.cat(features)


def clip_text_features(clip: CLIPEmbedder, captions: list, batch_size: int) -> torch.Tensor:
    """Unit-norm CLIP text embeddings (N, P) of `captions`."""
    return torch.cat(
        [clip.text_features(captions[i : i + batch_size]).cpu() for i in range(0, len(captions), batch_size)]
    )


def parse_sampler(spec: str) -> tuple[str, int, float]:
    """Parse a sampler setting: "ddim:50" -> ("ddim", 50, 0.0); "ddim:50:1" -> ("ddim", 50, 1.0), DDIM's eta last."""
    name, _, rest = spec.partition(":")
    steps, _, eta = rest.partition(":")
    error = ValueError(f"sampler must look like ddpm:1000, ddim:50 or ddim:50:1 (eta in [0, 1]), got {spec!r}")
    if name not in ("ddpm", "ddim") or not steps.isdigit() or int(steps) < 1 or (eta and name != "ddim"):
        raise error
    try:
        eta_value = float(eta) if eta else 0.0
    except ValueError:
        raise error from None
    if not 0.0 <= eta_value <= 1.0:
        raise error
    return name, int(steps), eta_value


def autocast(device: torch.device, precision: str):
    """The UNet's matmuls and convolutions in bf16 ("bf16", about 2x faster on CPUs with AVX-512 BF16) or as loaded ("fp32")."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def check_batch_size(batch_size: int) -> None:
    """A positive int, else a ValueError naming batch_size."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def write_report(report: dict, out_dir: str, plot) -> None:
    """OUT/report.json and OUT/plot.png."""
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    plot(report, os.path.join(out_dir, "plot.png"))


def sampler_label(sampler: str, eta: float) -> str:
    """ "DDPM", "DDIM" (eta 0) or "DDIM eta 1" for tables and plots."""
    return sampler.upper() + (f" eta {eta:g}" if eta else "")
