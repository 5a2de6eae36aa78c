"""Sample images from a trained unconditional model.

    python -m uncond.sample --model weights/uncond --num-images 16 --steps 50 --scheduler ddim --seed 0 --out samples/
    python -m uncond.sample ... --upscale runs/upscale --upscale-steps 15    (then the 32 -> 128 px stage)

Writes one PNG per image (its settings in PNG text chunks) and a grid.
"""

import argparse
import os

from tqdm.auto import tqdm

from uncond.images import save_grid
from uncond.pipeline import UnconditionalPipeline
from uncond.settings import save_with_settings
from uncond.upscale_pipeline import DEFAULT_STEPS, UpscalePipeline, upscale_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, "weights", "uncond")
DEFAULT_UPSCALE = os.path.join(ROOT, "weights", "upscale")


def progress_callback(total: int, desc: str):
    """A progress bar and the pipeline callback that advances it (returns None: the loop goes on)."""
    bar = tqdm(total=total, desc=desc)

    def advance(step, timestep, x_t, pred_original_sample):
        bar.update(1)

    return bar, advance


def add_upscale_arguments(parser: argparse.ArgumentParser) -> None:
    """--upscale [FOLDER], --upscale-steps, --noise-level: the super-resolution stage after the base model."""
    parser.add_argument(
        "--upscale",
        nargs="?",
        const=DEFAULT_UPSCALE,
        default=None,
        metavar="FOLDER",
        help="upsample the samples with a super-resolution folder (python -m uncond.train_upscale); "
        "without FOLDER: weights/upscale",
    )
    parser.add_argument(
        "--upscale-steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"DDIM steps of the upsampler (default {DEFAULT_STEPS}, the app's)",
    )
    parser.add_argument(
        "--noise-level", type=int, default=None, help="augmentation level of the low-res input (default: the folder's)"
    )


def upscaled(result, args, device=None):
    """The result upsampled by the --upscale folder with the same seed, or the result itself without --upscale."""
    if not args.upscale:
        return result
    upscaler = UpscalePipeline.from_pretrained(args.upscale, device=device)
    bar, advance = progress_callback(args.upscale_steps, f"upscale x {len(result.images)}")
    result = upscale_result(
        result, upscaler, num_inference_steps=args.upscale_steps, noise_level=args.noise_level, callback=advance
    )
    bar.close()
    return result


def write_samples(result, out_dir: str) -> None:
    """One PNG per image, with the result's settings in text chunks, plus grid.png."""
    os.makedirs(out_dir, exist_ok=True)
    for i, image in enumerate(result.images):
        save_with_settings(image, os.path.join(out_dir, f"{i:03d}.png"), {**result.settings, "index": i})
    save_grid(result.images, os.path.join(out_dir, "grid.png"))
    print(
        f"wrote {len(result.images)} images and grid.png to {out_dir} in {result.elapsed:.1f}s on {result.settings['device']}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Sample images from an unconditional DDPM.")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="model folder, diffusers UNet2DModel folder or hub id (default: the shipped model)",
    )
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50, help="number of inference steps")
    parser.add_argument("--scheduler", choices=["ddpm", "ddim"], default="ddim")
    parser.add_argument(
        "--eta",
        type=float,
        default=1.0,
        help="DDIM's eta: 0 deterministic, 1 DDPM-like (default 1: the shipped model's DDIM-50 is much better with it, README Evaluation)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument("--out", default="samples")
    add_upscale_arguments(parser)
    args = parser.parse_args(argv)

    pipe = UnconditionalPipeline.from_pretrained(args.model, device=args.device)
    bar, advance = progress_callback(args.steps, f"{args.scheduler} x {args.num_images}")
    result = pipe(
        num_images=args.num_images,
        num_inference_steps=args.steps,
        scheduler=args.scheduler,
        eta=args.eta,
        seed=args.seed,
        callback=advance,
    )
    bar.close()
    write_samples(upscaled(result, args, args.device), args.out)


if __name__ == "__main__":
    main()
