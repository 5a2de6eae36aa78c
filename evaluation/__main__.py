"""Evaluate the trained models in the feature space of the project's CLIP; writes OUT/report.json and OUT/plot.png.

    python -m evaluation uncond --model weights/uncond --clip weights/clip --data data/emoji32 --num-samples 1000 --out eval/uncond
    python -m evaluation txt2img --model weights/txt2img --clip weights/clip --data data/emoji --captions 200 \
        --guidance-scales 1 2 3 5 7 --out eval/txt2img
    python -m evaluation natural --model weights/txt2img --clip weights/clip --data data/emoji-multi/32 --out eval/natural
    python -m evaluation best_of --num-prompts 30 --candidates 1 2 4 8 16 --out eval/best_of
    python -m evaluation colour --out eval/colour   # --no-style: the prompts as typed
    python -m evaluation background --num-samples 8 --out eval/background
    python -m evaluation upscale --model weights/upscale --data data/emoji-multi/128 --out eval/upscale
    python -m evaluation loss --model weights/txt2img --data data/emoji-multi/32 --out eval/loss

`evaluation/uncond.py`, `evaluation/txt2img.py`, `evaluation/natural.py`, `evaluation/best_of.py`, `evaluation/colour.py`,
`evaluation/background.py`, `evaluation/upscale.py` and `evaluation/loss.py` say what each measures.
"""

import argparse
import json
import os

from evaluation.background import evaluate_background
from evaluation.background import markdown_table as background_table
from evaluation.best_of import CANDIDATES, evaluate_best_of
from evaluation.best_of import markdown_table as best_of_table
from evaluation.colour import evaluate_colour
from evaluation.colour import markdown_table as colour_table
from evaluation.common import WEIGHTS
from evaluation.loss import held_out_loss
from evaluation.natural import PROMPTS_FILE, evaluate_natural, markdown_table
from evaluation.txt2img import GUIDANCE_SCALES, evaluate_txt2img
from evaluation.uncond import MEMORISATION_THRESHOLD, SAMPLERS, evaluate_uncond
from evaluation.upscale import NOISE_LEVELS, evaluate_upscale, markdown_tables
from uncond.sampling import SCHEDULER_NAMES


