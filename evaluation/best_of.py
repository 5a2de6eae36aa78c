"""Best of N measured: what keeping the CLIP's favourite of N candidates (`txt2img.rerank`) gains, by both judges of
`evaluation.natural`, and what it costs.

One generation serves every N: each image is drawn as max(N) candidates in one batch, candidate-major, so the
candidates of N = k are the first k of max(N) (the same starting noise), and N = 1 is the plain image. For a fixed
subset of the natural prompts (every k-th of the list, so every kind is in it) and their exact names:

- natural prompts and exact names, top 5, per N and judge. The pixel judge decides: the CLIP judge is the ranker.
- diversity per N: the kept images of an exact name against its real styles, as `evaluation.natural` measures it.
- cost: seconds for four images of one prompt per N at the app's settings, on this machine.
"""

import os
import time

import torch

from evaluation.common import autocast, check_batch_size, to_uint8, write_report
from evaluation.judges import ClipJudge, EmojiGroups, PixelJudge
from evaluation.natural import PROMPTS_FILE, diversity, judge_all, read_prompts, share
from txt2img.clip import CLIPEmbedder
from txt2img.pipeline import TextToImagePipeline
from txt2img.rerank import MAX_CANDIDATES, best_of
from uncond.data import ImageCaptionDataset
from uncond.pipeline import default_device
from uncond.sources import STYLES

CANDIDATES = (1, 2, 4, 8, 16)


def check_candidates(candidates) -> list:
    """Sorted distinct counts in [1, MAX_CANDIDATES], else a ValueError naming candidates."""
    values = sorted(set(candidates)) if isinstance(candidates, (list, tuple)) else []
    if not values or not all(
        isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_CANDIDATES for n in values
    ):
        raise ValueError(f"candidates must be whole numbers from 1 to {MAX_CANDIDATES}, got {candidates!r}")
    return values


