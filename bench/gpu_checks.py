"""What bench/gpu.sh measures besides `python -m bench`: training throughput, half-precision sampling of both tabs and of
the cascade, the upsampler loop's host syncs, and seeds across devices.

    python -m bench.gpu_checks data DIR                  # a synthetic image folder at 32 and 128 px (when no data is here)
    python -m bench.gpu_checks throughput RUN_DIR...     # items/s of each training run, from its log.jsonl
    python -m bench.gpu_checks sampling --upscale DIR    # the app's default requests, alone and as a cascade

Each prints one JSON object per line, so that the script's one results file can be read back line by line.
"""

import argparse
import json
import os
import statistics
import time

import torch

from bench.measure import host_waits_for_device, synchronize
from bench.models import ROOT

REQUEST = {"num_images": 4, "num_inference_steps": 50, "scheduler": "ddim", "seed": 0}  # the app's defaults
PROMPT = "red heart"


def synthetic_data(folder: str, count: int = 1024, sizes=(32, 128)) -> None:
    """Coloured shapes on white with captions, drawn once large and shrunk to each size (the data builder's layout)."""
    from PIL import Image, ImageDraw

    generator = torch.Generator().manual_seed(0)
    for size in sizes:
        os.makedirs(os.path.join(folder, str(size), "shapes"), exist_ok=True)
    with_rows = {size: [] for size in sizes}
    for i in range(count):
        colour = tuple(int(c) for c in torch.randint(0, 256, (3,), generator=generator))
        box = [int(v) for v in torch.randint(20, 120, (2,), generator=generator)]
        image = Image.new("RGB", (320, 320), "white")
        draw = ImageDraw.Draw(image)
        shape = ("circle", "square")[i % 2]
        (draw.ellipse if shape == "circle" else draw.rectangle)(
            [box[0], box[1], box[0] + 150, box[1] + 150], fill=colour, outline=(0, 0, 0), width=8
        )
        caption = f"{shape} {i}"
        for size in sizes:
            name = f"shapes/{i:05d}.png"
            image.resize((size, size), Image.Resampling.LANCZOS).save(os.path.join(folder, str(size), name))
            with_rows[size].append(
                {"file_name": name, "text": caption, "captions": [caption, shape], "style": "shapes"}
            )
    for size, rows in with_rows.items():
        with open(os.path.join(folder, str(size), "metadata.jsonl"), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


def throughput(run_dir: str) -> dict:
    """Items/s of a training run between its middle and its last log row (the start-up and first steps left out)."""
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        rows = [row for row in map(json.loads, filter(str.strip, f)) if "items_per_s" in row]
    with open(os.path.join(run_dir, "train_config.json")) as f:
        config = json.load(f)
    batch = config["batch_size"] * config["gradient_accumulation_steps"]
    first, last = rows[(len(rows) - 1) // 2], rows[-1]
    seconds = [row["step"] * batch / row["items_per_s"] for row in (first, last)]  # time since the loop started
    rate = (last["step"] - first["step"]) * batch / (seconds[1] - seconds[0]) if last is not first else None
    return {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "steps": last["step"],
        "batch": batch,
        "items_per_s": rate,
        "steps_per_s": rate / batch if rate else None,
        "loss": last["loss"],
    }


def median_seconds(run, device, repeats: int = 3) -> float:
    """Median wall seconds of `run()` after one warm-up, the device synchronised around each."""
    run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def sampling(upscale_dir: str, device: str, dtype: torch.dtype, upscale_steps: int, repeats: int) -> list:
    """Rows: both tabs' default requests alone and followed by the upsampler, their ratio, the upsampler's host syncs."""
    from txt2img.pipeline import TextToImagePipeline
    from uncond.pipeline import UnconditionalPipeline
    from uncond.upscale_pipeline import UpscalePipeline, upscale_result

    weights = os.path.join(ROOT, "weights")
    uncond = UnconditionalPipeline.from_pretrained(os.path.join(weights, "uncond"), device=device, dtype=dtype)
    txt2img = TextToImagePipeline.from_pretrained(os.path.join(weights, "txt2img"), device=device, dtype=dtype)
    upscaler = UpscalePipeline.from_pretrained(upscale_dir, device=device, dtype=dtype)
    tabs = {
        "uncond": lambda: uncond(**REQUEST, eta=1.0),
        "txt2img": lambda: txt2img(PROMPT, **REQUEST, guidance_scale=4.0),
    }
    rows = []
    for name, base in tabs.items():
        alone = median_seconds(base, device, repeats)
        cascade = median_seconds(
            lambda: upscale_result(base(), upscaler, num_inference_steps=upscale_steps), device, repeats
        )
        rows.append(
            {
                "tab": name,
                "dtype": str(dtype).replace("torch.", ""),
                "base_s": alone,
                "cascade_s": cascade,
                "upscale_steps": upscale_steps,
                "ratio": cascade / alone,
                "target_ratio": 2.5,
            }
        )
    images = uncond(**REQUEST, eta=1.0).images
    if torch.device(device).type == "cuda":
        waits = host_waits_for_device(lambda: upscaler(images, num_inference_steps=upscale_steps))
        rows.append({"check": "upscale loop host waits", "error": waits})  # None: no sync per step
    rows.append(seeds_across_devices(upscale_dir, images, device))
    return rows


def seeds_across_devices(upscale_dir: str, images: list, device: str) -> dict:
    """The largest pixel difference of the same seed's 128 px pictures on the CPU and on `device`, both float32."""
    import numpy as np

    from uncond.upscale_pipeline import UpscalePipeline

    pictures = []
    for where in ("cpu", device):
        pipe = UpscalePipeline.from_pretrained(upscale_dir, device=where, dtype=torch.float32)
        pictures.append(
            np.stack([np.asarray(i, dtype=np.int16) for i in pipe(images[:2], num_inference_steps=10).images])
        )
    return {
        "check": "same seed, cpu vs " + device,
        "max_pixel_difference": int(np.abs(pictures[0] - pictures[1]).max()),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_checks", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data")
    data.add_argument("folder")
    data.add_argument("--count", type=int, default=1024)
    runs = commands.add_parser("throughput")
    runs.add_argument("run_dirs", nargs="+")
    samples = commands.add_parser("sampling")
    samples.add_argument("--upscale", required=True, help="an upsampler folder (bench/gpu.sh trains one)")
    samples.add_argument("--device", default="cuda")
    samples.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    samples.add_argument("--upscale-steps", type=int, default=25)
    samples.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "data":
        synthetic_data(args.folder, args.count)
        rows = [{"data": args.folder, "images": args.count}]
    elif args.command == "throughput":
        rows = [throughput(run) for run in args.run_dirs]
    else:
        dtype = getattr(torch, args.dtype)
        rows = sampling(args.upscale, args.device, dtype, args.upscale_steps, args.repeats)
    for row in rows:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
