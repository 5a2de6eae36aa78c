"""Sampling: image size and mode, seeds, early stop, bad arguments, the sample CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from uncond.pipeline import UnconditionalPipeline, sample_images
from uncond.sample import main as sample_main
from uncond.sampling import make_scheduler
from uncond.scheduler import DDPMScheduler
from uncond.unet import UNet, UNetConfig


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random UNet saved with a cosine schedule, as training would leave it."""
    directory = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    unet = UNet(
        UNetConfig(
            sample_size=16,
            block_out_channels=(8, 16),
            layers_per_block=1,
            attention_resolutions=(8,),
            norm_num_groups=4,
            attention_head_dim=8,
        )
    )
    unet.save_pretrained(str(directory))
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    (directory / "scheduler_config.json").write_text(json.dumps(dict(scheduler.config)))
    return directory


@pytest.fixture(scope="module")
def pipe(model_dir):
    return UnconditionalPipeline.from_pretrained(str(model_dir), device="cpu")


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_images_have_the_model_size_and_mode(pipe, scheduler):
    result = pipe(num_images=3, num_inference_steps=4, scheduler=scheduler, seed=1)
    assert len(result.images) == 3
    assert all(
        isinstance(image, Image.Image) and image.size == (16, 16) and image.mode == "RGB" for image in result.images
    )
    assert result.steps_done == 4 and not result.stopped
    assert result.settings["scheduler"] == scheduler and result.settings["seed"] == 1 and result.settings["steps"] == 4


def test_schedule_comes_from_the_model_folder(pipe):
    assert pipe.scheduler_config["beta_schedule"] == "squaredcos_cap_v2"
    assert make_scheduler("ddim", pipe.scheduler_config).config.beta_schedule == "squaredcos_cap_v2"


