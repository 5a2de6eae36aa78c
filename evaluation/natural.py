"""What a person types, judged twice: natural prompts against exact names, diversity across seeds, held-out styles.

- Natural prompts (`assets/eval/natural_prompts.json`: keywords, short names, sentences, other languages; some of
  their keywords and one template never seen in training): the share of images whose acceptable emoji is in a
  judge's top 5, by kind and held-out or not. Exact names are the baseline: one acceptable CLDR name per prompt,
  generated and judged alike. Targets: natural >= 80%, and >= 90% of the exact names' share. The CLIP judge on
  the real pictures of the same emoji (every style) is that judge's ceiling for both.
- Diversity: for each exact name drawn in several styles in the data, the mean pairwise distance of its
  `num_images` seeds against that of its real styles (CLIP image space, 1 - cos; and RMS pixels). Target: a
  ratio of at least 0.5.
- Held-out (emoji, style) pairs (`uncond.splits.held_out_style_pairs`), prompted "<name>, <style words>": the
  style is right and the emoji in the top 5. Target: >= 70%. The CLIP judge on the real held-out images is
  that judge's ceiling.

The judges (`evaluation.judges`): the project's CLIP (which is also the text encoder) and the nearest real image
in pixel space, which is not a model.
"""

import json
import os

import torch

from evaluation.common import GRID_IMAGES, autocast, check_batch_size, to_uint8, write_report
from evaluation.judges import ClipJudge, EmojiGroups, PixelJudge, mean_pairwise, top_k_hits
from txt2img.clip import CLIPEmbedder
from txt2img.pipeline import TextToImagePipeline
from uncond.data import ImageCaptionDataset
from uncond.images import save_grid
from uncond.pipeline import default_device
from uncond.sources import STYLES
from uncond.splits import held_out

PROMPTS_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "eval", "natural_prompts.json"
)
TARGETS = {"natural_top5": 0.8, "natural_vs_exact": 0.9, "diversity_ratio": 0.5, "held_out_style_pairs": 0.7}


def read_prompts(path: str = PROMPTS_FILE) -> list:
    """The natural prompts: dicts with prompt, kind, language, acceptable (CLDR names) and held_out."""
    with open(path, encoding="utf-8") as f:
        prompts = json.load(f)["prompts"]
    if not prompts or not all({"prompt", "kind", "acceptable"} <= set(p) for p in prompts):
        raise ValueError(f"{path}: expected a 'prompts' list of dicts with prompt, kind and acceptable")
    return prompts


def style_prompt(name: str, style: str) -> str:
    """The caption training uses for an emoji in a style: "owl, line art" (`uncond.captions.style_captions`)."""
    return f"{name}, {STYLES[style].words[0]}"


