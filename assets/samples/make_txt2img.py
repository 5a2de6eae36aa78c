"""The README's text-to-image grid: one prompt per column, the four images of one request (seed 0) down each.

nice python assets/samples/make_txt2img.py                      # the shipped model -> assets/samples/txt2img.png
nice python assets/samples/make_txt2img.py runs/txt2img out.png # another pipeline folder, another file
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from txt2img.pipeline import TextToImagePipeline  # noqa: E402
from uncond.images import save_grid  # noqa: E402

# names, keywords, a sentence, other languages and style words: what a person types (README, Natural prompts)
PROMPTS = [
    "car",
    "a happy dog",
    "corazón rojo",
    "red heart, line art",
    "pizza",
    "cat face, 3D",
    "rocket",
    "赤いハート",
    "coffee",
    "猫",
    "sun",
    "red heart",
]
NUM_IMAGES, STEPS, GUIDANCE_SCALE, SCALE = 4, 50, 4.0, 2


def main(
    model: str = os.path.join(HERE, "..", "..", "weights", "txt2img"), out: str = os.path.join(HERE, "txt2img.png")
):
    """Draw every prompt's request and tile them, column by prompt, enlarged `SCALE` x with nearest-neighbour."""
    pipe = TextToImagePipeline.from_pretrained(model)
    columns = []
    for prompt in PROMPTS:
        result = pipe(prompt, num_images=NUM_IMAGES, num_inference_steps=STEPS, guidance_scale=GUIDANCE_SCALE, seed=0)
        columns.append([image.resize((image.width * SCALE, image.height * SCALE), 0) for image in result.images])
    row_major = [columns[c][r] for r in range(NUM_IMAGES) for c in range(len(PROMPTS))]
    save_grid(row_major, out, columns=len(PROMPTS))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