def subset(prompts: list, count: int) -> list:
    """`count` prompts spread evenly over the list (every k-th), so that each kind keeps its share."""
    if count >= len(prompts):
        return list(prompts)
    return [prompts[i * len(prompts) // count] for i in range(count)]


def draw_candidates(pipe, prompts: list, num_images: int, num_candidates: int, batch_size: int, **kwargs):
    """uint8 candidates (N, P I, C, H, W) and their CLIP scores (P I, N), prompt-major images; every call seeded alike."""
    per_call = max(1, batch_size // (num_images * num_candidates))
    candidates, scores = [], []
    for start in range(0, len(prompts), per_call):
        result = pipe(prompts[start : start + per_call], num_images=num_images, num_candidates=num_candidates, **kwargs)
        images = to_uint8(result.images)  # (B, C, H, W)
        drawn = to_uint8(result.candidates) if num_candidates > 1 else images  # (N B, C, H, W)
        candidates.append(drawn.view(num_candidates, len(images), *images.shape[1:]))
        scores.append(torch.tensor(result.candidate_scores) if num_candidates > 1 else torch.zeros(len(images), 1))
    return torch.cat(candidates, dim=1), torch.cat(scores)


def kept(candidates: torch.Tensor, scores: torch.Tensor, n: int) -> torch.Tensor:
    """The images best of the first `n` candidates keeps: (N, B, C, H, W) -> (B, C, H, W)."""
    return best_of(candidates.flatten(0, 1), scores, n)


def time_candidates(pipe, candidates: list, num_images: int, **kwargs) -> dict:
    """Seconds for `num_images` images of one prompt at each N (after a warm-up call): wall clock, and the process's
    CPU time, which a machine shared with other jobs leaves as it is on one free core per thread."""
    pipe("red heart", num_images=1, **{**kwargs, "num_inference_steps": 2})
    seconds = {"wall": {}, "cpu": {}}
    for n in candidates:
        wall, cpu = time.perf_counter(), time.process_time()
        pipe("red heart", num_images=num_images, num_candidates=n, **kwargs)
        seconds["wall"][n] = round(time.perf_counter() - wall, 2)
        seconds["cpu"][n] = round(time.process_time() - cpu, 2)
    return seconds


def evaluate_best_of(
    model: str,
    clip: str,
    data: str,
    out_dir: str,
    prompts_file: str = PROMPTS_FILE,
    num_prompts: int = 30,
    candidates=CANDIDATES,
    num_images: int = 4,
    guidance_scale: float = 4.0,
    steps: int = 20,
    timing_steps: int = 50,
    add_style: bool = True,
    batch_size: int = 256,
    seed: int = 0,
    device=None,
    precision: str = "fp32",
    log=print,
) -> dict:
    """Top 5 by both judges and diversity per N on a fixed prompt subset, and the cost per N; writes OUT/report.json."""
    check_batch_size(batch_size)
    candidates = check_candidates(candidates)
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 2:
        raise ValueError(f"num_images must be an int >= 2 (diversity needs pairs), got {num_images!r}")
    device = device or default_device()
    embedder = CLIPEmbedder.from_pretrained(clip, device=device)
    pipe = TextToImagePipeline.from_pretrained(
        model, device=device, ranker=embedder
    )  # ranks with the CLIP judge's CLIP
    dataset = ImageCaptionDataset(data, image_size=pipe.unet.config.sample_size)
    groups = EmojiGroups(dataset.captions)
    styles_here = [s for s in STYLES if s in set(dataset.styles)]
    judges = [
        ClipJudge(embedder, groups, {s: STYLES[s].words[0] for s in styles_here}, batch_size),
        PixelJudge(dataset.images, dataset.captions, dataset.styles, groups),
    ]
    names_in_data = set(groups.names)
    natural = subset([p for p in read_prompts(prompts_file) if names_in_data & set(p["acceptable"])], num_prompts)
    exact = list(dict.fromkeys(next(n for n in p["acceptable"] if n in names_in_data) for p in natural))
    log(
        f"{len(natural)} natural prompts, {len(exact)} exact names, {num_images} images of {max(candidates)} candidates"
    )
    settings = dict(
        guidance_scale=guidance_scale, num_inference_steps=steps, scheduler="ddim", seed=seed, add_style=add_style
    )
    with autocast(pipe.device, precision):
        drawn = {
            "natural": draw_candidates(
                pipe, [p["prompt"] for p in natural], num_images, max(candidates), batch_size, **settings
            ),
            "exact": draw_candidates(pipe, exact, num_images, max(candidates), batch_size, **settings),
        }
    acceptable = {
        "natural": [groups.group_ids(p["acceptable"]) for p in natural],
        "exact": [groups.group_ids([n]) for n in exact],
    }
    real_of = {}
    for i, name in enumerate(dataset.captions):
        real_of.setdefault(name, []).append(i)
    multi = [p for p, name in enumerate(exact) if len(real_of[name]) >= 2]
    rows = {}
    for n in candidates:
        row = {}
        for part in ("natural", "exact"):
            images = kept(*drawn[part], n)
            verdicts = judge_all(judges, images, acceptable[part], num_images)
            for judge in judges:
                row.setdefault(judge.name, {})[f"{part}_top5"] = share(verdicts[judge.name]["hits"])
        images = kept(*drawn["exact"], n)
        chosen = torch.tensor([p * num_images + j for p in multi for j in range(num_images)], dtype=torch.long)
        real = [dataset.images[real_of[exact[p]]] for p in multi]
        row["diversity"] = diversity(judges[0], images[chosen], num_images, real)
        rows[n] = row
        log(f"N = {n}: {row}")
    seconds = time_candidates(pipe, candidates, num_images, **{**settings, "num_inference_steps": timing_steps})
    log(f"seconds for {num_images} images, DDIM {timing_steps}: {seconds}")
    report = {
        "task": "best_of",
        "model": model,
        "clip": clip,
        "natural_prompts": [p["prompt"] for p in natural],
        "exact_names": exact,
        "num_images": num_images,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "add_style": add_style,
        "seed": seed,
        "judges": [j.name for j in judges],
        "by_candidates": rows,
        "timing": {"steps": timing_steps, "threads": torch.get_num_threads(), "seconds": seconds},
    }
    os.makedirs(out_dir, exist_ok=True)
    write_report(report, out_dir, plot_best_of)
    return report


def markdown_table(report: dict) -> str:
    """One row per N: both judges on natural prompts and exact names, diversity, seconds."""
    judges = report["judges"]
    header = ["N"] + [f"{part}, {j}" for j in judges for part in ("natural", "exact")]
    header += ["diversity (CLIP; pixels)", f"CPU seconds, {report['num_images']} images"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for n, row in report["by_candidates"].items():
        cells = [str(n)]
        cells += [f"{100 * row[j][f'{part}_top5']:.1f}%" for j in judges for part in ("natural", "exact")]
        d = row["diversity"]
        cells += [f"{d['cosine']['ratio']}; {d['rms']['ratio']}", str(report["timing"]["seconds"]["cpu"].get(n, "-"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_best_of(report: dict, path: str) -> None:
    """Top 5 against N, one line per judge and prompt set."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    ns = [int(n) for n in report["by_candidates"]]
    for judge in report["judges"]:
        for part in ("natural", "exact"):
            values = [row[judge][f"{part}_top5"] for row in report["by_candidates"].values()]
            axes.plot(ns, values, marker="o", label=f"{part}, {judge}")
    axes.set(xscale="log", xlabel="candidates per image (N)", ylabel="top-5 share", title="best of N")
    axes.set_xticks(ns, [str(n) for n in ns])
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=120)
