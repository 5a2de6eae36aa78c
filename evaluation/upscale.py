"""The super-resolution stage measured: reconstruction of real pictures, and the cascade's samples of both tabs.

    python -m evaluation upscale --model weights/upscale --data data/emoji-multi/128 --out eval/upscale

1. Reconstruction, on held-out real renderings (`uncond.splits`: pictures the upsampler never trained on): each
   128 px picture shrunk to 32 px (Lanczos, as the data builder shrinks), then enlarged by the model at each noise
   level, by bicubic and by nearest. PSNR and SSIM against the real 128 px picture; consistency, the output shrunk
   back to 32 px against its input (RMS, pixels in [0, 1]).
2. The cascade: samples of the unconditional model and of the text-to-image model (CLDR names, guidance 4), each
   enlarged by the model and by bicubic; FID_CLIP against the 128 px data set. The project's CLIP sees 32 px, so on
   the whole picture FID_CLIP mostly checks that the stage keeps what the base drew; on 32 px tiles of the 128 px
   pictures (16 per picture, against the tiles of real pictures) it compares the detail itself.
3. OUT/grid.png: per row a held-out picture at 32 px (nearest), bicubic, ours, the real 128 px rendering.
"""

import os
import random
import time

import torch

from evaluation.common import autocast, check_batch_size, clip_image_features, to_uint8
from txt2img.clip import CLIPEmbedder
from uncond.data import ImageCaptionDataset
from uncond.images import save_grid, to_pil
from uncond.metrics import frechet_distance
from uncond.pipeline import UnconditionalPipeline, default_device
from uncond.splits import held_out_indices
from uncond.upscale import downsample, psnr, ssim, upsample
from uncond.upscale_pipeline import UpscalePipeline

NOISE_LEVELS = (0, 25, 50, 100, 150)
GRID_ROWS = 8
TILE = 32  # the CLIP's picture size: the 128 px pictures are cut into 16 such tiles


def unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [-1, 1]."""
    return images.float() / 127.5 - 1.0


def quantised(images: torch.Tensor) -> torch.Tensor:
    """Pictures in [-1, 1] as the page gets them: clipped and rounded to 8 bits, back in [-1, 1]."""
    return unit(((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))


def consistency(images: torch.Tensor, low_res: torch.Tensor) -> float:
    """RMS distance (pixels in [0, 1]) between pictures in [-1, 1] shrunk to the low-res size and the low-res input."""
    small = unit(downsample(((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8), low_res.shape[-1]))
    return float(((small - low_res) / 2).square().mean().sqrt())


def upscale_batches(up: UpscalePipeline, low_res: torch.Tensor, steps: int, level: int, batch: int, seed: int):
    """The model's 128 px pictures (N, 3, H, W) in [-1, 1] for low-res (N, 3, h, w), batch b seeded with seed + b."""
    out = []
    for b, start in enumerate(range(0, len(low_res), batch)):
        result = up(low_res[start : start + batch], num_inference_steps=steps, noise_level=level, seed=seed + b)
        out.append(unit(to_uint8(result.images)))
    return torch.cat(out)


def reconstruction(up, real: torch.Tensor, steps: int, levels, batch: int, seed: int, log) -> tuple[list, dict]:
    """Rows of PSNR / SSIM / consistency for nearest, bicubic and the model at each level; the pictures for the grid."""
    size, low = real.shape[-1], real.shape[-1] // up.config.scale_factor
    low_res = unit(downsample(real, low))  # (N, 3, 32, 32)
    target = unit(real)
    candidates = {
        "nearest": torch.nn.functional.interpolate(low_res, size=(size, size), mode="nearest"),
        "bicubic": quantised(upsample(low_res, size)),
    }
    for level in levels:
        started = time.perf_counter()
        candidates[f"ours, noise level {level}"] = upscale_batches(up, low_res, steps, level, batch, seed)
        log(f"upsampled {len(real)} pictures at noise level {level} in {time.perf_counter() - started:.0f} s")
    rows = [
        {
            "method": name,
            "psnr": psnr(images, target),
            "ssim": ssim(images, target),
            "consistency_rms": consistency(images, low_res),
        }
        for name, images in candidates.items()
    ]
    return rows, {"low_res": low_res, "real": target, **candidates}