def parse_args(argv=None) -> argparse.Namespace:
    """The command line: a task (uncond or txt2img) and its settings."""
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="task", required=True)
    uncond = sub.add_parser("uncond", help="FID_CLIP, precision/recall and memorisation per sampler setting")
    txt2img = sub.add_parser(
        "txt2img", help="CLIP score and caption retrieval per guidance scale, held-out pairs apart"
    )
    natural = sub.add_parser(
        "natural",
        help="natural prompts vs exact names, diversity and held-out style pairs, judged by CLIP and by pixels",
    )
    best_of = sub.add_parser(
        "best_of", help="best of N: natural prompts and exact names by both judges, diversity and seconds per N"
    )
    colour = sub.add_parser("colour", help="hearts, circles and squares of the CLDR colours, judged by hue")
    background = sub.add_parser(
        "background", help="the cascade's corners (levels off white) and the detail the upsampler adds, both tabs"
    )
    upscale = sub.add_parser(
        "upscale", help="the upsampler: PSNR / SSIM / consistency on held-out pictures, FID_CLIP of both tabs' cascades"
    )
    loss = sub.add_parser("loss", help="the text-to-image model's denoising loss on the held-out pictures")
    loss.add_argument("--model", default=os.path.join(WEIGHTS, "txt2img"), help="pipeline folder (default: shipped)")
    loss.add_argument("--data", default="data/emoji-multi/32", help="image folder with metadata.jsonl")
    loss.add_argument("--out", required=True, help="folder for report.json")
    loss.add_argument("--batch-size", type=int, default=64)
    loss.add_argument("--seed", type=int, default=0)
    loss.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    for p, data, model in (
        (uncond, "data/emoji32", "uncond"),
        (txt2img, "data/emoji", "txt2img"),
        (natural, "data/emoji-multi/32", "txt2img"),
        (best_of, "data/emoji-multi/32", "txt2img"),
        (colour, "data/emoji-multi/32", "txt2img"),
        (upscale, "data/emoji-multi/128", "upscale"),
        (background, "data/emoji-multi/128", "upscale"),
    ):
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
    txt2img.add_argument(
        "--thresholding",
        nargs=2,
        type=float,
        metavar=("PERCENTILE", "MAX"),
        help="dynamic thresholding of x_0 (Imagen), e.g. 0.995 1.5 (default: the schedule's clipping)",
    )
    natural.add_argument("--prompts", default=PROMPTS_FILE, help="natural prompts JSON (default: the shipped list)")
    natural.add_argument("--num-images", type=int, default=4, help="seeds per prompt (diversity compares them)")
    natural.add_argument("--guidance-scale", type=float, default=4.0)
    natural.add_argument("--steps", type=int, default=25)
    natural.add_argument("--scheduler", choices=list(SCHEDULER_NAMES), default="ddim")
    natural.add_argument("--batch-size", type=int, default=128)
    natural.add_argument("--add-style", action="store_true", help="the pipeline's colour style for prompts naming none")
    best_of.add_argument("--prompts", default=PROMPTS_FILE, help="natural prompts JSON (default: the shipped list)")
    best_of.add_argument("--num-prompts", type=int, default=30, help="natural prompts (every k-th), with their names")
    best_of.add_argument("--candidates", nargs="+", type=int, default=list(CANDIDATES), help="the N to score")
    best_of.add_argument("--num-images", type=int, default=4, help="images kept per prompt")
    best_of.add_argument("--guidance-scale", type=float, default=4.0)
    best_of.add_argument("--steps", type=int, default=20)
    best_of.add_argument("--timing-steps", type=int, default=50, help="DDIM steps of the seconds-per-N timing")
    best_of.add_argument("--no-style", action="store_true", help="no colour style added to the prompts")
    best_of.add_argument("--batch-size", type=int, default=256)
    colour.add_argument("--num-images", type=int, default=4)
    colour.add_argument("--num-candidates", type=int, default=1, help="best of N (txt2img/rerank.py)")
    colour.add_argument("--guidance-scale", type=float, default=4.0)
    colour.add_argument("--steps", type=int, default=50)
    colour.add_argument("--no-style", action="store_true", help="no colour style added to the prompts")
    colour.add_argument("--shapes", nargs="+", default=["heart", "circle", "square"], help="heart, circle, square")
    background.add_argument("--uncond", default=os.path.join(WEIGHTS, "uncond"), help="base model of the first tab")
    background.add_argument("--txt2img", default=os.path.join(WEIGHTS, "txt2img"), help="base model of the second tab")
    background.add_argument("--num-samples", type=int, default=8, help="base samples per tab")
    background.add_argument("--num-real", type=int, default=256, help="real 128 px pictures")
    background.add_argument("--steps", type=int, default=15, help="the upsampler's DDIM steps")
    background.add_argument("--base-steps", type=int, default=25, help="the base models' DDIM steps")
    upscale.add_argument("--uncond", default=os.path.join(WEIGHTS, "uncond"), help="base model of the first tab")
    upscale.add_argument("--txt2img", default=os.path.join(WEIGHTS, "txt2img"), help="base model of the second tab")
    upscale.add_argument("--num-images", type=int, default=64, help="held-out pictures to reconstruct")
    upscale.add_argument("--num-samples", type=int, default=64, help="base samples per tab for FID_CLIP")
    upscale.add_argument("--num-real", type=int, default=2000, help="real 128 px pictures FID_CLIP compares with")
    upscale.add_argument("--steps", type=int, default=15, help="the upsampler's DDIM steps")
    upscale.add_argument("--base-steps", type=int, default=25, help="the base models' DDIM steps")
    upscale.add_argument("--noise-levels", nargs="+", type=int, default=list(NOISE_LEVELS))
    upscale.add_argument(
        "--cascade-noise-levels",
        nargs="+",
        type=int,
        default=None,
        help="levels of the cascade rows (default: the folder's)",
    )
    upscale.add_argument("--batch-size", type=int, default=16)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run the evaluation the command line names; returns its report."""
    args = parse_args(argv)
    if args.task == "loss":
        report = held_out_loss(args.model, args.data, batch_size=args.batch_size, seed=args.seed, device=args.device)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "report.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"held-out loss {report['loss']} over {report['images']} images; wrote {args.out}/report.json")
        return report
    common = dict(
        model=args.model,
        clip=args.clip,
        data=args.data,
        out_dir=args.out,
        batch_size=getattr(args, "batch_size", None),  # colour draws one prompt per call
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
    elif args.task == "upscale":
        report = evaluate_upscale(
            uncond=args.uncond,
            txt2img=args.txt2img,
            num_images=args.num_images,
            num_samples=args.num_samples,
            num_real=args.num_real,
            steps=args.steps,
            base_steps=args.base_steps,
            noise_levels=args.noise_levels,
            cascade_noise_levels=args.cascade_noise_levels,
            **common,
        )
        print(markdown_tables(report))
    elif args.task == "best_of":
        report = evaluate_best_of(
            prompts_file=args.prompts,
            num_prompts=args.num_prompts,
            candidates=args.candidates,
            num_images=args.num_images,
            guidance_scale=args.guidance_scale,
            steps=args.steps,
            timing_steps=args.timing_steps,
            add_style=not args.no_style,
            **common,
        )
        print(best_of_table(report))
    elif args.task == "background":
        report = evaluate_background(
            model=args.model,
            uncond=args.uncond,
            txt2img=args.txt2img,
            data=args.data,
            out_dir=args.out,
            num_samples=args.num_samples,
            num_real=args.num_real,
            steps=args.steps,
            base_steps=args.base_steps,
            seed=args.seed,
            device=args.device,
        )
        print(background_table(report))
    elif args.task == "colour":
        report = evaluate_colour(
            model=args.model,
            data=args.data,
            out_dir=args.out,
            num_images=args.num_images,
            num_candidates=args.num_candidates,
            add_style=not args.no_style,
            guidance_scale=args.guidance_scale,
            steps=args.steps,
            seed=args.seed,
            device=args.device,
            precision=args.precision,
            shapes=args.shapes,
        )
        print(colour_table(report))
    elif args.task == "natural":
        report = evaluate_natural(
            prompts_file=args.prompts,
            num_images=args.num_images,
            guidance_scale=args.guidance_scale,
            steps=args.steps,
            scheduler=args.scheduler,
            add_style=args.add_style,
            **common,
        )
        print(markdown_table(report))
    else:
        report = evaluate_txt2img(
            num_captions=args.captions,
            guidance_scales=args.guidance_scales,
            steps=args.steps,
            scheduler=args.scheduler,
            thresholding=None
            if args.thresholding is None
            else {
                "thresholding": True,
                "dynamic_thresholding_ratio": args.thresholding[0],
                "sample_max_value": args.thresholding[1],
            },
            **common,
        )
    print(
        f"wrote {os.path.join(args.out, 'report.json')}"
        + (" and grid.png" if args.task == "upscale" else " and plot.png")
    )
    return report


if __name__ == "__main__":
    main()
