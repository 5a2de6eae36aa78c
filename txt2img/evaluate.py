"""Evaluate the trained models in the feature space of the project's CLIP; writes OUT/report.json and OUT/plot.png.

    python -m txt2img.evaluate uncond --model weights/uncond --clip weights/clip --data data/emoji32 --num-samples 1000 --out eval/uncond
    python -m txt2img.evaluate txt2img --model weights/txt2img --clip weights/clip --data data/emoji --captions 200 \
        --guidance-scales 1 2 3 5 7 --out eval/txt2img

uncond: N seeded samples for each sampler setting (default DDPM 1000 steps, DDIM 10/25/50/100), compared with the whole
data set: FID_CLIP (Fréchet distance of CLIP image embeddings; Inception weights cannot be downloaded here, so numbers
are not comparable with published FIDs), precision / recall of the k-NN manifolds, and the memorisation rate (share
of samples within an RMS pixel distance of a training image). For scale the report adds the same metrics between two
random halves of the data set.

txt2img: for each guidance scale, one image per caption of a fixed list (`evaluation_captions`), and for the held-out
(emoji, skin tone) pairs (`held_out_captions`) that text-to-image training leaves out: CLIP score, and top-1 / top-5
accuracy of finding the caption among all the data set's captions by CLIP similarity to the image. The same metrics
on the real images give the CLIP's own ceiling.

Images are generated in batches; batch b uses seed `seed + b`, so the same settings give the same images.
"""

import argparse
import json
import os
import time
import zlib
from collections import Counter, defaultdict

import numpy as np
import torch

from txt2img.clip import CLIPEmbedder
from uncond.data import SKIN_TONES, ImageCaptionDataset
from uncond.metrics import clip_score, frechet_distance, nearest_training_image, precision_recall, retrieval_accuracy
from uncond.pipeline import default_device, save_grid

SAMPLERS = ("ddpm:1000", "ddim:10", "ddim:25", "ddim:50", "ddim:100")
GUIDANCE_SCALES = (1.0, 2.0, 3.0, 5.0, 7.0)
HELD_OUT_EVERY = 4  # about one emoji in four with skin tones loses one tone to the held-out set
MEMORISATION_THRESHOLD = 0.05  # RMS pixel distance in [0, 1] units; see uncond.metrics.memorisation_rate
GRID_IMAGES = 64  # samples shown per setting in OUT/samples_*.png
WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")  # the shipped models


# ---- the fixed caption lists ----


def _crc(text: str) -> int:
    """A hash that is the same in every run and on every machine (Python's hash() is salted)."""
    return zlib.crc32(text.encode("utf-8"))


def skin_tone_pair(caption: str) -> tuple[str, str] | None:
    """("waving hand", "medium skin tone") for "waving hand: medium skin tone"; None unless one emoji with one tone."""
    base, colon, qualifier = caption.rpartition(": ")
    return (base, qualifier) if colon and qualifier in SKIN_TONES else None


def held_out_captions(captions: list, every: int = HELD_OUT_EVERY) -> list:
    """The (emoji, skin tone) pairs text-to-image training leaves out, to test compositional generalisation.

    Among emoji with at least three single-tone captions, about one in `every` (picked by a CRC-32 of its name, so the
    pick does not depend on the rest of the data set) loses one tone (also picked by CRC-32). The emoji keeps its other
    tones and every held-out tone keeps other emoji, so each held-out caption pairs a known emoji with a known tone.
    """
    tones_of = defaultdict(list)
    for caption in sorted(set(captions)):
        pair = skin_tone_pair(caption)
        if pair is not None:
            tones_of[pair[0]].append(pair[1])
    picked = []
    for base, tones in sorted(tones_of.items()):
        if len(tones) >= 3 and _crc(base) % every == 0:
            tones = sorted(tones, key=SKIN_TONES.index)
            picked.append((base, tones[_crc(base + " | tone") % len(tones)]))
    left = Counter(tone for base, tones in tones_of.items() for tone in tones) - Counter(tone for _, tone in picked)
    return [f"{base}: {tone}" for base, tone in picked if left[tone] > 0]


