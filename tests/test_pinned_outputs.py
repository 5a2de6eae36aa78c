"""Pinned outputs: seeded samples of both pipelines, every scheduler, stored once and compared on every run.

The redesign of the sampling code (one loop, guidance as a model wrapper) must not move a pixel. Tiny seeded models
with the shipped scheduler settings (copied here, so that retraining the shipped models does not move the pins)
are sampled for a few steps; the final x_0 (float32, before quantisation) and the PNG bytes are compared with
`tests/pinned/outputs.safetensors`.

The UNets run in float64 (x_t, the guidance and the schedulers stay float32, as always): a change of convolution
kernel (oneDNN's packed path or plain `F.conv2d`, another algorithm) then moves the UNet's output by about 1e-15,
which vanishes in the cast back to float32. In float32 the same change moves x_0 by up to 6e-6, and a
guided Euler run (sigma_max 141 here) amplifies that to 1e-3, enough to flip an 8-bit pixel: pins in float32 would
break on a legitimate kernel change, not only on a wrong formula.

Tolerance: x_0 within 1e-6 (absolute), the 8-bit pixels exactly; only the order of float operations may
legitimately change in the loop's own float32 arithmetic.

The pins hold for one CPU: they were regenerated on the current CI machine (an AVX-512 Xeon), where those made on
the first machine differed by up to 1.2e-6 (unconditional) and 3.8e-4 with 8-bit pixels flipped (text to image, DDIM
eta 1, where the first step's direction coefficient is the square root of a float32 rounding error in diffusers'
arithmetic, which ours keeps bit for bit).

Regenerate (only when an output is meant to change, or the CI machine changes, saying why in the commit):
    PINNED_REGENERATE=1 python -m pytest tests/test_pinned_outputs.py
"""

import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from txt2img_fixtures import tiny_text_encoder, tiny_unet

from txt2img.pipeline import TextToImagePipeline
from uncond.pipeline import UnconditionalPipeline
from uncond.unet import UNet, UNetConfig

PINNED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pinned", "outputs.safetensors")
REGENERATE = os.environ.get("PINNED_REGENERATE") == "1"
ATOL = 1e-6

# the shipped models' scheduler settings as of the redesign (weights/*/scheduler_config.json)
UNCOND_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "variance_type": "fixed_small",
    "clip_sample": True,
    "prediction_type": "epsilon",
    "clip_sample_range": 3.0,
    "timestep_spacing": "leading",
    "steps_offset": 0,
}
TXT2IMG_SCHEDULE = {**UNCOND_SCHEDULE, "prediction_type": "v_prediction", "clip_sample_range": 1.0}
TXT2IMG_SCHEDULE["timestep_spacing"] = "trailing"

# (scheduler, steps, eta)
SAMPLERS = [("ddpm", 6, 0.0), ("ddim", 5, 0.0), ("ddim", 5, 1.0), ("dpm++", 5, 0.0), ("euler", 5, 0.0)]


def uncond_pipe() -> UnconditionalPipeline:
    torch.manual_seed(0)
    config = UNetConfig(
        sample_size=16,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_resolutions=(8,),
        norm_num_groups=4,
        attention_head_dim=8,
    )
    return UnconditionalPipeline(UNet(config).double(), UNCOND_SCHEDULE)


def txt2img_pipe() -> TextToImagePipeline:
    return TextToImagePipeline(tiny_unet(seed=1).double(), tiny_text_encoder(seed=2), TXT2IMG_SCHEDULE)


def run(pipe, **kwargs) -> dict:
    """The final x_0 (float32, as the loop left it) and the 8-bit pixels of one seeded call."""
    final = {}

    def keep_last(step, timestep, x_t, pred_original_sample):
        final["x_0"] = x_t.detach().float().cpu().clone()

    result = pipe(seed=3, callback=keep_last, **kwargs)
    pixels = torch.from_numpy(np.stack([np.asarray(image) for image in result.images]).copy())
    return {"x_0": final["x_0"], "pixels": pixels}


def cases():
    for scheduler, steps, eta in SAMPLERS:
        settings = dict(num_inference_steps=steps, scheduler=scheduler, eta=eta)
        yield f"uncond-{scheduler}-eta{eta}", "uncond", dict(num_images=2, **settings)
        for guidance_scale in (1.0, 4.0):
            yield (
                f"txt2img-{scheduler}-eta{eta}-g{guidance_scale}",
                "txt2img",
                dict(prompt=["red", "blue cat"], num_images=1, guidance_scale=guidance_scale, **settings),
            )
    # a negative prompt and the guidance rescale of Lin et al. 2024, on one sampler
    yield (
        "txt2img-ddim-negative-rescale",
        "txt2img",
        dict(
            prompt="sun",
            negative_prompt="moon",
            num_images=2,
            guidance_scale=6.0,
            guidance_rescale=0.7,
            num_inference_steps=4,
            scheduler="ddim",
        ),
    )


CASES = list(cases())


@pytest.fixture(scope="module")
def pipes():
    return {"uncond": uncond_pipe(), "txt2img": txt2img_pipe()}


@pytest.fixture(scope="module")
def pinned(pipes):
    if REGENERATE:
        tensors = {}
        for name, kind, kwargs in CASES:
            for key, value in run(pipes[kind], **kwargs).items():
                tensors[f"{name}/{key}"] = value
        os.makedirs(os.path.dirname(PINNED), exist_ok=True)
        save_file(tensors, PINNED)
    return load_file(PINNED)


@pytest.mark.parametrize("name, kind, kwargs", CASES, ids=[c[0] for c in CASES])
def test_seeded_output_is_the_pinned_one(pipes, pinned, name, kind, kwargs):
    out = run(pipes[kind], **kwargs)
    torch.testing.assert_close(out["x_0"], pinned[f"{name}/x_0"], atol=ATOL, rtol=0)
    assert torch.equal(out["pixels"], pinned[f"{name}/pixels"])


def test_the_pins_are_not_degenerate(pinned):
    # the pins would protect nothing if every case gave the same picture, or a constant one
    finals = [pinned[f"{name}/x_0"] for name, _, _ in CASES]
    assert all(x.std() > 0.05 for x in finals)
    assert len({tuple(x.flatten()[:8].tolist()) for x in finals}) == len(finals)
