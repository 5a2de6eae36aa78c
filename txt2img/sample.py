"""Sample images for a prompt from a trained text-to-image pipeline folder.

    python -m txt2img.sample --model runs/txt2img --prompt "red heart" --negative-prompt "" --num-images 8 \
        --steps 50 --scheduler ddim --guidance-scale 5 --seed 0 --out samples/

`--upscale [FOLDER]` runs the 32 -> 128 px stage on the samples (uncond/upscale_pipeline.py). `--num-candidates N`
keeps the best of N candidates per image (txt2img/rerank.py; default 1), and a prompt naming no style gets a colour
style's words (`--no-style` keeps it as typed; txt2img/default_style.py).
Writes one PNG per image (its settings in PNG text chunks) and a grid.
"""

import argparse
import os

from txt2img.pipeline import TextToImagePipeline
from txt2img.rerank import DEFAULT_CANDIDATES
from uncond.sample import add_upscale_arguments, progress_callback, upscaled, write_samples

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights", "txt2img")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Sample images for a prompt from a text-to-image DDPM.")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="pipeline folder (unet/, text_encoder/ or pipeline.json, scheduler_config.json)",
    )
    parser.add_argument("--prompt", required=True, help='the text to draw; "" for unconditional samples')
    parser.add_argument(
        "--negative-prompt", default=None, help="what to steer away from (replaces the empty prompt in guidance)"
    )
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="number of inference steps")
    parser.add_argument("--scheduler", choices=["ddpm", "ddim"], default="ddim")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM's eta: 0 deterministic, 1 DDPM-like")
    parser.add_argument(
        "--guidance-scale", type=float, default=5.0, help="classifier-free guidance: 1 none, > 1 stronger"
    )
    parser.add_argument("--guidance-rescale", type=float, default=0.0, help="Lin et al. 2023 rescale in [0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--num-candidates",
        type=int,
        default=DEFAULT_CANDIDATES,
        help="best of N: candidates drawn per image, the CLIP's favourite kept (1: off)",
    )
    parser.add_argument(
        "--no-style", action="store_true", help="add no colour style to a prompt that names none (line art possible)"
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument("--out", default="samples")
    add_upscale_arguments(parser)
    args = parser.parse_args(argv)

    pipe = TextToImagePipeline.from_pretrained(args.model, device=args.device)
    bar, advance = progress_callback(args.steps, f"{args.scheduler} x {args.num_images}")
    result = pipe(
        args.prompt,
        negative_prompt=args.negative_prompt,
        num_images=args.num_images,
        num_inference_steps=args.steps,
        scheduler=args.scheduler,
        eta=args.eta,
        guidance_scale=args.guidance_scale,
        guidance_rescale=args.guidance_rescale,
        seed=args.seed,
        num_candidates=args.num_candidates,
        add_style=not args.no_style,
        callback=advance,
    )
    bar.close()
    for warning in result.warnings:
        print(f"warning: {warning}")
    write_samples(upscaled(result, args, args.device), args.out)


if __name__ == "__main__":
    main()