def evaluation_captions(captions: list, n: int, exclude=()) -> list:
    """A fixed list of `n` distinct captions not in `exclude`: the data set's captions in CRC-32 order (stable under reordering)."""
    pool = sorted(set(captions) - set(exclude), key=lambda c: (_crc(c), c))
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(pool):
        raise ValueError(f"n must be an int in 1..{len(pool)} (the captions left after the held-out ones), got {n!r}")
    return pool[:n]


# ---- images and features ----


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


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


# ---- unconditional ----


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
    from uncond.pipeline import UnconditionalPipeline

    settings = [parse_sampler(s) for s in samplers]
    _check_batch_size(batch_size)
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
    log(f"{len(real)} training images, {size}x{size}; data halves: FID_CLIP {reference['fid_clip']:.4f}")

    os.makedirs(out_dir, exist_ok=True)
    results = []
    for name, steps, eta in settings:
        started = time.perf_counter()
        with autocast(pipe.device, precision):
            images = generate_uncond(pipe, num_samples, name, steps, batch_size, seed, eta)
        fake = to_uint8(images)  # (N, C, H, W)
        fake_features = clip_image_features(embedder, fake, batch_size)
        distances, _ = nearest_training_image(fake.float() / 255, real_pixels)  # (N,) RMS pixel distance
        row = {
            "sampler": name,
            "steps": steps,
            "eta": eta,
            "fid_clip": frechet_distance(real_features, fake_features),
            **precision_recall(real_features, fake_features, k),
            "memorisation_rate": (distances < threshold)
            .double()
            .mean()
            .item(),  # = memorisation_rate(), from the same distances
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
            f"memorised {row['memorisation_rate']:.1%} ({row['seconds']} s)"
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
    _write(report, out_dir, plot_uncond)
    return report


# ---- text to image ----


def generate_txt2img(
    pipe, prompts: list, guidance_scale: float, steps: int, scheduler: str, batch_size: int, seed: int
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
        )
        images += result.images
    return images


def _text_metrics(image_features: torch.Tensor, text_features: torch.Tensor, targets: list) -> dict | None:
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
    batch_size: int = 100,
    seed: int = 0,
    device=None,
    precision: str = "fp32",
    log=print,
) -> dict:
    """CLIP score and caption retrieval of a text-to-image model per guidance scale, held-out pairs apart; writes OUT/report.json, plot.png."""
    from txt2img.pipeline import TextToImagePipeline

    _check_batch_size(batch_size)
    pipe = TextToImagePipeline.from_pretrained(model, device=device or default_device())
    embedder = CLIPEmbedder.from_pretrained(clip, device=pipe.device)
    data_set = ImageCaptionDataset(data, image_size=pipe.unet.config.sample_size)
    candidates = list(dict.fromkeys(data_set.captions))  # every distinct caption, in data set order
    index = {caption: i for i, caption in enumerate(candidates)}
    held_out = held_out_captions(candidates)
    prompts = evaluation_captions(candidates, num_captions, exclude=held_out)
    targets, held_targets = [index[c] for c in prompts], [index[c] for c in held_out]
    text_features = clip_text_features(embedder, candidates, batch_size)  # (number of captions, P)

    # the CLIP's ceiling: the same metrics on the data set's own image for each caption
    first_image = {caption: i for i, caption in reversed(list(enumerate(data_set.captions)))}
    real = data_set.images[[first_image[c] for c in prompts + held_out]]
    real_features = clip_image_features(embedder, real, batch_size)
    n = len(prompts)
    reference = {
        **_text_metrics(real_features[:n], text_features, targets),
        "held_out": _text_metrics(real_features[n:], text_features, held_targets),
    }
    log(
        f"{n} captions + {len(held_out)} held out, ranked among {len(candidates)}; real images: top-1 {reference['top1']:.3f}, top-5 {reference['top5']:.3f}"
    )

    os.makedirs(out_dir, exist_ok=True)
    results = []
    for guidance_scale in guidance_scales:
        started = time.perf_counter()
        with autocast(pipe.device, precision):
            images = generate_txt2img(pipe, prompts + held_out, guidance_scale, steps, scheduler, batch_size, seed)
        features = clip_image_features(embedder, to_uint8(images), batch_size)
        row = {
            "guidance_scale": guidance_scale,
            **_text_metrics(features[:n], text_features, targets),
            "held_out": _text_metrics(features[n:], text_features, held_targets),
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
        "batch_size": batch_size,
        "seed": seed,
        "precision": precision,
        "captions": prompts,
        "held_out_captions": held_out,
        "reference_real_images": reference,
        "results": results,
    }
    _write(report, out_dir, plot_txt2img)
    return report