def tiles(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N * (H / TILE) * (W / TILE), C, TILE, TILE): the pictures cut into non-overlapping tiles."""
    n, c, h, w = images.shape
    t = images.reshape(n, c, h // TILE, TILE, w // TILE, TILE).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(-1, c, TILE, TILE)


def base_samples(uncond: str, txt2img: str, num_samples: int, steps: int, device, seed: int, names=()) -> dict:
    """32 px samples of both tabs, uint8: the unconditional model (DDIM, eta 1, the app's default) and the
    text-to-image model on `num_samples` CLDR names (its names.json; else `names`, the data's), guidance 4, DDIM."""
    from txt2img.pipeline import TextToImagePipeline

    samples = {}
    if uncond:
        pipe = UnconditionalPipeline.from_pretrained(uncond, device=device)
        result = pipe(num_images=num_samples, num_inference_steps=steps, scheduler="ddim", eta=1.0, seed=seed)
        samples["unconditional"] = to_uint8(result.images)
    if txt2img:
        pipe = TextToImagePipeline.from_pretrained(txt2img, device=device)
        names = sorted(set(pipe.names or names))
        prompts = random.Random(seed).sample(names, min(num_samples, len(names)))
        images = []
        for b, start in enumerate(range(0, len(prompts), 32)):  # one image per prompt, 32 prompts a batch
            result = pipe(prompts[start : start + 32], guidance_scale=4.0, num_inference_steps=steps, seed=seed + b)
            images += result.images
        samples["text to image"] = to_uint8(images)
    return samples


def cascade_fid(up, clip, samples: dict, real: torch.Tensor, steps: int, levels, batch: int, seed: int) -> list:
    """FID_CLIP of each tab's samples enlarged by bicubic and by the model at each level, whole and by tiles, against
    the real data."""
    size = real.shape[-1]
    real_whole = clip_image_features(clip, real, 256)
    real_tiles = clip_image_features(clip, tiles(real), 256)
    rows = []
    for tab, base in samples.items():
        low_res = unit(base)
        candidates = [("bicubic", quantised(upsample(low_res, size)))]
        candidates += [
            (f"ours, noise level {level}", upscale_batches(up, low_res, steps, level, batch, seed)) for level in levels
        ]
        for method, images in candidates:
            pixels = ((images + 1) * 127.5).round().to(torch.uint8)
            rows.append(
                {
                    "tab": tab,
                    "method": method,
                    "fid_clip": frechet_distance(real_whole, clip_image_features(clip, pixels, 256)),
                    "fid_clip_tiles": frechet_distance(real_tiles, clip_image_features(clip, tiles(pixels), 256)),
                    "num_samples": len(base),
                }
            )
    return rows


def evaluate_upscale(
    model: str,
    clip: str,
    data: str,
    out_dir: str,
    uncond: str = "",
    txt2img: str = "",
    num_images: int = 64,
    num_samples: int = 64,
    num_real: int = 2000,
    steps: int = 15,
    base_steps: int = 25,
    noise_levels=NOISE_LEVELS,
    cascade_noise_levels=None,
    batch_size: int = 16,
    seed: int = 0,
    device=None,
    precision: str = "fp32",
    log=print,
) -> dict:
    """Reconstruction (PSNR, SSIM, consistency) per noise level and the cascade's FID_CLIP; writes OUT/report.json."""
    import json

    check_batch_size(batch_size)
    device = device or default_device()
    up = UpscalePipeline.from_pretrained(model, device=device)
    embedder = CLIPEmbedder.from_pretrained(clip, device=device)
    dataset = ImageCaptionDataset(data, image_size=up.unet.config.sample_size)
    held = sorted(i for indices in held_out_indices(dataset).values() for i in indices)
    picked = random.Random(seed).sample(held, min(num_images, len(held)))
    os.makedirs(out_dir, exist_ok=True)
    with autocast(torch.device(device), precision):
        rows, pictures = reconstruction(up, dataset.images[picked], steps, noise_levels, batch_size, seed, log)
        level = up.config.noise_level  # the grid's level: the folder's default
        cascade_levels = list(cascade_noise_levels or [level])
        samples = base_samples(uncond, txt2img, num_samples, base_steps, device, seed, dataset.captions)
        real = dataset.images[random.Random(seed + 1).sample(range(len(dataset)), min(num_real, len(dataset)))]
        fid_rows = cascade_fid(up, embedder, samples, real, steps, cascade_levels, batch_size, seed)
    ours = (
        next(k for k in pictures if k.startswith("ours") and k.endswith(f" {level}")) if level in noise_levels else None
    )
    columns = [
        torch.nn.functional.interpolate(pictures["low_res"], scale_factor=4, mode="nearest"),
        pictures["bicubic"],
    ]
    columns += [pictures[ours]] if ours else []
    columns.append(pictures["real"])
    grid = torch.stack(columns, dim=1)[:GRID_ROWS].flatten(0, 1)  # rows of (32 px, bicubic, ours, real)
    save_grid(to_pil(grid), os.path.join(out_dir, "grid.png"), columns=len(columns))
    report = {
        "task": "upscale",
        "model": model,
        "data": data,
        "held_out_pictures": len(picked),
        "steps": steps,
        "scheduler": "ddim",
        "reconstruction": rows,
        "cascade": fid_rows,
        "cascade_noise_levels": cascade_levels,
        "default_noise_level": level,
        "base_steps": base_steps,
        "real_pictures_for_fid": len(real),
        "precision": precision,
        "seed": seed,
    }
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


def markdown_tables(report: dict) -> str:
    """The report's two tables, as the README shows them."""
    lines = ["| method | PSNR (dB) | SSIM | consistency (RMS) |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['consistency_rms']:.4f} |"
        for r in report["reconstruction"]
    ]
    lines += ["", "| tab | method | FID_CLIP (whole) | FID_CLIP (32 px tiles) |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {r['tab']} | {r['method']} | {r['fid_clip']:.4f} | {r['fid_clip_tiles']:.4f} |" for r in report["cascade"]
    ]
    return "\n".join(lines)
