"""Pinned outputs: seeded samples of both pipelines, every scheduler, stored once and compared on every run.

The redesign of the sampling code (one loop, guidance as a model wrapper) must not move a pixel. Tiny seeded models
with the shipped scheduler settings (copied here, so that retraining the shipped models does not move the pins)
are sampled for a few steps; the final x_0 and the PNG bytes are compared with `tests/pinned/outputs.safetensors`.

The pins hold on any x86 CPU because the loops run in float64 end to end: the weights drawn in float64
(`default_dtype`), the UNets and the text tower in float64, and a float64 UNet gets a float64 loop (x_T and the
per-step noise drawn in float64, the guidance, our schedulers' steps; `uncond.sampling.sample_dtype`). Our schedulers'
coefficients stay the float32 numbers diffusers computes (exact in float64: elementwise, correctly rounded, the
same on every CPU); diffusers' Euler and DPM-Solver++ round x_t to float32 inside each step, but from float64 inputs
that agree to 1e-14. The app still samples in float32 (fp16 UNets on a GPU): nothing of its path changed.

Why not float32 with a tolerance: in float32 the same pins moved by up to 1.1e-3 between ATEN_CPU_CAPABILITY=default
and avx2 on one AMD EPYC (guided Euler, sigma_max 141; 2 pixels flipped) and by 3.8e-4 between an Intel Xeon and the
EPYC (guided DDIM eta 1, 5 pixels): float32 randn, exp, sin and cos are vectorised per CPU (their last bit differs)
and BLAS picks kernels by CPU model; a first step at alpha-bar 2.4e-9 divides by its square root (x 2e4). A tolerance
wide enough for that would let a wrong formula through; the chaotic DDIM eta-1 case is pinned in float64, where it
is not chaotic (it moves by 1e-14 like the others).

Measured (max |x_0 difference| over the 16 cases, 8-bit pixels flipped): between ATEN_CPU_CAPABILITY=default, avx2,
avx512, ONEDNN_MAX_CPU_ISA=AVX2 and no setting on an AMD EPYC (AVX-512): at most 1.3e-14, no pixel. Tolerance: x_0
within ATOL = 1e-10 (7,500 times that), the pixels exactly. A 1% formula change fails them (checked by hand, not
committed): the cosine schedule's offset 0.008 -> 0.00808 fails 10 of the 16 cases (x_0 moves 2.0e-5 to 7.7e-4,
16 pixels; Euler and DPM-Solver++ take diffusers' own tables), DDIM's sigma^2 x 1.01 fails the 3 eta-1 cases
(1.3e-2 to 3.0e-2, 577 pixels).

Regenerate (only when an output is meant to change, saying why in the commit):
    PINNED_REGENERATE=1 python -m pytest tests/test_pinned_outputs.py
"""

import os

import numpy as np
import pytest
import torch
from default_dtype import default_dtype
from safetensors.torch import load_file, save_file
from txt2img_fixtures import tiny_text_encoder, tiny_unet

from txt2img.clip import TextEncoder
from txt2img.pipeline import TextToImagePipeline
from uncond.pipeline import UnconditionalPipeline
from uncond.unet import UNet, UNetConfig

PINNED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pinned", "outputs.safetensors")
REGENERATE = os.environ.get("PINNED_REGENERATE") == "1"
ATOL = 1e-10  # CPU kernels move x_0 by <= 1.3e-14 in float64 (module docstring)

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
    with default_dtype(torch.float64):  # weights drawn in float64: float32's draws differ between CPU kernels
        return UnconditionalPipeline(tiny_uncond_unet(), UNCOND_SCHEDULE)


def tiny_uncond_unet() -> UNet:
    torch.manual_seed(0)
    config = UNetConfig(
        sample_size=16,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_resolutions=(8,),
        norm_num_groups=4,
        attention_head_dim=8,
    )
    return UNet(config)


def txt2img_pipe() -> TextToImagePipeline:
    with default_dtype(torch.float64):
        unet, encoder = tiny_unet(seed=1), tiny_text_encoder(seed=2)
    encoder = TextEncoder(encoder.tokenizer, encoder.text_model, dtype=torch.float64)
    return TextToImagePipeline(unet, encoder, TXT2IMG_SCHEDULE)


def run(pipe, **kwargs) -> dict:
    """The final x_0 (float64, as the loop left it) and the 8-bit pixels of one seeded call."""
    final = {}

    def keep_last(step, timestep, x_t, pred_original_sample):
        final["x_0"] = x_t.detach().cpu().clone()

    if isinstance(pipe, TextToImagePipeline):  # the prompts as typed: the pins hold the model, not the colour default
        kwargs = {"add_style": False, **kwargs}
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


def test_the_pinned_loops_run_in_float64(pipes, pinned):
    # float64 end to end is what makes the pins CPU-proof (module docstring): a float32 weight or loop would undo it
    assert pipes["uncond"].dtype == pipes["txt2img"].dtype == torch.float64
    assert next(pipes["txt2img"].text_encoder.text_model.parameters()).dtype == torch.float64
    assert all(pinned[f"{name}/x_0"].dtype == torch.float64 for name, _, _ in CASES)
