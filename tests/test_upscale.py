"""The super-resolution stage: UNet fields, conditioning and augmentation, the model function, and what training
a tiny upsampler gives (it beats bicubic; its low-res input really conditions it)."""

import json
import os

import pytest
import torch
from upscale_fixtures import pictures, to_unit, trained_pipeline

from uncond.scheduler import DDPMScheduler
from uncond.unet import UNet, UNetConfig
from uncond.upscale import augment, concat_inputs, conditioning, downsample, low_res_model_fn, psnr, ssim, upsample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stage_config(**overrides) -> UNetConfig:
    values = dict(
        sample_size=16,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_resolutions=(),
        mid_block_attention=False,
        attention_head_dim=None,
        norm_num_groups=4,
        low_res_channels=3,
        noise_level_embedding=True,
    )
    values.update(overrides)
    return UNetConfig(**values)


def test_the_shipped_configs_build_the_unet_they_built_before():
    """Configs saved before these fields existed load with no extra input channels and no noise-level embedding."""
    with open(os.path.join(ROOT, "weights", "uncond", "config.json")) as f:
        config = UNetConfig.from_dict(json.load(f))
    assert config.low_res_channels == 0 and config.noise_level_embedding is False
    unet = UNet(config)
    assert unet.conv_in.in_channels == 3 and unet.noise_level_embedding is None
    assert not any("noise_level" in key for key in unet.state_dict())


def test_a_stage_takes_x_t_and_the_low_res_image_and_embeds_the_level():
    torch.manual_seed(0)
    unet = UNet(stage_config()).eval()
    assert unet.conv_in.in_channels == 6
    x = torch.randn(2, 6, 16, 16)
    with torch.no_grad():
        out = unet(x, torch.tensor([10, 500]), noise_level=torch.tensor([0, 0]))
        other_level = unet(x, torch.tensor([10, 500]), noise_level=torch.tensor([300, 300]))
        same_as_scalar = unet(x, torch.tensor([10, 500]), noise_level=0)
    assert out.shape == (2, 3, 16, 16)
    assert (out - other_level).abs().max() > 1e-3  # the level reaches the output
    torch.testing.assert_close(out, same_as_scalar)
    with torch.no_grad():  # fully convolutional: any size its levels divide
        assert unet(torch.randn(1, 6, 32, 32), 3, noise_level=1).shape == (1, 3, 32, 32)


def test_the_noise_level_is_required_by_a_stage_and_refused_by_others():
    stage, plain = UNet(stage_config()), UNet(stage_config(low_res_channels=0, noise_level_embedding=False))
    with pytest.raises(ValueError, match="noise_level"):
        stage(torch.randn(1, 6, 16, 16), 3)
    with pytest.raises(ValueError, match="noise_level"):
        plain(torch.randn(1, 3, 16, 16), 3, noise_level=5)


@pytest.mark.parametrize("value", [-1, 5, True, 1.5])
def test_bad_low_res_channels_raise(value):
    with pytest.raises(ValueError, match="low_res_channels"):
        stage_config(low_res_channels=value)


def test_augmentation_is_the_forward_process_at_the_level():
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    low_res, noise = torch.rand(2, 3, 4, 4) * 2 - 1, torch.randn(2, 3, 4, 4)
    levels = torch.tensor([0, 300])
    z = augment(scheduler, low_res, noise, levels)
    a = scheduler.alphas_cumprod[300]
    torch.testing.assert_close(z[1], a.sqrt() * low_res[1] + (1 - a).sqrt() * noise[1])
    assert (z[0] - low_res[0]).abs().max() < 0.02  # level 0: almost clean
    cond = conditioning(scheduler, low_res, noise, levels, 16)
    torch.testing.assert_close(cond, upsample(z, 16))  # noised at the low resolution, then upsampled
    assert cond.shape == (2, 3, 16, 16)


