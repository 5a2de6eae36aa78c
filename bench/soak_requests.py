"""What the soak's clients send: every endpoint of the served app in turn, the upsampler on and off, the result
files fetched ("kept", as a browser shows them) or never fetched ("dropped", a client that went away).

Argument orders as in README "The app" and tests/test_load.py; few steps and images, so that a long soak leaves
the CPU to other work.
"""

import functools
import os
import tempfile

import httpx
from PIL import Image

from bench.models import ROOT

MODEL = "emoji (shipped)"
PROMPTS = ["red heart", "cat face", "pizza", "flag: Japan", "rocket", "sun", "grinning face", "blue heart"]
SCHEDULERS = ["DDIM", "DDPM", "Euler (diffusers)", "DPM-Solver++ (diffusers)"]
UPSCALE_STEPS = 2  # the upsampler's DDIM steps when a request turns it on
NOISE_LEVEL = 50
COMPARE_STEPS = 5  # the fewest the Explore tab's grid offers
# one round: each endpoint once, the two generation tabs with the upsampler on and off
ROUND = [
    ("/unconditional", True),
    ("/text_to_image", False),
    ("/image_to_image", False),
    ("/unconditional", False),
    ("/text_to_image", True),
    ("/inpaint", False),
    ("/interpolate", False),
    ("/compare", False),
    ("/live", False),
]


@functools.cache
def edit_files() -> tuple[str, str]:
    """The edit requests' picture (a shipped example) and a paint layer over its right half."""
    picture = os.path.join(ROOT, "assets", "examples", "red_heart.png")
    layer = Image.new("RGBA", Image.open(picture).size, (0, 0, 0, 0))
    layer.paste((255, 0, 255, 255), (layer.width // 2, 0, layer.width, layer.height))
    path = os.path.join(tempfile.mkdtemp(prefix="soak-"), "layer.png")
    layer.save(path)
    return picture, path


def request_for(client: int, i: int, steps: int, images: int) -> tuple[str, tuple]:
    """The i-th request of a client: (endpoint, arguments), its own seed and prompt."""
    from gradio_client import handle_file

    endpoint, upscale = ROUND[(client + i) % len(ROUND)]
    seed = 1000 * client + i
    scheduler = SCHEDULERS[i % len(SCHEDULERS)]
    prompt = f"{PROMPTS[i % len(PROMPTS)]} {client}.{i}"
    extra = (seed + 1, 0.0, upscale, UPSCALE_STEPS, NOISE_LEVEL)  # variation off
    if endpoint == "/unconditional":
        return endpoint, (MODEL, scheduler, steps, 0.0, images, seed, *extra)
    if endpoint == "/text_to_image":
        return endpoint, (prompt, "", 3.0, scheduler, steps, 0.0, images, seed, False, 0.995, 1.5, "any", *extra)
    picture, layer = edit_files()
    if endpoint == "/image_to_image":
        sketch = {"background": None, "layers": [], "composite": handle_file(picture)}
        return endpoint, (sketch, prompt, "", 3.0, 1.0, scheduler, steps, 0.0, images, seed)
    if endpoint == "/inpaint":
        painted = {"background": handle_file(picture), "layers": [handle_file(layer)], "composite": None}
        return endpoint, (painted, prompt, "", 3.0, SCHEDULERS[i % 2], steps, 0.0, images, seed, 1, 2)
    if endpoint == "/interpolate":
        return endpoint, ("Text to image", MODEL, prompt, "", 3.0, seed, "Two seeds", seed + 1, "", 2, scheduler,
                          steps, 0.0)  # fmt: skip
    if endpoint == "/compare":
        return endpoint, ("Unconditional", MODEL, "", "", 3.0, seed, ["DDIM, eta 0"], [COMPARE_STEPS])
    return endpoint, (True, prompt, "", 3.0, seed, "any")


def file_urls(output) -> list[str]:
    """Every served file's URL in an answer (galleries, images, strips), found wherever it sits."""
    if isinstance(output, dict):
        if isinstance(output.get("url"), str) and "/file=" in output["url"]:
            return [output["url"]]
        return [url for value in output.values() for url in file_urls(value)]
    if isinstance(output, (list, tuple)):
        return [url for value in output for url in file_urls(value)]
    return []


def fetch_all(output) -> int:
    """Download every file of an answer, as a browser showing it would; the bytes fetched."""
    total = 0
    for url in file_urls(output):
        response = httpx.get(url, timeout=60)
        response.raise_for_status()
        total += len(response.content)
    return total
