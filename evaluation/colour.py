"""Colour adherence: does "blue heart" come out blue? Hearts, circles and squares of the CLDR colours, judged by hue.

    python -m evaluation colour --out eval/colour                 # the pipeline's defaults (a colour style added)
    python -m evaluation colour --no-style --out eval/colour_bare  # the prompts as typed

The hue judge (`judge_colour`) is no model: it drops the white background, sorts the drawn pixels into chromatic,
dark and light by HSV, and names the commonest chromatic hue band (brown: the orange-red band when dark); with few
chromatic pixels, black or white by which of dark and light is commoner. Its accuracy on the real pictures of
the same emoji (every style) is reported beside the samples, so its own errors are in view.
"""

import os

import torch

from evaluation.common import autocast, to_uint8, write_report
from txt2img.pipeline import TextToImagePipeline
from uncond.data import ImageCaptionDataset
from uncond.images import save_grid
from uncond.pipeline import default_device

COLOURS = (
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "brown",
)  # the CLDR colours of hearts, circles, squares
MONOCHROME = ("black", "white")  # judged too, counted apart: the seven above are the target
SHAPES = ("heart", "circle", "square")
# hue bands in degrees, [start, end); red wraps around 0
HUE_BANDS = (("red", 0, 10), ("orange", 10, 38), ("yellow", 38, 70), ("green", 70, 165), ("blue", 165, 255))
HUE_BANDS += (("purple", 255, 335), ("red", 335, 360))
BACKGROUND = 0.9  # every channel above this (in [0, 1]) is the white background
CHROMATIC_SATURATION, DARK_VALUE = 0.3, 0.4
# brown is a dull, dark orange-red: Noto's brown heart is hue 15, saturation 0.54, value 0.72; its orange 36, 1.0, 1.0
BROWN_HUES, BROWN_SATURATION, BROWN_VALUE = (45, 340), 0.7, 0.85
MIN_CHROMATIC = 0.25  # share of the drawn pixels below which a picture is black or white, not a hue