@pytest.mark.parametrize("scheduler, eta", [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
def test_same_seed_same_pixels_other_seed_other_pixels(pipe, scheduler, eta):
    def pixels(seed):
        images = pipe(num_images=2, num_inference_steps=5, scheduler=scheduler, eta=eta, seed=seed).images
        return [torch.from_numpy(np.asarray(image).copy()) for image in images]

    first, again, other = pixels(7), pixels(7), pixels(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not any(torch.equal(a, b) for a, b in zip(first, other))
    # the two images of one call differ from each other too
    assert not torch.equal(first[0], first[1])


def test_callback_sees_every_step_and_can_stop(pipe):
    seen = []

    def callback(step, timestep, x_t, pred_original_sample):
        seen.append((step, timestep, tuple(x_t.shape), tuple(pred_original_sample.shape)))
        return step == 2  # stop after the third step

    result = pipe(num_images=2, num_inference_steps=10, scheduler="ddim", seed=0, callback=callback)
    assert [s[0] for s in seen] == [0, 1, 2]
    assert seen[0][1] > seen[1][1] > seen[2][1]  # timesteps count down
    assert seen[0][2] == seen[0][3] == (2, 3, 16, 16)
    assert result.stopped and result.steps_done == 3 and len(result.images) == 2


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(num_inference_steps=1001), "num_inference_steps"),
        (dict(num_inference_steps=2.5), "num_inference_steps"),
        (dict(num_images=0), "num_images"),
        (dict(seed=-1), "seed"),
        (dict(seed=2**63), "seed"),
        (dict(eta=1.5), "eta"),
        (dict(scheduler="euler-ish"), "scheduler"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(pipe, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        pipe(**kwargs)


def test_sample_images_restores_training_mode(model_dir):
    unet = UNet.from_pretrained(str(model_dir)).train()
    images = sample_images(unet, {"beta_schedule": "squaredcos_cap_v2"}, 2, 3, "ddim", seed=0)
    assert len(images) == 2 and unet.training


def test_sample_cli_writes_pngs_with_settings_and_a_grid(model_dir, tmp_path):
    out = tmp_path / "samples"
    sample_main(
        [
            "--model",
            str(model_dir),
            "--num-images",
            "3",
            "--steps",
            "3",
            "--scheduler",
            "ddim",
            "--seed",
            "5",
            "--out",
            str(out),
        ]
    )
    files = sorted(p.name for p in out.iterdir())
    assert files == ["000.png", "001.png", "002.png", "grid.png"]
    image = Image.open(out / "001.png")
    assert (
        image.text["seed"] == "5"
        and image.text["scheduler"] == "ddim"
        and image.text["steps"] == "3"
        and image.text["index"] == "1"
    )
    assert Image.open(out / "grid.png").size == (32, 32)  # 2 x 2 tiles of 16 px


@pytest.mark.parametrize("scheduler", ["dpm++", "euler"])
def test_diffusers_samplers_run_in_our_loop(pipe, scheduler):
    seen = []
    result = pipe(
        num_images=2,
        num_inference_steps=6,
        scheduler=scheduler,
        seed=3,
        callback=lambda step, t, x_t, x_0: seen.append(x_0.shape) and None,
    )
    again = pipe(num_images=2, num_inference_steps=6, scheduler=scheduler, seed=3)
    assert len(result.images) == 2 and result.images[0].size == (16, 16) and len(seen) == 6
    assert result.images[0].tobytes() == again.images[0].tobytes()
    assert np.asarray(result.images[0]).std() > 0  # not a blank image


def test_unknown_scheduler_lists_the_choices(pipe):
    with pytest.raises(ValueError, match="dpm\\+\\+"):
        pipe(scheduler="plms")


def test_settings_round_trip_through_png_text_chunks(tmp_path):
    from uncond.settings import read_settings, save_with_settings

    path = str(tmp_path / "x.png")
    save_with_settings(
        Image.new("RGB", (8, 8)),
        path,
        {"scheduler": "ddim", "steps": 50, "eta": 0.5, "seed": 2**62, "prompt": "red heart", "other": "x"},
    )
    assert read_settings(path) == {"scheduler": "ddim", "steps": 50, "eta": 0.5, "seed": 2**62, "prompt": "red heart"}


def test_settings_reader_refuses_bad_files(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    from uncond.settings import read_settings, save_with_settings

    good = tmp_path / "good.png"
    save_with_settings(Image.new("RGB", (8, 8)), str(good), {"seed": 1, "steps": 5})
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    (tmp_path / "text.png").write_bytes(b"hello, not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    info = PngInfo()
    info.add_text("seed", "not a number")
    Image.new("RGB", (8, 8)).save(tmp_path / "badtype.png", pnginfo=info)
    info = PngInfo()
    info.add_text("prompt", "x" * 100_000)
    Image.new("RGB", (8, 8)).save(tmp_path / "huge.png", pnginfo=info)
    info = PngInfo()
    info.add_text("prompt", "y" * 5_000_000, zip=True)  # a small file that decompresses past Pillow's cap
    Image.new("RGB", (8, 8)).save(tmp_path / "bomb.png", pnginfo=info)
    for name, message in [
        ("truncated.png", "PNG"),
        ("garbage.png", "PNG"),
        ("text.png", "PNG"),
        ("photo.jpg", "not a PNG"),
        ("plain.png", "no settings"),
        ("badtype.png", "seed"),
        ("huge.png", "prompt"),
        ("bomb.png", "PNG|prompt"),
    ]:
        with pytest.raises(ValueError, match=message):
            read_settings(str(tmp_path / name))


def test_half_precision_unet_keeps_x_t_and_the_scheduler_in_float32(model_dir):
    full = UnconditionalPipeline.from_pretrained(str(model_dir), device="cpu")
    half = UnconditionalPipeline.from_pretrained(str(model_dir), device="cpu", dtype=torch.bfloat16)
    unet_inputs, loop_dtypes = [], []
    hook = half.unet.register_forward_pre_hook(lambda module, args: unet_inputs.append(args[0].dtype))
    try:
        result = half(
            num_images=2,
            num_inference_steps=5,
            scheduler="ddpm",
            seed=0,
            callback=lambda step, t, x_t, x_0: loop_dtypes.append((x_t.dtype, x_0.dtype)) and None,
        )
    finally:
        hook.remove()
    assert unet_inputs == [torch.bfloat16] * 5 and loop_dtypes == [(torch.float32, torch.float32)] * 5
    assert result.settings["dtype"] == "bfloat16"
    # the same noise (drawn in float32 either way), so the images differ only by the UNet's bf16 rounding
    reference = full(num_images=2, num_inference_steps=5, scheduler="ddpm", seed=0)
    difference = np.abs(
        np.stack([np.asarray(i, dtype=np.int16) for i in result.images])
        - np.stack([np.asarray(i, dtype=np.int16) for i in reference.images])
    )
    assert difference.mean() < 3


def test_a_model_folder_without_its_noise_schedule_is_refused(model_dir, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / "scheduler_config.json").unlink()
    with pytest.raises(ValueError, match="has no scheduler_config.json"):
        UnconditionalPipeline.from_pretrained(str(bare), device="cpu")


def test_a_folder_of_another_model_class_is_refused_by_name(tmp_path):
    from txt2img_fixtures import tiny_unet

    tiny_unet().save_pretrained(str(tmp_path))
    (tmp_path / "scheduler_config.json").write_text(json.dumps({"beta_schedule": "squaredcos_cap_v2"}))
    with pytest.raises(ValueError, match="holds a TextUNet, not a UNet"):
        UnconditionalPipeline.from_pretrained(str(tmp_path), device="cpu")


def test_stream_yields_each_step_then_the_output(pipe):
    from uncond.sampling import Step

    events = list(pipe.stream(num_images=1, num_inference_steps=3, scheduler="ddim", seed=2))
    assert [e.index for e in events[:-1]] == [0, 1, 2] and all(isinstance(e, Step) for e in events[:-1])
    assert events[-1].steps_done == 3 and events[-1].settings["seed"] == 2
    again = pipe(num_images=1, num_inference_steps=3, scheduler="ddim", seed=2)
    assert np.array_equal(np.asarray(events[-1].images[0]), np.asarray(again.images[0]))
