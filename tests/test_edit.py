"""Image to image and inpainting in the unconditional pipeline: strength 0 and 1 exactly, diffusers' step count,
pictures of any mode and size, masks checked, unmasked pixels kept exactly."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image

from uncond.edit import fit_mask, fit_picture, steps_for_strength
from uncond.pipeline import UnconditionalPipeline
from uncond.sampling import make_scheduler
from uncond.unet import UNet, UNetConfig

SIZE = 16
SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    config = UNetConfig(sample_size=SIZE, block_out_channels=(8, 16), layers_per_block=1, attention_resolutions=(8,),
                        norm_num_groups=4, attention_head_dim=8)  # fmt: skip
    return UnconditionalPipeline(UNet(config), SCHEDULE, name="tiny")


@pytest.fixture(scope="module")
def picture():
    return Image.fromarray((np.random.RandomState(0).rand(SIZE, SIZE, 3) * 255).astype(np.uint8))


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(image) for image in result.images])  # (B, H, W, 3)


@pytest.mark.parametrize("n", [1, 3, 10, 50])
@pytest.mark.parametrize("strength", [0.01, 0.1, 0.3, 0.35, 0.5, 0.7, 0.99, 1.0])
def test_the_steps_run_are_diffusers_img2img_steps(n, strength):
    class Holder:  # diffusers' get_timesteps reads self.scheduler only
        scheduler = make_scheduler("ddim", SCHEDULE)

    Holder.scheduler.set_timesteps(n)
    timesteps, steps = StableDiffusionImg2ImgPipeline.get_timesteps(Holder(), n, strength, "cpu")
    ours = steps_for_strength(n, strength)
    assert ours == max(steps, 1)  # diffusers runs no step where int(n strength) = 0; we run one
    if steps:
        assert torch.equal(Holder.scheduler.timesteps[n - ours :], timesteps)
    assert steps_for_strength(n, 0.0) == 0


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "dpm++", "euler"])
def test_strength_1_is_the_plain_generation_and_strength_0_the_picture(pipe, picture, scheduler):
    kwargs = dict(num_images=2, num_inference_steps=5, scheduler=scheduler, eta=1.0, seed=3)
    plain = pipe(**kwargs)
    assert np.array_equal(pixels(pipe(image=picture, strength=1.0, **kwargs)), pixels(plain))
    unchanged = pipe(image=picture, strength=0.0, **kwargs)
    assert unchanged.steps_done == 0 and np.array_equal(pixels(unchanged), np.stack([np.asarray(picture)] * 2))


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "dpm++", "euler"])
def test_strength_runs_its_share_of_the_steps_from_the_picture(pipe, picture, scheduler):
    seen = []
    result = pipe(num_images=2, num_inference_steps=10, scheduler=scheduler, seed=3, image=picture, strength=0.35,
                  callback=lambda i, t, x, x0: seen.append(t))  # fmt: skip
    sampler = make_scheduler(scheduler, SCHEDULE)
    sampler.set_timesteps(10)
    assert seen == [int(t) for t in sampler.timesteps[7:]]  # int(10 x 0.35) = 3 steps, the last three
    assert result.steps_done == result.num_inference_steps == 3 and not result.stopped
    assert result.settings["strength"] == 0.35 and result.settings["steps"] == 10
    plain = pixels(pipe(num_images=2, num_inference_steps=10, scheduler=scheduler, seed=3))
    distance = np.abs(pixels(result).astype(int) - np.asarray(picture)).mean()
    assert distance < np.abs(plain.astype(int) - np.asarray(picture)).mean()  # the picture survives, in part
    low = pipe(num_images=1, num_inference_steps=10, scheduler=scheduler, seed=3, image=picture, strength=0.01)
    assert low.steps_done == 1


def test_pictures_of_any_mode_and_size_are_put_on_white_and_cropped_to_the_centre(pipe):
    rgba = np.zeros((40, 60, 4), np.uint8)  # 60 wide, 40 high: the centred 40 x 40 square is kept
    rgba[:, 10:50] = (255, 0, 0, 255)  # opaque red inside the square
    rgba[:, 20:30, 3] = 0  # a transparent stripe: white
    fitted = fit_picture(Image.fromarray(rgba, "RGBA"), SIZE)
    array = np.asarray(fitted)
    assert fitted.size == (SIZE, SIZE) and fitted.mode == "RGB"
    assert (array[:, 0] == (255, 0, 0)).all() and (array[:, 5] == (255, 255, 255)).all()
    result = pipe(num_images=1, num_inference_steps=4, image=Image.fromarray(rgba, "RGBA"), strength=0.0)
    assert np.array_equal(np.asarray(result.images[0]), array)  # strength 0: the picture at the model's resolution
    assert fit_picture(Image.new("L", (5, 9), 128), SIZE).mode == "L"
    assert fit_picture(Image.new("P", (5, 9)), SIZE).mode == "RGB"


def mask_of(size=(SIZE, SIZE)):
    mask = np.zeros((size[1], size[0]), bool)
    mask[4:10, 3:12] = True
    return mask


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim"])
def test_inpainting_keeps_the_unmasked_pixels_exactly_and_fills_the_masked_ones(pipe, picture, scheduler):
    mask = mask_of()
    seen = []
    result = pipe(num_images=2, num_inference_steps=20, scheduler=scheduler, eta=1.0, seed=3, image=picture,
                  mask=mask, jump_length=5, jump_n_sample=2, callback=lambda *args: seen.append(args[1]))  # fmt: skip
    out, original = pixels(result), np.asarray(picture)
    assert (out[:, ~mask] == original[~mask]).all()
    assert (out[:, mask] != original[mask]).mean() > 0.9
    assert len(seen) == result.steps_done == result.num_inference_steps == 20 + 3 * 5  # jumps at j = 0, 5, 10
    assert result.settings["inpainting"] and result.settings["jump_n_sample"] == 2
    again = pipe(num_images=2, num_inference_steps=20, scheduler=scheduler, eta=1.0, seed=3, image=picture,
                 mask=mask, jump_length=5, jump_n_sample=2)  # fmt: skip
    assert np.array_equal(pixels(again), out)  # seeded: the same fill


def test_an_inpainting_stopped_early_still_keeps_the_unmasked_pixels(pipe, picture):
    mask = mask_of()
    result = pipe(num_images=1, num_inference_steps=10, scheduler="ddpm", seed=0, image=picture, mask=mask,
                  callback=lambda i, *rest: i == 2)  # fmt: skip
    assert result.stopped and (np.asarray(result.images[0])[~mask] == np.asarray(picture)[~mask]).all()


def test_a_mask_picture_is_white_where_to_fill_or_painted_on_a_transparent_layer():
    white = Image.new("L", (32, 32), 0)
    white.paste(255, (0, 0, 16, 32))
    assert (
        fit_mask(white, (32, 32), SIZE)[0, 0, :, :8].eq(1).all()
        and fit_mask(white, (32, 32), SIZE)[0, 0, :, 8:].eq(0).all()
    )
    layer = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    layer.paste((0, 0, 0, 255), (0, 0, 16, 32))  # black paint: its alpha marks it
    assert torch.equal(fit_mask(layer, (32, 32), SIZE), fit_mask(white, (32, 32), SIZE))
    dot = np.zeros((32, 32), bool)
    dot[5, 5] = True  # one pixel of 32 x 32 marks its 2 x 2 block's model pixel
    assert fit_mask(dot, (32, 32), SIZE).sum() == 1


@pytest.mark.parametrize("mask, message", [
    (np.zeros((SIZE, SIZE), bool), "mask is empty"),
    (np.ones((SIZE, SIZE), bool), "mask covers the whole picture"),
    (np.ones((SIZE, SIZE + 1), bool), "mask must be the picture's size"),
    (Image.new("L", (SIZE + 2, SIZE), 255), "mask must be the picture's size"),
    (np.ones((2, SIZE, SIZE), bool), "mask must be"),
    ("everything", "mask must be"),
])  # fmt: skip
def test_bad_masks_are_refused_by_name(pipe, picture, mask, message):
    with pytest.raises(ValueError, match=message):
        pipe(num_images=1, num_inference_steps=4, scheduler="ddpm", image=picture, mask=mask)


def test_a_mask_outside_the_square_the_model_sees_is_refused():
    mask = np.zeros((10, 40), bool)
    mask[:, :5] = True  # left of the centred 10 x 10 square
    with pytest.raises(ValueError, match="mask marks nothing inside"):
        fit_mask(mask, (40, 10), SIZE)


@pytest.mark.parametrize("kwargs, argument", [
    ({"image": "picture.png"}, "image"),
    ({"image": Image.new("RGB", (0, 4))}, "image"),
    ({"mask": mask_of()}, "mask needs an image"),
    ({"strength": 0.5}, "strength needs an image"),
    ({"image": Image.new("RGB", (8, 8)), "strength": 1.5}, "strength"),
    ({"image": Image.new("RGB", (8, 8)), "strength": "0.5"}, "strength"),
    ({"image": Image.new("RGB", (SIZE, SIZE)), "mask": mask_of(), "scheduler": "euler"}, "scheduler"),
    ({"image": Image.new("RGB", (SIZE, SIZE)), "mask": mask_of(), "jump_length": 0}, "jump_length"),
])  # fmt: skip
def test_bad_edit_arguments_are_refused_by_name(pipe, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        pipe(num_images=1, num_inference_steps=4, **kwargs)


def test_variation_strength_0_is_the_seed_and_1_the_variation_seed(pipe):
    kwargs = dict(num_images=2, num_inference_steps=5, scheduler="ddpm")  # stochastic: the per-step noise too
    base, other = pixels(pipe(seed=3, **kwargs)), pixels(pipe(seed=9, **kwargs))
    assert np.array_equal(pixels(pipe(seed=3, variation_seed=9, variation_strength=0.0, **kwargs)), base)
    assert np.array_equal(pixels(pipe(seed=3, variation_seed=9, variation_strength=1.0, **kwargs)), other)
    near = pipe(seed=3, variation_seed=9, variation_strength=0.1, num_images=2, num_inference_steps=5)
    assert near.settings["variation_seed"] == 9 and near.settings["variation_strength"] == 0.1
