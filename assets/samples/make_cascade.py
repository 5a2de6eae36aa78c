"""The README's cascade picture: what the app shows by default at 128 px, one request per row (seed 0, four images).

nice python assets/samples/make_cascade.py                 # the shipped models -> assets/samples/cascade128.png
nice python assets/samples/make_cascade.py out.png         # another file

Rows: four prompts (a name, a keyword, a sentence, another language; the Text to image tab's defaults: guidance 4,
DDIM 50, eta 0), then the Unconditional tab (DDIM 50, eta 1); each request's four 32 px images go through the
upsampler (DDIM 15, its default noise level), as the app does.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from txt2img.pipeline import TextToImagePipeline  # noqa: E402
from uncond.images import save_grid  # noqa: E402
from uncond.pipeline import UnconditionalPipeline  # noqa: E402
from uncond.upscale_pipeline import DEFAULT_STEPS, UpscalePipeline, upscale_result  # noqa: E402

PROMPTS = ["red heart", "car", "a happy dog", "perro feliz"]
NUM_IMAGES, STEPS, GUIDANCE_SCALE = 4, 50, 4.0


def main(out: str = os.path.join(HERE, "cascade128.png")):
    """Every row's request through the upsampler, tiled four to a row."""
    weights = os.path.join(ROOT, "weights")
    text_to_image = TextToImagePipeline.from_pretrained(os.path.join(weights, "txt2img"))
    unconditional = UnconditionalPipeline.from_pretrained(os.path.join(weights, "uncond"))
    upscaler = UpscalePipeline.from_pretrained(os.path.join(weights, "upscale"))
    requests = [
        text_to_image(p, num_images=NUM_IMAGES, num_inference_steps=STEPS, guidance_scale=GUIDANCE_SCALE, seed=0)
        for p in PROMPTS
    ]
    requests.append(unconditional(num_images=NUM_IMAGES, num_inference_steps=STEPS, scheduler="ddim", eta=1.0, seed=0))
    images = []
    for base in requests:
        images += upscale_result(base, upscaler, num_inference_steps=DEFAULT_STEPS).images
    save_grid(images, out, columns=NUM_IMAGES)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
