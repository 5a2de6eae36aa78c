"""UpscalePipeline: save/load round trip, crops and whole pictures, seeds, the stream of steps, bad arguments."""

import numpy as np
import pytest
import torch
from PIL import Image

from uncond.sampling import Step
from uncond.unet import UNet, UNetConfig
from uncond.upscale_pipeline import UpscaleConfig, UpscalePipeline

SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "timestep_spacing": "trailing",
}


def tiny_pipe(seed: int = 0, sample_size: int = 32) -> UpscalePipeline:
    """A random 4x upsampler with channels 8-16, to `sample_size` px (the default: 8 -> 32)."""
    torch.manual_seed(seed)
    config = UNetConfig(
        sample_size=sample_size,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_resolutions=(),
        mid_block_attention=False,
        attention_head_dim=None,
        norm_num_groups=4,
        low_res_channels=3,
        noise_level_embedding=True,
    )
    return UpscalePipeline(UNet(config), SCHEDULE, UpscaleConfig(scale_factor=4, max_noise_level=200, noise_level=20))


def low_res(n: int = 2, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def pixels(result) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1) for image in result.images])


def test_save_load_round_trip_gives_the_same_pictures(tmp_path):
    pipe = tiny_pipe()
    pipe.save_pretrained(str(tmp_path))
    loaded = UpscalePipeline.from_pretrained(str(tmp_path), device="cpu")
    assert loaded.config == pipe.config and loaded.scheduler_config == pipe.scheduler_config
    a, b = pipe(low_res(), num_inference_steps=3, seed=1), loaded(low_res(), num_inference_steps=3, seed=1)
    assert torch.equal(pixels(a), pixels(b))
    assert a.settings["noise_level"] == 20  # the folder's default level


def test_crops_and_whole_pictures_agree_in_shape_and_range():
    pipe = tiny_pipe()
    whole = pipe(low_res(2, 8), num_inference_steps=3, seed=0)
    crop = pipe(low_res(2, 4), num_inference_steps=3, seed=0)
    assert [image.size for image in whole.images] == [(32, 32)] * 2 and whole.settings["size"] == 32
    assert [image.size for image in crop.images] == [(16, 16)] * 2
    for result in (whole, crop):
        values = pixels(result).float()
        assert values.min() >= 0 and values.max() <= 255 and values.std() > 1  # pictures, not a constant


def test_pil_images_and_tensors_give_the_same_pictures():
    pipe = tiny_pipe()
    tensor = low_res(1)
    image = Image.fromarray(((tensor[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    quantised = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    a = pipe([image], num_inference_steps=2, seed=4)
    b = pipe(quantised, num_inference_steps=2, seed=4)
    assert torch.equal(pixels(a), pixels(b))


def test_the_seed_decides_the_pictures_and_the_stream_yields_the_loops_steps():
    pipe = tiny_pipe()
    events = list(pipe.stream(low_res(), num_inference_steps=3, seed=5))
    steps, result = events[:-1], events[-1]
    assert [type(s) for s in steps] == [Step] * 3 and steps[-1].x_t.shape == (2, 3, 32, 32)
    assert torch.equal(pixels(result), pixels(pipe(low_res(), num_inference_steps=3, seed=5)))
    assert not torch.equal(pixels(result), pixels(pipe(low_res(), num_inference_steps=3, seed=6)))
    stopped = pipe(low_res(), num_inference_steps=3, seed=5, callback=lambda i, *_: i == 0)
    assert stopped.steps_done == 1 and stopped.stopped


def test_the_noise_level_changes_the_pictures_and_noised_low_res_shows_the_input():
    pipe = tiny_pipe()
    a = pipe(low_res(), num_inference_steps=2, noise_level=0, seed=0)
    b = pipe(low_res(), num_inference_steps=2, noise_level=200, seed=0)
    assert not torch.equal(pixels(a), pixels(b))
    clean, noisy = pipe.noised_low_res(low_res(), 0), pipe.noised_low_res(low_res(), 200)
    assert clean[0].size == (8, 8)
    difference = [np.asarray(x, dtype=np.float32) - np.asarray(y, dtype=np.float32) for x, y in zip(noisy, clean)]
    assert np.abs(np.stack(difference)).mean() > 5


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(images="a picture"), "images"),
        (dict(images=torch.zeros(1, 3, 8, 6)), "images"),
        (dict(images=torch.full((1, 3, 8, 8), 2.0)), "images"),
        (dict(images=[Image.new("RGB", (8, 8)), Image.new("RGB", (4, 4))]), "images"),
        (dict(images=torch.zeros(1, 3, 300, 300)), "images of 300 px"),
        (dict(noise_level=201), "noise_level"),
        (dict(noise_level=-1), "noise_level"),
        (dict(noise_level=2.5), "noise_level"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(seed=-1), "seed"),
        (dict(scheduler="nope"), "scheduler"),
        (dict(eta=2.0), "eta"),
        (dict(use_clipped_model_output="yes"), "use_clipped_model_output"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, argument):
    arguments = {"images": low_res(1), "num_inference_steps": 2, **kwargs}
    with pytest.raises(ValueError, match=argument):
        tiny_pipe()(**arguments)


def test_a_folder_without_a_stage_is_refused(tmp_path):
    UNet(
        UNetConfig(sample_size=16, block_out_channels=(8, 16), attention_head_dim=8, norm_num_groups=4)
    ).save_pretrained(str(tmp_path))
    (tmp_path / "scheduler_config.json").write_text("{}")
    with pytest.raises(ValueError, match="not an upsampler"):
        UpscalePipeline.from_pretrained(str(tmp_path), device="cpu")


def test_eps_from_the_clipped_x0_keeps_a_white_background_white():
    """A network whose x_0 estimate overshoots white (1.2, as estimates at the clipping edge do half the time): with
    eps from the unclipped estimate the excess comes back as a darker x_{t-1}, step after step; from the clipped
    one the picture ends on white."""
    from uncond.sampling import make_scheduler, sample

    config = {**SCHEDULE, "prediction_type": "sample"}  # the network's output is its x_0 estimate
    ends = {}
    for clipped in (False, True):
        scheduler = make_scheduler("ddim", config)
        scheduler.set_timesteps(15)
        x_t = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        ends[clipped], _ = sample(
            lambda x, t: torch.full_like(x, 1.2), scheduler, x_t, use_clipped_model_output=clipped
        )
    assert (ends[True] - 1).abs().mean() < 0.01  # white, up to the last step's tiny share of eps
    assert ends[False].mean() < 0.98  # about 4 levels darker


def test_the_pipeline_takes_eps_from_the_clipped_x0_by_default_and_records_it():
    pipe = tiny_pipe()
    default, unclipped = (
        pipe(low_res(1), num_inference_steps=3),
        pipe(low_res(1), num_inference_steps=3, use_clipped_model_output=False),
    )
    assert default.settings["upscale_clipped_eps"] is True and unclipped.settings["upscale_clipped_eps"] is False