def hsv(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 (3, H, W) -> hue in degrees, saturation and value in [0, 1], each (H W,)."""
    rgb = image.reshape(3, -1).float() / 255
    value, _ = rgb.max(dim=0)
    chroma = value - rgb.min(dim=0).values
    r, g, b = rgb
    safe = chroma.clamp_min(1e-6)
    hue = torch.where(value == r, ((g - b) / safe) % 6, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return hue * 60, chroma / value.clamp_min(1e-6), value


def judge_colour(image: torch.Tensor) -> str:
    """The colour of a uint8 picture (3, H, W): one of COLOURS, "black" or "white"."""
    if image.shape[0] != 3:
        raise ValueError(f"image must be RGB (3, H, W), got shape {tuple(image.shape)}")
    drawn = (image.reshape(3, -1).float() / 255 <= BACKGROUND).any(dim=0)  # (H W,) not background
    hue, saturation, value = (x[drawn] for x in hsv(image))
    if not len(hue):
        return "white"
    chromatic = (saturation >= CHROMATIC_SATURATION) & (value >= DARK_VALUE)
    if chromatic.float().mean() < MIN_CHROMATIC:
        dark = (value < DARK_VALUE).sum()
        return "black" if dark >= (~chromatic & (value >= DARK_VALUE)).sum() else "white"
    hue, value = hue[chromatic], value[chromatic]  # (chromatic pixels,)
    names = [name for name, _, _ in HUE_BANDS]
    band = torch.zeros_like(hue, dtype=torch.long)
    for i, (_, low, high) in enumerate(HUE_BANDS):
        band[(hue >= low) & (hue < high)] = i
    saturation = saturation[chromatic]
    orange_red = (hue < BROWN_HUES[0]) | (hue >= BROWN_HUES[1])
    brown = orange_red & (saturation < BROWN_SATURATION) & (value < BROWN_VALUE)
    counts = {}
    for i, name in enumerate(names):
        counts[name] = counts.get(name, 0) + int(((band == i) & ~brown).sum())
    counts["brown"] = int(brown.sum())
    return max(counts, key=counts.get)


def prompts_of(colours=COLOURS + MONOCHROME, shapes=SHAPES) -> list:
    """(prompt, colour, shape): "blue heart" for every colour and shape, shape-major."""
    return [(f"{colour} {shape}", colour, shape) for shape in shapes for colour in colours]


def real_accuracy(data: str, colours=COLOURS + MONOCHROME, shapes=SHAPES) -> dict:
    """The judge on the real pictures of "<colour> <shape>" ("black large square") in the colour styles (line art
    and high contrast have no colour to judge): share judged right, per shape."""
    from txt2img.default_style import COLOUR_STYLES

    dataset = ImageCaptionDataset(data)
    result = {}
    for shape in shapes:
        judged = [
            judge_colour(image) == colour
            for colour in colours
            for image, name, style in zip(dataset.images, dataset.captions, dataset.styles)
            if name in (f"{colour} {shape}", f"{colour} large {shape}") and style in COLOUR_STYLES
        ]
        result[shape] = round(sum(judged) / len(judged), 4) if judged else None
    return result


def evaluate_colour(
    model: str,
    data: str,
    out_dir: str,
    num_images: int = 4,
    num_candidates: int = 1,
    add_style: bool = True,
    guidance_scale: float = 4.0,
    steps: int = 50,
    seed: int = 0,
    device=None,
    precision: str = "fp32",
    shapes=SHAPES,
    log=print,
) -> dict:
    """Hearts, circles and squares of the CLDR colours, judged by hue; writes OUT/report.json, plot.png, grid.png."""
    pipe = TextToImagePipeline.from_pretrained(model, device=device or default_device())
    if not shapes or any(shape not in SHAPES for shape in shapes):
        raise ValueError(f"shapes must be some of {', '.join(SHAPES)}, got {shapes!r}")
    prompts = prompts_of(shapes=shapes)
    images, judged = [], []
    with autocast(pipe.device, precision):
        for prompt, _, _ in prompts:
            result = pipe(
                prompt,
                num_images=num_images,
                num_candidates=num_candidates,
                add_style=add_style,
                guidance_scale=guidance_scale,
                num_inference_steps=steps,
                seed=seed,
            )
            images += result.images
            judged.append([judge_colour(x) for x in to_uint8(result.images)])
    rows = {}
    for (_, colour, shape), found in zip(prompts, judged):
        rows.setdefault(shape, {})[colour] = {"found": found, "right": sum(c == colour for c in found)}
    summary = {shape: summarise(by_colour, num_images) for shape, by_colour in rows.items()}
    report = {
        "task": "colour",
        "model": model,
        "num_images": num_images,
        "num_candidates": num_candidates,
        "add_style": add_style,
        "guidance_scale": guidance_scale,
        "steps": steps,
        "seed": seed,
        "by_shape": rows,
        "summary": summary,
        "judge_on_real_pictures": real_accuracy(data, shapes=shapes),
    }
    log(f"colour adherence: {summary}; the judge on the real pictures: {report['judge_on_real_pictures']}")
    os.makedirs(out_dir, exist_ok=True)
    save_grid(images, os.path.join(out_dir, "grid.png"), columns=num_images * (len(COLOURS) + len(MONOCHROME)))
    write_report(report, out_dir, plot_colour)
    return report


def summarise(by_colour: dict, num_images: int) -> dict:
    """Of the seven colours: images right and colours right (most of their images); black and white apart."""
    seven = [by_colour[c]["right"] for c in COLOURS if c in by_colour]
    return {
        "colours_right": sum(2 * right > num_images for right in seven),
        "colours": len(seven),
        "images_right": sum(seven),
        "images": num_images * len(seven),
        "black_and_white_right": {c: by_colour[c]["right"] for c in MONOCHROME if c in by_colour},
    }


def markdown_table(report: dict) -> str:
    """Per shape: colours drawn right (most of their images) and images right."""
    n = report["num_images"]
    lines = [f"| shape | colours right (most of {n} images) | images right | black, white (of {n}) |"]
    lines.append("| --- | --- | --- | --- |")
    for shape, s in report["summary"].items():
        mono = ", ".join(str(v) for v in s["black_and_white_right"].values())
        lines.append(
            f"| {shape} | {s['colours_right']} of {s['colours']} | {s['images_right']} of {s['images']} | {mono} |"
        )
    return "\n".join(lines)


def plot_colour(report: dict, path: str) -> None:
    """Images judged right per colour, one bar group per shape."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.5), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(report["by_shape"])
    for j, (shape, by_colour) in enumerate(report["by_shape"].items()):
        values = [by_colour[c]["right"] for c in COLOURS]
        axes.bar([i + j * width for i in range(len(COLOURS))], values, width, label=shape)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(COLOURS))], COLOURS)
    axes.set(ylabel=f"of {report['num_images']} images right", title="colour adherence, judged by hue")
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)
