"""The page's typed model functions for editing and exploring, on tiny models: each hands its dataclasses to the
pipelines as the pipelines' own calls would."""

import numpy as np
import pytest
import torch
from PIL import Image
from txt2img_fixtures import tiny_text_encoder, tiny_unet

from txt2img.pipeline import TextToImagePipeline
from uncond.explore import Sampler
from uncond.pipeline import UnconditionalPipeline
from uncond.unet import UNet, UNetConfig
from webapp.models import Models, Prompt, Sampling, StartPicture, Variation

SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
SIZE = 8


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    config = UNetConfig(sample_size=SIZE, block_out_channels=(8, 16), layers_per_block=1, attention_resolutions=(4,),
                        norm_num_groups=4, attention_head_dim=8)  # fmt: skip
    uncond = UnconditionalPipeline(UNet(config), SCHEDULE, name="tiny")
    return Models({"tiny": uncond}, TextToImagePipeline(tiny_unet(), tiny_text_encoder(), SCHEDULE, name="t"))


@pytest.fixture(scope="module")
def picture():
    return Image.fromarray((np.random.RandomState(2).rand(SIZE, SIZE, 3) * 255).astype(np.uint8))


def last(stream):
    *_, output = stream
    return output


def pixels(output) -> np.ndarray:
    return np.stack([np.asarray(image) for image in output.images])


SAMPLING = Sampling("ddim", 4, 0.0, 1, 3)
PROMPT = Prompt("cat", "", 3.0)


def test_a_picture_to_start_from_and_a_mask_to_fill(models, picture):
    kept = last(models.unconditional("tiny", SAMPLING, StartPicture(picture, strength=0.0)))
    assert np.array_equal(pixels(kept)[0], np.asarray(picture))
    plain = last(models.text_to_image(PROMPT, SAMPLING))
    full = last(models.text_to_image(PROMPT, SAMPLING, StartPicture(picture, strength=1.0)))
    assert np.array_equal(pixels(full), pixels(plain))
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (0, 0, 4, 4))
    filled = last(models.text_to_image(PROMPT, Sampling("ddpm", 6, 0.0, 1, 3), StartPicture(picture, mask=mask)))
    keep = np.asarray(mask) == 0
    assert (pixels(filled)[0][keep] == np.asarray(picture)[keep]).all() and filled.settings["inpainting"]


def test_a_variation_at_strength_1_is_the_other_seed(models):
    other = last(models.unconditional("tiny", Sampling("ddim", 4, 0.0, 1, 9)))
    varied = last(models.unconditional("tiny", SAMPLING, variation=Variation(9, 1.0)))
    assert np.array_equal(pixels(varied), pixels(other))


def test_strips_end_at_the_plain_generations(models):
    seeds = list(models.seed_strip(SAMPLING, other_seed=9, num_frames=3, prompt=PROMPT))
    assert np.array_equal(pixels(seeds[0]), pixels(last(models.text_to_image(PROMPT, SAMPLING))))
    prompts = list(models.prompt_strip(PROMPT, "sun", 3, SAMPLING))
    other = last(models.text_to_image(Prompt("sun", "", 3.0), SAMPLING))
    assert len(prompts) == 3 and np.array_equal(pixels(prompts[-1]), pixels(other))
    uncond = list(models.seed_strip(SAMPLING, other_seed=9, num_frames=2, model="tiny"))
    assert np.array_equal(
        pixels(uncond[-1]), pixels(last(models.unconditional("tiny", Sampling("ddim", 4, 0.0, 1, 9))))
    )


def test_the_comparison_cells(models):
    rows = (Sampler("DDIM", "ddim"), Sampler("Euler", "euler"))
    cells = list(models.comparison((1, 3), seed=3, prompt=PROMPT, samplers=rows))
    assert [(r, c) for r, c, _ in cells] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    single = last(models.text_to_image(PROMPT, Sampling("euler", 3, 0.0, 1, 3)))
    assert np.array_equal(pixels(cells[3][2]), pixels(single)) and cells[3][2].elapsed > 0


def test_painted_layers_become_the_mask():
    from webapp.checks import painted_mask

    first, second = Image.new("RGBA", (8, 6), (0, 0, 0, 0)), Image.new("RGBA", (8, 6), (0, 0, 0, 0))
    first.paste((255, 0, 0, 255), (0, 0, 2, 2))
    second.paste((0, 0, 0, 40), (6, 4, 8, 6))  # a faint stroke still counts
    mask = np.asarray(painted_mask([first, None, second], (8, 6)))
    assert mask.shape == (6, 8) and mask.sum() == 8 * 255 and mask[0, 0] == 255 and mask[5, 7] == 255
    assert painted_mask([], (8, 6)) is None and painted_mask(None, (8, 6)) is None
    with pytest.raises(ValueError, match="Mask must be painted on the picture"):
        painted_mask([Image.new("RGBA", (4, 4))], (8, 6))
