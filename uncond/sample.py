"""Sample images from a trained unconditional model.

    python -m uncond.sample --model weights/uncond --num-images 16 --steps 50 --scheduler ddim --seed 0 --out samples/

Writes one PNG per image (its settings in PNG text chunks) and a grid.
"""

import argparse
import os

from tqdm.auto import tqdm

from uncond.images import save_grid
from uncond.pipeline import UnconditionalPipeline
from uncond.settings import save_with_settings

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights", "uncond")


def progress_callback(total: int, desc: str):
    """A progress bar and the pipeline callback that advances it (returns None: the loop goes on)."""
    bar = tqdm(total=total, desc=desc)

    def advance(step, timestep, x_t, pred_original_sample):
        bar.update(1)

    return bar, advance


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
    write_samples(result, args.out)


if __name__ == "__main__":
    main()