# ---- report and plot ----


def _write(report: dict, out_dir: str, plot) -> None:
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    plot(report, os.path.join(out_dir, "plot.png"))


def sampler_label(sampler: str, eta: float) -> str:
    """ "DDPM", "DDIM" (eta 0) or "DDIM eta 1" for tables and plots."""
    return sampler.upper() + (f" eta {eta:g}" if eta else "")


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


# ---- command line ----


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m txt2img.evaluate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="task", required=True)
    uncond = sub.add_parser("uncond", help="FID_CLIP, precision/recall and memorisation per sampler setting")
    txt2img = sub.add_parser(
        "txt2img", help="CLIP score and caption retrieval per guidance scale, held-out pairs apart"
    )
    for p, data, model in ((uncond, "data/emoji32", "uncond"), (txt2img, "data/emoji", "txt2img")):
        p.add_argument(
            "--model",
            default=os.path.join(WEIGHTS, model),
            help=f"model folder or hub id (default: the shipped weights/{model})",
        )
        p.add_argument(
            "--clip",
            default=os.path.join(WEIGHTS, "clip"),
            help="the project's CLIP folder, both towers (default: weights/clip)",
        )
        p.add_argument("--data", default=data, help=f"image folder with metadata.jsonl (default {data})")
        p.add_argument("--out", required=True, help="folder for report.json, plot.png and sample grids")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
        p.add_argument(
            "--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: the UNet under bf16 autocast (faster)"
        )
    uncond.add_argument("--num-samples", type=int, default=1000, help="samples per sampler setting")
    uncond.add_argument(
        "--samplers",
        nargs="+",
        default=list(SAMPLERS),
        help="settings like ddpm:1000 ddim:50 ddim:50:1 (the last number: DDIM's eta)",
    )
    uncond.add_argument("--batch-size", type=int, default=250)
    uncond.add_argument("--k", type=int, default=3, help="neighbours of the precision/recall manifolds")
    uncond.add_argument(
        "--memorisation-threshold",
        type=float,
        default=MEMORISATION_THRESHOLD,
        help="RMS pixel distance, pixels in [0, 1]",
    )
    txt2img.add_argument(
        "--captions", type=int, default=200, help="how many captions of the fixed list to generate for"
    )
    txt2img.add_argument("--guidance-scales", nargs="+", type=float, default=list(GUIDANCE_SCALES))
    txt2img.add_argument("--steps", type=int, default=50)
    txt2img.add_argument("--scheduler", choices=["ddim", "ddpm"], default="ddim")
    txt2img.add_argument("--batch-size", type=int, default=100)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    common = dict(
        model=args.model,
        clip=args.clip,
        data=args.data,
        out_dir=args.out,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
    )
    if args.task == "uncond":
        report = evaluate_uncond(
            num_samples=args.num_samples,
            samplers=args.samplers,
            k=args.k,
            threshold=args.memorisation_threshold,
            **common,
        )
    else:
        report = evaluate_txt2img(
            num_captions=args.captions,
            guidance_scales=args.guidance_scales,
            steps=args.steps,
            scheduler=args.scheduler,
            **common,
        )
    print(f"wrote {os.path.join(args.out, 'report.json')} and plot.png")
    return report


if __name__ == "__main__":
    main()