def test_bicubic_upsampling_keeps_a_flat_picture_and_downsampling_matches_pil():
    flat = torch.full((1, 3, 4, 4), 0.25)
    torch.testing.assert_close(upsample(flat, 16), torch.full((1, 3, 16, 16), 0.25))
    images = pictures(2, 32)
    small = downsample(images, 8)
    assert small.dtype == torch.uint8 and small.shape == (2, 3, 8, 8)
    assert small[0, :, 0, 0].tolist() == [255, 255, 255]  # the white corner stays white


def test_the_model_function_concatenates_the_conditioning_and_passes_the_level():
    seen = {}

    class Spy(torch.nn.Module):
        config = stage_config()

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

        def forward(self, sample, t, noise_level=None):
            seen.update(sample=sample, t=t, noise_level=noise_level)
            return sample[:, :3] * 2

    cond, levels = torch.randn(2, 3, 8, 8), torch.tensor([7, 7])
    model_fn = low_res_model_fn(Spy(), cond, levels)
    x_t = torch.randn(2, 3, 8, 8)
    out = model_fn(x_t, torch.tensor(5))
    assert seen["sample"].dtype == torch.float64 and out.dtype == torch.float32  # UNet's dtype in, x_t's out
    torch.testing.assert_close(seen["sample"].float(), torch.cat([x_t, cond], dim=1))
    assert seen["noise_level"].tolist() == [7, 7]
    with pytest.raises(ValueError, match="low_res_cond"):
        concat_inputs(x_t, torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="low_res_channels"):
        low_res_model_fn(UNet(stage_config(low_res_channels=0, noise_level_embedding=False)), cond, levels)


def test_ssim_equals_scikit_images():
    import numpy as np
    from skimage.metrics import structural_similarity

    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(3, 3, 40, 36, generator=generator) * 2 - 1
    images = (reference + 0.3 * torch.randn(reference.shape, generator=generator)).clamp(-1, 1)

    def unit(t):  # (C, H, W) in [-1, 1] -> (H, W, C) in [0, 1], float64
        return ((t.permute(1, 2, 0).numpy() + 1) / 2).astype(np.float64)

    theirs = np.mean(
        [
            structural_similarity(unit(a), unit(b), gaussian_weights=True, sigma=1.5, data_range=1.0, channel_axis=2)
            for a, b in zip(images, reference, strict=True)
        ]
    )
    assert ssim(images, reference) == pytest.approx(theirs, abs=1e-8)
    assert ssim(reference, reference) == pytest.approx(1.0) and ssim(-reference, reference) < 0.2


def test_psnr_on_known_numbers():
    a = torch.zeros(1, 3, 4, 4)
    assert psnr(a, a + 0.2) == pytest.approx(10 * torch.log10(torch.tensor(1 / 0.01)).item(), rel=1e-5)  # 0.1 on [0, 1]


@pytest.mark.slow
def test_a_tiny_upsampler_trained_on_a_few_pictures_beats_bicubic_on_them():
    images = pictures()
    low_res, real = to_unit(downsample(images, 8)), to_unit(images)
    result = trained_pipeline()(low_res, num_inference_steps=10, noise_level=0, seed=0)
    ours = to_unit(result.images)
    bicubic = upsample(low_res, 32).clamp(-1, 1)
    assert psnr(ours, real) > psnr(bicubic, real) + 2.0  # measured: 16.9 dB against 13.0


@pytest.mark.slow
def test_the_low_res_input_conditions_the_output():
    """Two inputs, one seed: different outputs, each closer to its own input when shrunk back."""
    pipe = trained_pipeline()
    low_res = to_unit(downsample(pictures(), 8))[:2]  # a red circle and a blue square
    first = to_unit(pipe(low_res[:1], num_inference_steps=10, noise_level=0, seed=3).images)
    second = to_unit(pipe(low_res[1:], num_inference_steps=10, noise_level=0, seed=3).images)
    assert (first - second).abs().mean() > 0.1
    shrunk = [to_unit(downsample(((x + 1) * 127.5).round().to(torch.uint8), 8)) for x in (first, second)]
    for i, own in enumerate(shrunk):
        assert (own - low_res[i]).square().mean() < (own - low_res[1 - i]).square().mean() / 4
