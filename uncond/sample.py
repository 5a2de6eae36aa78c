"""Sample images from a trained unconditional model.

    python -m uncond.sample --model weights/uncond --num-images 16 --steps 50 --scheduler ddim --seed 0 --out samples/

Writes one PNG per image (its settings in PNG text chunks) and a grid.
"""

import argparse
import os

from tqdm.auto import tqdm

from uncond.pipeline import UnconditionalPipeline, save_grid

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights", "uncond")


def save_with_settings(image, path: str, settings: dict) -> None:
    """Save a PIL image as PNG with each setting in a tEXt chunk."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in settings.items():
        info.add_text(key, str(value))
    image.save(path, pnginfo=info)


# the settings a PNG of this project carries that can be restored, with their types
RESTORABLE = {
    "model": str,
    "scheduler": str,
    "steps": int,
    "eta": float,
    "seed": int,
    "prompt": str,
    "negative_prompt": str,
    "guidance_scale": float,
}
MAX_SETTING_CHARS = 4096  # longer values are refused (prompts are cut at 32 tokens anyway)
MAX_SETTINGS_FILE_BYTES = 8 * 2**20  # larger files are refused unread (the app's PNGs are a few kB)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_settings(path: str) -> dict:
    """The settings written by `save_with_settings`, typed; ValueError for a file that is not such a PNG.

    The pixels are never decoded (a decompression bomb costs nothing): the text chunks before the pixel data are
    read, capped by Pillow (MAX_TEXT_CHUNK, MAX_TEXT_MEMORY), and every chunk's checksum is verified.
    """
    from PIL import Image

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            signature = f.read(len(PNG_SIGNATURE))
    except OSError as error:
        raise ValueError(f"cannot read the file ({type(error).__name__})") from error
    if size > MAX_SETTINGS_FILE_BYTES:
        raise ValueError(f"the file is {size / 2**20:.1f} MB; at most {MAX_SETTINGS_FILE_BYTES // 2**20} MB are read")
    if signature != PNG_SIGNATURE:  # any other format is refused unparsed
        raise ValueError("not a PNG file")
    try:
        with Image.open(path, formats=["PNG"]) as image:
            info = dict(image.info)  # tEXt, zTXt and iTXt chunks before the pixel data, as str
            image.verify()  # every chunk's checksum through IEND: a truncated or damaged file is refused, pixels undecoded
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise ValueError(f"not a readable PNG file ({type(error).__name__})") from error
    settings = {}
    for key, kind in RESTORABLE.items():
        if key not in info:
            continue
        value = info[key]
        if not isinstance(value, str):
            raise ValueError(f"setting {key!r} is not text")
        if len(value) > MAX_SETTING_CHARS:
            raise ValueError(f"setting {key!r} is longer than {MAX_SETTING_CHARS} characters")
        try:
            settings[key] = kind(value)
        except ValueError:
            raise ValueError(f"setting {key!r} should be a {kind.__name__}, got {value[:40]!r}") from None
    if not settings:
        raise ValueError("this PNG carries no settings of this app")
    return settings


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
