"""Training the super-resolution stage: aligned crops, the augmentation applied and its level given to the network,
batches that are functions of (seed, step), exact resume, the folder it writes, and its config's checks."""

import json
import os

import pytest
import torch
from upscale_fixtures import TinyData, pictures, tiny_train_config

from uncond.train_upscale import UPSCALE_UNET, UpscaleTask, UpscaleTrainConfig, random_crops, train_upscale
from uncond.upscale import downsample, upsample
from uncond.upscale_pipeline import UpscalePipeline


def task(**overrides) -> UpscaleTask:
    return UpscaleTask(TinyData(pictures(6)), tiny_train_config(**overrides), log=lambda *_: None)


def test_crops_of_both_resolutions_cover_the_same_pixels():
    high = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    low = high[:, :, ::4, ::4]  # pixel (y, x) of low is pixel (4y, 4x) of high
    crops, low_crops = random_crops(high, low, 16, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (2, 3, 16, 16) and low_crops.shape == (2, 3, 4, 4)
    torch.testing.assert_close(crops[:, :, ::4, ::4], low_crops)


def test_a_batch_is_crops_with_their_noised_low_res_crops():
    t = task(batch_size=6)
    batch = t.batch(0, slice(None), "cpu")
    assert batch["x_0"].shape == (6, 3, 16, 16) and batch["low_res"].shape == (6, 3, 4, 4)
    assert batch["x_0"].min() >= -1 and batch["x_0"].max() <= 1
    levels = batch["noise_level"]
    assert levels.dtype == torch.int64 and levels.min() >= 0 and levels.max() <= 100 and len(set(levels.tolist())) > 1
    # the conditioning is the low-res crop noised to its level, then upsampled: undo the level's scaling
    a = t.scheduler.alphas_cumprod[levels][:, None, None, None]
    noise = (batch["low_res_cond"] - upsample(batch["low_res"], 16) * a.sqrt()) / (1 - a).sqrt()
    assert noise.std() > 0.3  # Gaussian noise was added (bicubic smooths it below 1)
    clean = (batch["low_res_cond"] - upsample(batch["low_res"], 16)).abs().flatten(1).mean(1)
    order = levels.argsort()
    assert clean[order[-1]] > clean[order[0]]  # more noise at the higher level
    # the low-res crop is the Lanczos-shrunk picture's crop: its mean colour is the high-res crop's
    torch.testing.assert_close(batch["low_res"].mean((2, 3)), batch["x_0"].mean((2, 3)), atol=0.06, rtol=0)


def test_the_level_and_the_conditioning_reach_the_network():
    t = task(batch_size=4)
    batch = t.batch(3, slice(None), "cpu")
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, sample, timestep, noise_level=None):
            seen.update(sample=sample, timestep=timestep, noise_level=noise_level)
            return sample[:, :3]

    t.loss(Spy(), batch)
    assert seen["sample"].shape == (4, 6, 16, 16)
    torch.testing.assert_close(seen["sample"][:, 3:], batch["low_res_cond"])
    torch.testing.assert_close(seen["sample"][:, :3], batch["x_t"])
    assert torch.equal(seen["noise_level"], batch["noise_level"])
    assert torch.equal(seen["timestep"], batch["timesteps"])


def test_batches_are_functions_of_seed_and_step_and_split_across_processes():
    a, b = task(batch_size=4).batch(5, slice(None), "cpu"), task(batch_size=4).batch(5, slice(None), "cpu")
    for key in ("x_t", "low_res_cond", "noise_level", "target"):
        assert torch.equal(a[key], b[key]), key
    half = task(batch_size=4).batch(5, slice(2, 4), "cpu")
    for key in ("x_t", "low_res_cond", "noise_level"):
        assert torch.equal(half[key], a[key][2:4]), key
    assert not torch.equal(task(batch_size=4).batch(6, slice(None), "cpu")["x_t"], a["x_t"])


def test_a_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    config = tiny_train_config(max_steps=4, checkpoint_every=2, log_every=1, sample_every=1000, batch_size=4)
    data = TinyData(pictures())
    whole = train_upscale("", str(tmp_path / "whole"), config, dataset=data, log=lambda *_: None)
    half = tiny_train_config(max_steps=2, checkpoint_every=2, log_every=1, sample_every=1000, batch_size=4)
    train_upscale("", str(tmp_path / "parts"), half, dataset=data, log=lambda *_: None)
    parts = train_upscale("", str(tmp_path / "parts"), config, resume=True, dataset=data, log=lambda *_: None)
    a, b = UpscalePipeline.from_pretrained(whole, device="cpu"), UpscalePipeline.from_pretrained(parts, device="cpu")
    for (name, x), (_, y) in zip(a.unet.state_dict().items(), b.unet.state_dict().items()):
        assert torch.equal(x, y), name


def test_the_run_folder_is_a_pipeline_folder_that_samples_whole_pictures(tmp_path):
    config = tiny_train_config(max_steps=2, batch_size=2, sample_every=2)
    out = train_upscale("", str(tmp_path), config, dataset=TinyData(pictures()), log=lambda *_: None)
    for name in ("config.json", "model.safetensors", "scheduler_config.json", "upscale_config.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert json.load(open(os.path.join(out, "upscale_config.json"))) == {
        "scale_factor": 4,
        "max_noise_level": 100,
        "noise_level": 0,
    }
    assert json.load(open(os.path.join(out, "config.json")))["sample_size"] == 32  # the whole picture, not the crop
    assert os.path.isfile(os.path.join(out, "samples", "step_0000002.png"))
    evals = [json.loads(line)["eval"] for line in open(os.path.join(out, "log.jsonl")) if '"eval"' in line]
    assert evals and {"psnr", "psnr_bicubic"} <= set(evals[-1])
    pipe = UpscalePipeline.from_pretrained(out, device="cpu")
    assert pipe(downsample(pictures(1), 8).float() / 127.5 - 1, num_inference_steps=2).images[0].size == (32, 32)


def test_the_default_stage_is_fully_convolutional_and_sized_for_the_cpu():
    config = UpscaleTrainConfig().unet_config()
    assert config.attention_resolutions == () and not config.mid_block_attention
    assert config.block_out_channels == tuple(UPSCALE_UNET["block_out_channels"])
    assert (config.in_channels, config.low_res_channels, config.sample_size) == (3, 3, 128)


@pytest.mark.parametrize(
    "overrides, argument",
    [
        (dict(scale_factor=1), "scale_factor"),
        (dict(crop_size=18), "crop_size"),
        (dict(crop_size=64), "crop_size"),  # larger than image_size 32
        (dict(crop_size=12, unet=dict(UPSCALE_UNET)), "crop_size"),  # four levels need multiples of 8
        (dict(max_noise_level=1000), "max_noise_level"),
        (dict(sample_noise_level=101), "sample_noise_level"),
    ],
)
def test_bad_config_raises(overrides, argument):
    with pytest.raises(ValueError, match=argument):
        tiny_train_config(**overrides)


def test_a_data_set_of_another_size_is_refused():
    from uncond.train_upscale import make_upscale_task

    with pytest.raises(ValueError, match="image_size"):
        make_upscale_task("", TinyData(pictures(2, 16)))(tiny_train_config())


def test_the_cpu_config_trains_the_default_stage():
    from uncond.train_config import load_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config(os.path.join(root, "configs", "upscale_cpu128.json"), UpscaleTrainConfig)
    assert config.unet_config() == UpscaleTrainConfig().unet_config()
    assert (config.image_size, config.crop_size, config.batch_size, config.scale_factor) == (128, 64, 32, 4)
