"""The cascade: a base model's output through the upsampler, in the stream, the app's model functions and both
sampling commands; Upscale off gives exactly the base model's results."""

import json
import os

import numpy as np
import torch
from PIL import Image
from test_upscale_pipeline import SCHEDULE, tiny_pipe
from txt2img_fixtures import tiny_text_encoder, tiny_unet

from txt2img.pipeline import TextToImagePipeline
from uncond.pipeline import SampleOutput, UnconditionalPipeline
from uncond.sampling import Step
from uncond.unet import UNet, UNetConfig
from uncond.upscale_pipeline import cascade_stream, upscale_result
from webapp.models import Models, Prompt, Sampling, Upscaling

SMALL = dict(block_out_channels=(8, 16), attention_resolutions=(), attention_head_dim=8, norm_num_groups=4)


def base_pipe() -> UnconditionalPipeline:
    torch.manual_seed(0)
    config = UNetConfig(sample_size=8, **SMALL)
    return UnconditionalPipeline(UNet(config), SCHEDULE, name="base")


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image) for image in images])


def test_the_cascade_streams_both_stages_and_ends_with_the_upsampled_base_output():
    base, up = base_pipe(), tiny_pipe()
    events = list(cascade_stream(base.stream(num_images=2, num_inference_steps=3, seed=4), up, num_inference_steps=2))
    steps, result = events[:-1], events[-1]
    assert [s.x_t.shape[-1] for s in steps if isinstance(s, Step)] == [8, 8, 8, 32, 32]
    assert isinstance(result, SampleOutput) and [i.size for i in result.images] == [(32, 32)] * 2
    assert result.seed == 4 and result.settings["base_size"] == 8 and result.settings["size"] == 32
    assert result.settings["model"] == "base" and result.settings["upscale_steps"] == 2
    alone = base(num_images=2, num_inference_steps=3, seed=4)  # the upsampler's input is the base output
    again = up(alone.images, num_inference_steps=2, seed=4)
    assert np.array_equal(pixels(result.images), pixels(again.images))
    assert np.array_equal(pixels(upscale_result(alone, up, num_inference_steps=2).images), pixels(again.images))


def test_a_stopped_base_run_is_not_upsampled():
    base = base_pipe()
    stream = base.stream(num_images=1, num_inference_steps=3, seed=0, callback=lambda i, *_: i == 0)
    *_, result = cascade_stream(stream, tiny_pipe(), num_inference_steps=2)
    assert result.stopped and result.images[0].size == (8, 8)


def test_upscale_off_gives_exactly_the_base_results_and_on_gives_128_px_ones():
    txt2img = TextToImagePipeline(tiny_unet(), tiny_text_encoder(), SCHEDULE)
    models = Models({"base": base_pipe()}, txt2img, tiny_pipe())
    sampling = Sampling("ddim", 3, 0.0, 2, 1)
    prompt = Prompt("red heart", "", 2.0)
    for run in (
        lambda u: models.unconditional("base", sampling, upscaling=u),
        lambda u: models.text_to_image(prompt, sampling, upscaling=u),
    ):
        *_, plain = run(None)
        *_, off = run(Upscaling(enabled=False))
        *_, on = run(Upscaling(steps=2, noise_level=10))
        assert np.array_equal(pixels(plain.images), pixels(off.images)) and plain.images[0].size == (8, 8)
        assert on.images[0].size == (32, 32) and on.settings["noise_level"] == 10
    assert len(models.noised_low_res(plain.images, Upscaling(noise_level=10), seed=1)) == 2
    assert models.upscales(8) and not models.upscales(32)  # a 32 px model is not upsampled by an 8 -> 32 stage
    other = Models(
        {"base": base_pipe(), "big": UnconditionalPipeline(UNet(UNetConfig(sample_size=16, **SMALL)), SCHEDULE)},
        txt2img,
        tiny_pipe(),
    )
    *_, big = other.unconditional("big", sampling, upscaling=Upscaling(steps=2))
    assert big.images[0].size == (16, 16)
    assert Models({"base": base_pipe()}, txt2img).noised_low_res(plain.images, Upscaling(), 1) == []


def test_both_sampling_commands_upscale(tmp_path):
    from txt2img.sample import main as txt2img_main
    from uncond.sample import main as uncond_main

    up_dir, base_dir, text_dir = tmp_path / "up", tmp_path / "base", tmp_path / "text"
    tiny_pipe().save_pretrained(str(up_dir))
    base_pipe().unet.save_pretrained(str(base_dir))
    (base_dir / "scheduler_config.json").write_text(json.dumps(SCHEDULE))
    TextToImagePipeline(tiny_unet(), tiny_text_encoder(), SCHEDULE).save_pretrained(str(text_dir))
    common = ["--num-images", "2", "--steps", "2", "--device", "cpu", "--upscale", str(up_dir), "--upscale-steps", "2"]
    uncond_main(["--model", str(base_dir), "--out", str(tmp_path / "a"), *common])
    # one candidate: the tiny folder's CLIP has no image tower to rank with (best of N: tests/test_rerank.py)
    txt2img_main(
        ["--model", str(text_dir), "--prompt", "cat", "--out", str(tmp_path / "b"), "--num-candidates", "1", *common]
    )
    for out in ("a", "b"):
        with Image.open(os.path.join(tmp_path, out, "000.png")) as image:
            assert image.size == (32, 32) and image.text["noise_level"] == "20" and image.text["base_size"] == "8"


def test_both_sample_commands_upscale_with_the_apps_default_steps():
    import argparse

    from uncond.sample import add_upscale_arguments
    from uncond.upscale_pipeline import DEFAULT_STEPS
    from webapp.models import Upscaling

    parser = argparse.ArgumentParser()
    add_upscale_arguments(parser)  # txt2img.sample adds the same arguments
    args = parser.parse_args(["--upscale"])
    assert args.upscale_steps == DEFAULT_STEPS == Upscaling().steps == 15