def generate(
    pipe,
    prompts: list,
    num_images: int,
    guidance_scale: float,
    steps: int,
    scheduler: str,
    batch_size: int,
    seed: int,
    add_style: bool = False,
) -> torch.Tensor:
    """uint8 (len(prompts) * num_images, C, H, W), prompt-major; every batch seeded with `seed`, so a prompt's
    images do not depend on its neighbours (the pipeline draws the same noise for every prompt of a call).
    add_style: the pipeline's colour style for prompts naming none (off: the prompts as typed, as measured before)."""
    per_batch = max(1, batch_size // num_images)
    images = []
    for start in range(0, len(prompts), per_batch):
        result = pipe(
            prompts[start : start + per_batch],
            num_images=num_images,
            num_inference_steps=steps,
            scheduler=scheduler,
            guidance_scale=guidance_scale,
            seed=seed,
            add_style=add_style,
        )
        images += result.images
    return to_uint8(images)


def judge_all(judges: list, images: torch.Tensor, acceptable: list, num_images: int) -> dict:
    """Per judge: (B,) top-5 hits and each image's style; `acceptable` holds one set of groups per prompt."""
    per_image = [groups for groups in acceptable for _ in range(num_images)]
    out = {}
    for judge in judges:
        scores, styles = judge.judge(images)
        out[judge.name] = {"hits": top_k_hits(scores, per_image), "styles": styles}
    return out


def style_pair_scores(verdict: dict, pairs: list, num_images: int) -> dict:
    """Shares of images with the asked style and emoji, the style, the emoji (a judge's `judge_all` verdict)."""
    wanted = [style for _, style in pairs for _ in range(num_images)]
    style_right = torch.tensor([found == asked for found, asked in zip(verdict["styles"], wanted)])
    hits = verdict["hits"]
    return {"style_and_emoji": share(style_right & hits), "style": share(style_right), "emoji_top5": share(hits)}


def share(hits: torch.Tensor, mask=None) -> float | None:
    """Mean of a bool tensor (over `mask`), None when empty."""
    picked = hits if mask is None else hits[torch.as_tensor(mask, dtype=torch.bool)]
    return round(picked.float().mean().item(), 4) if len(picked) else None


def real_image_share(scores: torch.Tensor, real_of: dict, groups: EmojiGroups, acceptable: list) -> float | None:
    """A judge's top-5 share on real pictures: per prompt, its acceptable emoji's real images (`real_of[name]`: rows of
    `scores`, (N, G)) judged against those emoji; the mean over prompts, which weigh alike as their samples do."""
    shares = []
    for names in acceptable:
        rows = [i for name in names for i in real_of.get(name, [])]
        if rows:
            allowed = groups.group_ids(names)
            shares.append(top_k_hits(scores[rows], [allowed] * len(rows)).float().mean().item())
    return round(sum(shares) / len(shares), 4) if shares else None


def diversity(judge: ClipJudge, images: torch.Tensor, num_images: int, real: list) -> dict:
    """Mean pairwise distance of each prompt's seeds against its real styles (`real[p]`: uint8 images)."""
    generated = {"cosine": [], "rms": []}
    spread = {"cosine": [], "rms": []}
    for p, real_images in enumerate(real):
        mine = images[p * num_images : (p + 1) * num_images]
        for metric, fake, true in (
            ("cosine", judge.features(mine), judge.features(real_images)),
            ("rms", mine, real_images),
        ):
            generated[metric].append(mean_pairwise(fake, metric))
            spread[metric].append(mean_pairwise(true, metric))
    result = {"prompts": len(real)}
    for metric in ("cosine", "rms"):
        g, r = sum(generated[metric]) / len(real), sum(spread[metric]) / len(real)
        result[metric] = {"generated": round(g, 4), "real": round(r, 4), "ratio": round(g / r, 4) if r else None}
    return result


def evaluate_natural(
    model: str,
    clip: str,
    data: str,
    out_dir: str,
    prompts_file: str = PROMPTS_FILE,
    num_images: int = 4,
    guidance_scale: float = 4.0,
    steps: int = 25,
    scheduler: str = "ddim",
    batch_size: int = 128,
    seed: int = 0,
    device=None,
    precision: str = "fp32",
    add_style: bool = False,
    log=print,
) -> dict:
    """Natural prompts vs exact names, diversity and held-out style pairs, by two judges; writes OUT/report.json, plot.png."""
    check_batch_size(batch_size)
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 2:
        raise ValueError(f"num_images must be an int >= 2 (diversity needs pairs), got {num_images!r}")
    pipe = TextToImagePipeline.from_pretrained(model, device=device or default_device())
    embedder = CLIPEmbedder.from_pretrained(clip, device=pipe.device)
    dataset = ImageCaptionDataset(data, image_size=pipe.unet.config.sample_size)
    groups = EmojiGroups(dataset.captions)
    styles_here = [s for s in STYLES if s in set(dataset.styles)]
    judges = [
        ClipJudge(embedder, groups, {s: STYLES[s].words[0] for s in styles_here}, batch_size),
        PixelJudge(dataset.images, dataset.captions, dataset.styles, groups),
    ]
    names_in_data = set(groups.names)
    natural = [p for p in read_prompts(prompts_file) if names_in_data & set(p["acceptable"])]
    # one acceptable name per prompt that the data set draws (every kept prompt has one)
    exact = list(dict.fromkeys(next(n for n in p["acceptable"] if n in names_in_data) for p in natural))
    pairs = [tuple(p) for p in held_out(dataset)["style_pairs"]]
    log(
        f"{len(natural)} natural prompts, {len(exact)} exact names, {len(pairs)} held-out style pairs, {num_images} seeds each"
    )
    os.makedirs(out_dir, exist_ok=True)

    def run(prompts):
        with autocast(pipe.device, precision):
            return generate(pipe, prompts, num_images, guidance_scale, steps, scheduler, batch_size, seed, add_style)

    report = {
        "task": "natural",
        "model": model,
        "clip": clip,
        "data": data,
        "num_images": num_images,
        "guidance_scale": guidance_scale,
        "steps": steps,
        "scheduler": scheduler,
        "seed": seed,
        "precision": precision,
        "add_style": add_style,
        "judges": [j.name for j in judges],
        "targets": TARGETS,
    }

    # natural prompts and their exact-name baseline
    natural_images = run([p["prompt"] for p in natural])
    save_grid(_pil(natural_images[:GRID_IMAGES]), os.path.join(out_dir, "samples_natural.png"), columns=2 * num_images)
    natural_verdicts = judge_all(
        judges, natural_images, [groups.group_ids(p["acceptable"]) for p in natural], num_images
    )
    exact_images = run(exact)
    save_grid(_pil(exact_images[:GRID_IMAGES]), os.path.join(out_dir, "samples_exact.png"), columns=2 * num_images)
    exact_verdicts = judge_all(judges, exact_images, [groups.group_ids([n]) for n in exact], num_images)
    kinds = sorted({p["kind"] for p in natural})

    def mask(select):
        return [select(p) for p in natural for _ in range(num_images)]

    report["natural"] = {"prompts": len(natural), "exact_names": len(exact)}
    for judge in judges:
        hits, exact_hits = natural_verdicts[judge.name]["hits"], exact_verdicts[judge.name]["hits"]
        row = {
            "natural_top5": share(hits),
            "exact_top5": share(exact_hits),
            "by_kind": {kind: share(hits, mask(lambda p, k=kind: p["kind"] == k)) for kind in kinds},
            "held_out": share(hits, mask(lambda p: bool(p.get("held_out")))),
            "seen": share(hits, mask(lambda p: not p.get("held_out"))),
        }
        row["natural_vs_exact"] = round(row["natural_top5"] / row["exact_top5"], 4) if row["exact_top5"] else None
        report["natural"][judge.name] = row
        log(
            f"{judge.name}: natural top-5 {row['natural_top5']}, exact names {row['exact_top5']}, by kind {row['by_kind']}"
        )

    # the CLIP judge's ceiling: its verdict on the real pictures of the same emoji
    real_of = {}
    for i, name in enumerate(dataset.captions):
        real_of.setdefault(name, []).append(i)
    real_scores, _ = judges[0].judge(dataset.images)  # (N real, G)
    report["natural"]["CLIP on the real images"] = {
        "natural_top5": real_image_share(real_scores, real_of, groups, [p["acceptable"] for p in natural]),
        "exact_top5": real_image_share(real_scores, real_of, groups, [[name] for name in exact]),
    }
    log(f"CLIP on the real images: {report['natural']['CLIP on the real images']}")

    # diversity over the exact names drawn in several styles
    multi = [(p, name) for p, name in enumerate(exact) if len(real_of[name]) >= 2]
    chosen = torch.tensor([p * num_images + j for p, _ in multi for j in range(num_images)], dtype=torch.long)
    report["diversity"] = diversity(
        judges[0], exact_images[chosen], num_images, [dataset.images[real_of[n]] for _, n in multi]
    )
    log(f"diversity: {report['diversity']}")

    # held-out (emoji, style) pairs
    if pairs:
        pair_images = run([style_prompt(name, style) for name, style in pairs])
        save_grid(
            _pil(pair_images[:GRID_IMAGES]),
            os.path.join(out_dir, "samples_held_out_styles.png"),
            columns=2 * num_images,
        )
        acceptable = [groups.group_ids([name]) for name, _ in pairs]
        verdicts = judge_all(judges, pair_images, acceptable, num_images)
        report["held_out_style_pairs"] = {"pairs": len(pairs)}
        for judge in judges:
            report["held_out_style_pairs"][judge.name] = style_pair_scores(verdicts[judge.name], pairs, num_images)
        # the CLIP judge's ceiling: the same scores on the held-out pairs' real images
        index = {(c, s): i for i, (c, s) in enumerate(zip(dataset.captions, dataset.styles))}
        real = dataset.images[[index[p] for p in pairs]]
        ceiling = judge_all(judges[:1], real, acceptable, 1)[judges[0].name]
        report["held_out_style_pairs"]["CLIP on the real images"] = style_pair_scores(ceiling, pairs, 1)
        log(f"held-out style pairs: {report['held_out_style_pairs']}")
    report["met"] = targets_met(report)
    write_report(report, out_dir, plot_natural)
    return report


def targets_met(report: dict) -> dict:
    """Per judge, whether each target is met (None where there was nothing to measure)."""
    met = {}
    ratio = report["diversity"]["cosine"]["ratio"]
    for judge in report["judges"]:
        row = report["natural"][judge]
        pairs = report.get("held_out_style_pairs", {}).get(judge, {}).get("style_and_emoji")
        met[judge] = {
            "natural_top5": row["natural_top5"] >= TARGETS["natural_top5"],
            "natural_vs_exact": row["natural_vs_exact"] is not None
            and row["natural_vs_exact"] >= TARGETS["natural_vs_exact"],
            "held_out_style_pairs": None if pairs is None else pairs >= TARGETS["held_out_style_pairs"],
        }
    met["diversity_ratio"] = ratio is not None and ratio >= TARGETS["diversity_ratio"]
    return met


def markdown_table(report: dict) -> str:
    """The report's headline numbers as a Markdown table, one column per judge."""
    judges = report["judges"]
    pairs = report.get("held_out_style_pairs", {})
    rows = [
        ("natural prompts, top 5", [report["natural"][j]["natural_top5"] for j in judges], TARGETS["natural_top5"]),
        ("exact names, top 5", [report["natural"][j]["exact_top5"] for j in judges], None),
        ("natural / exact", [report["natural"][j]["natural_vs_exact"] for j in judges], TARGETS["natural_vs_exact"]),
        ("held-out keywords and template, top 5", [report["natural"][j]["held_out"] for j in judges], None),
        (
            "held-out style pairs: style and emoji",
            [pairs.get(j, {}).get("style_and_emoji") for j in judges],
            TARGETS["held_out_style_pairs"],
        ),
    ]
    lines = ["| measure | " + " | ".join(judges) + " | target |", "| --- |" + " --- |" * (len(judges) + 1)]
    for label, values, target in rows:
        cells = ["-" if v is None else f"{100 * v:.1f}%" if label != "natural / exact" else f"{v:.2f}" for v in values]
        shown = "" if target is None else f"{target:.2f}" if label == "natural / exact" else f">= {100 * target:.0f}%"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {shown} |")
    ceiling = report["natural"].get("CLIP on the real images")
    if ceiling:  # reports written before the ceiling was measured lack it
        shares = " / ".join("-" if v is None else f"{100 * v:.1f}%" for v in ceiling.values())
        lines.append(f"| CLIP on the real pictures (its ceiling): natural / exact, top 5 | {shares} | | |")
    d = report["diversity"]
    lines.append(
        f"| diversity, seeds / real styles (CLIP; pixels) | {d['cosine']['ratio']}; {d['rms']['ratio']} | | >= {TARGETS['diversity_ratio']} |"
    )
    return "\n".join(lines)


def _pil(images: torch.Tensor) -> list:
    from PIL import Image

    return [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in images]


def plot_natural(report: dict, path: str) -> None:
    """Bars per measure and judge, the target as a tick."""
    from matplotlib.figure import Figure

    labels = ["natural top 5", "exact top 5", "held-out keywords", "held-out style pairs"]
    figure = Figure(figsize=(9, 4), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(report["judges"])
    pairs = report.get("held_out_style_pairs", {})
    for j, judge in enumerate(report["judges"]):
        row = report["natural"][judge]
        values = [row["natural_top5"], row["exact_top5"], row["held_out"], pairs.get(judge, {}).get("style_and_emoji")]
        axes.bar([i + j * width for i in range(len(labels))], [v or 0 for v in values], width, label=judge)
    for i, target in ((0, TARGETS["natural_top5"]), (3, TARGETS["held_out_style_pairs"])):
        axes.hlines(target, i - width / 2, i + 0.8 - width / 2, colors="k", linestyles="--")
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels)
    d = report["diversity"]["cosine"]
    axes.set(
        ylim=(0, 1.05),
        ylabel="share of images",
        title=f"judged twice; diversity ratio {d['ratio']} (target {TARGETS['diversity_ratio']})",
    )
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3, axis="y")
    figure.savefig(path, dpi=120)
