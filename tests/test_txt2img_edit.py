"""Editing with text: image to image, inpainting and variations in the text-to-image pipeline, prompt embeddings
handed in, and interpolation between two prompts whose end frames are the plain generations."""

import numpy as np
import pytest
import torch
from PIL import Image
from txt2img_fixtures import tiny_text_encoder, tiny_unet

from txt2img.interpolate import interpolate_prompts, lerp_embeddings
from txt2img.pipeline import TextToImagePipeline
from uncond.explore import interpolate_seeds

SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
SIZE = 8  # the tiny UNet's


@pytest.fixture(scope="module")
def pipe():
    return TextToImagePipeline(tiny_unet(), tiny_text_encoder(), SCHEDULER_CONFIG, name="tiny")


@pytest.fixture(scope="module")
def picture():
    return Image.fromarray((np.random.RandomState(1).rand(SIZE, SIZE, 3) * 255).astype(np.uint8))


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(image) for image in result.images])


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "euler"])
def test_strength_1_is_the_plain_generation_and_0_the_picture(pipe, picture, scheduler):
    kwargs = dict(prompt=["cat", "sun"], num_images=2, num_inference_steps=4, scheduler=scheduler, seed=5, eta=1.0)
    plain = pipe(**kwargs)
    assert np.array_equal(pixels(pipe(image=picture, strength=1.0, **kwargs)), pixels(plain))
    same = pipe(image=picture, strength=0.0, **kwargs)
    assert same.steps_done == 0 and np.array_equal(pixels(same), np.stack([np.asarray(picture)] * 4))
    half = pipe(image=picture, strength=0.5, **kwargs)
    assert half.steps_done == 2 and half.settings["strength"] == 0.5 and half.settings["prompt"] == ["cat", "sun"]


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
def test_inpainting_keeps_the_unmasked_pixels_exactly(pipe, picture, guidance_scale):
    mask = np.zeros((SIZE, SIZE), bool)
    mask[2:6, 1:5] = True
    result = pipe(prompt="cat", num_images=2, num_inference_steps=10, scheduler="ddpm", seed=1, image=picture,
                  mask=mask, guidance_scale=guidance_scale, jump_length=3, jump_n_sample=2)  # fmt: skip
    out, original = pixels(result), np.asarray(picture)
    assert (out[:, ~mask] == original[~mask]).all() and (out[:, mask] != original[mask]).mean() > 0.9
    assert result.steps_done == 10 + 3 * 3  # jumps back 3 steps once at j = 0, 3, 6
    with pytest.raises(ValueError, match="scheduler"):
        pipe(prompt="cat", image=picture, mask=mask, scheduler="dpm++")


def test_variation_strength_0_is_the_seed_and_1_the_variation_seed(pipe):
    kwargs = dict(prompt="cat", num_images=2, num_inference_steps=4, scheduler="ddim", eta=1.0)
    assert np.array_equal(
        pixels(pipe(seed=3, variation_seed=8, variation_strength=0, **kwargs)), pixels(pipe(seed=3, **kwargs))
    )
    assert np.array_equal(
        pixels(pipe(seed=3, variation_seed=8, variation_strength=1, **kwargs)), pixels(pipe(seed=8, **kwargs))
    )
    middle = pixels(pipe(seed=3, variation_seed=8, variation_strength=0.3, **kwargs))
    assert not np.array_equal(middle, pixels(pipe(seed=3, **kwargs)))


def test_prompt_embeddings_handed_in_are_what_the_prompt_would_give(pipe):
    cond, uncond = pipe.encode(["cat"], [""], True)
    kwargs = dict(num_images=1, num_inference_steps=4, seed=2, guidance_scale=3.0)
    given = pipe(prompt="cat", prompt_embeds=cond, negative_prompt_embeds=uncond, add_style=False, **kwargs)
    # embeddings handed in are taken as they are: the prompt's own, with no colour style added
    assert np.array_equal(pixels(given), pixels(pipe(prompt="cat", add_style=False, **kwargs)))
    with pytest.raises(ValueError, match="prompt_embeds"):
        pipe(prompt=["cat", "sun"], prompt_embeds=cond, **kwargs)
    with pytest.raises(ValueError, match="negative_prompt_embeds needs prompt_embeds"):
        pipe(prompt="cat", negative_prompt_embeds=uncond, **kwargs)


def test_lerped_embeddings_mix_the_states_and_attend_to_either_prompts_tokens(pipe):
    a, _ = pipe.encode(["cat"], [""], False)
    b, _ = pipe.encode(["pizza slice"], [""], False)
    assert lerp_embeddings(a, b, 0.0) is a and lerp_embeddings(a, b, 1.0) is b
    middle = lerp_embeddings(a, b, 0.25)
    assert torch.allclose(middle.hidden_states, 0.75 * a.hidden_states + 0.25 * b.hidden_states)
    assert torch.equal(middle.attention_mask, b.attention_mask)  # the longer prompt's tokens hold the shorter's


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
def test_prompt_interpolation_ends_are_the_plain_generations(pipe, guidance_scale):
    kwargs = dict(num_inference_steps=4, seed=4, scheduler="ddim")
    frames = list(interpolate_prompts(pipe, "cat", "sun", 4, guidance_scale=guidance_scale, **kwargs))
    assert len(frames) == 4
    first = pipe(prompt="cat", guidance_scale=guidance_scale, num_images=1, **kwargs)
    last = pipe(prompt="sun", guidance_scale=guidance_scale, num_images=1, **kwargs)
    assert np.array_equal(pixels(frames[0]), pixels(first)) and np.array_equal(pixels(frames[-1]), pixels(last))
    assert frames[0].settings["prompt"] == "cat" and frames[-1].settings["prompt"] == "sun"
    assert not np.array_equal(pixels(frames[1]), pixels(first))
    with pytest.raises(ValueError, match="num_frames"):
        list(interpolate_prompts(pipe, "cat", "sun", 1))
    with pytest.raises(ValueError, match="other_prompt"):
        list(interpolate_prompts(pipe, "cat", None, 3))


def test_seed_interpolation_with_a_prompt_ends_at_the_two_seeds(pipe):
    kwargs = dict(prompt="cat", num_inference_steps=4, scheduler="ddim", guidance_scale=3.0)
    frames = list(interpolate_seeds(pipe, 1, 2, 3, **kwargs))
    assert np.array_equal(pixels(frames[0]), pixels(pipe(seed=1, num_images=1, **kwargs)))
    assert np.array_equal(pixels(frames[-1]), pixels(pipe(seed=2, num_images=1, **kwargs)))
