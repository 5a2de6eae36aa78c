"""uncond/schedule.py against diffusers: betas, zero terminal SNR, spacing, dynamic thresholding, forward process."""

import diffusers
import pytest
import torch
from default_dtype import default_dtype
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr as diffusers_rescale_zero_terminal_snr

from uncond import scheduler as ours
from uncond.schedule import BETA_SCHEDULES, dynamic_threshold, make_betas, rescale_zero_terminal_snr, spaced_timesteps

SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"]  # the three both of diffusers' classes take


# --- betas ---


@pytest.mark.parametrize("rescale_betas_zero_snr", [False, True])
@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
def test_betas_and_alphas_match_diffusers(schedule, rescale_betas_zero_snr):
    config = dict(beta_schedule=schedule, rescale_betas_zero_snr=rescale_betas_zero_snr)
    mine, theirs = ours.DDPMScheduler(**config), diffusers.DDPMScheduler(**config)  # only DDPM has sigmoid there
    for name in ("betas", "alphas", "alphas_cumprod"):
        assert torch.equal(getattr(mine, name), getattr(theirs, name)), name
    assert torch.equal(ours.DDIMScheduler(**config).alphas_cumprod, mine.alphas_cumprod)  # one schedule for both


@pytest.mark.parametrize("set_alpha_to_one", [True, False])
def test_final_alpha_cumprod_matches_diffusers(set_alpha_to_one):
    config = dict(beta_schedule="scaled_linear", set_alpha_to_one=set_alpha_to_one)
    mine, theirs = ours.DDIMScheduler(**config), diffusers.DDIMScheduler(**config)
    assert torch.equal(mine.final_alpha_cumprod, theirs.final_alpha_cumprod)


def test_known_betas():
    assert make_betas("linear", 5, 0.1, 0.5).tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert make_betas("scaled_linear", 3, 0.01, 0.09).tolist() == pytest.approx([0.01, 0.04, 0.09])
    sigmoid = make_betas("sigmoid", 3, 0.0, 1.0)  # sigmoid(-6), sigmoid(0), sigmoid(6)
    assert sigmoid.tolist() == pytest.approx([0.0024726, 0.5, 0.9975274], abs=1e-6)
    cosine = make_betas("squaredcos_cap_v2", 1000, 0.0001, 0.02)
    assert cosine[-1].item() == pytest.approx(0.999) and cosine[0].item() == pytest.approx(4.1e-5, rel=1e-2)


@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
def test_zero_terminal_snr_matches_diffusers(schedule):
    """Lin et al. 2024 Alg. 1: the last ᾱ is exactly 0 (SNR 0, pure noise), the first √ᾱ is kept."""
    betas = make_betas(schedule, 1000, 0.00085, 0.012)
    rescaled = rescale_zero_terminal_snr(betas)
    assert torch.equal(rescaled, diffusers_rescale_zero_terminal_snr(betas))
    alphas_cumprod = torch.cumprod(1 - rescaled, dim=0)
    assert alphas_cumprod[-1].item() == 0.0 and rescaled[-1].item() == 1.0
    assert alphas_cumprod[0].sqrt().item() == pytest.approx(torch.cumprod(1 - betas, 0)[0].sqrt().item(), rel=1e-6)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    assert (snr[1:] < snr[:-1]).all()  # still strictly falling


def test_zero_terminal_snr_of_the_shipped_schedule():
    """The shipped cosine schedule ends near SNR 0 already (β capped at 0.999); the linear one does not."""
    shipped = ours.DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    rescaled = ours.DDPMScheduler.from_config(shipped.config, rescale_betas_zero_snr=True)
    assert shipped.alphas_cumprod[-1].item() == pytest.approx(2.4287e-9, rel=1e-3) and rescaled.alphas_cumprod[-1] == 0
    assert (shipped.alphas_cumprod - rescaled.alphas_cumprod).abs().max().item() < 3e-5
    linear = ours.DDPMScheduler()
    assert linear.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)


# --- timestep spacing ---


@pytest.mark.parametrize(
    ("spacing", "steps_offset"), [("leading", 0), ("leading", 1), ("trailing", 0), ("linspace", 0)]
)
def test_timesteps_match_diffusers_for_every_step_count(spacing, steps_offset):
    for n in range(1, 1000 + (steps_offset == 0)):  # leading + offset 1 + n = 1000 would reach t = 1000
        theirs = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=steps_offset)
        theirs.set_timesteps(n)
        expected = theirs.timesteps.tolist()
        if len(expected) == n + 1 and expected[-1] == -1:
            expected = expected[:-1]  # numpy.arange's float step adds a spurious t = -1 for some n (e.g. 61)
        assert spaced_timesteps(spacing, n, 1000, steps_offset) == expected, n


def test_spaced_timesteps_known_values_and_default_offset():
    assert spaced_timesteps("leading", 10, 1000) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]  # offset 0
    assert spaced_timesteps("trailing", 4, 1000) == [999, 749, 499, 249]
    assert spaced_timesteps("linspace", 2, 1000) == [999, 0]
    assert spaced_timesteps("linspace", 1, 1000) == [0]


def test_schedule_functions_name_the_bad_argument():
    with pytest.raises(ValueError, match="^beta_schedule must be one of"):
        make_betas("cosine", 1000, 1e-4, 0.02)
    with pytest.raises(ValueError, match="^timestep_spacing must be one of"):
        spaced_timesteps("uniform", 10, 1000)


@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
def test_betas_are_float32_whatever_the_default_dtype(schedule):
    # diffusers builds betas in float32; a float64 default dtype (set by a user or a library) must not change them
    expected = make_betas(schedule, 100, 1e-4, 0.02)
    with default_dtype(torch.float64):
        betas = make_betas(schedule, 100, 1e-4, 0.02)
    assert betas.dtype == torch.float32 and torch.equal(betas, expected)


# --- dynamic thresholding ---


def test_dynamic_threshold_known_numbers_and_diffusers():
    x0 = torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.2, -0.3, 0.1, 0.4], [4.0, -4.0, 4.0, -4.0]]).reshape(3, 1, 2, 2)
    # median |x_0| per sample: 1.5 -> s = 1.5; 0.25 -> s = 1 (plain clipping); 4 -> s = max_value = 2
    expected = torch.tensor([[1 / 1.5, -1.0, 1.0, 0.5 / 1.5], [0.2, -0.3, 0.1, 0.4], [1.0, -1.0, 1.0, -1.0]])
    got = dynamic_threshold(x0, ratio=0.5, max_value=2.0)
    torch.testing.assert_close(got, expected.reshape(3, 1, 2, 2))
    theirs = diffusers.DDPMScheduler(thresholding=True, dynamic_thresholding_ratio=0.5, sample_max_value=2.0)
    assert torch.equal(got, theirs._threshold_sample(x0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("ratio", "max_value"), [(0.995, 1.0), (0.995, 1.5), (0.9, 3.0), (1.0, 10.0)])
def test_dynamic_threshold_matches_diffusers(ratio, max_value, dtype):
    x0 = (3 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))).to(dtype)
    theirs = diffusers.DDIMScheduler(thresholding=True, dynamic_thresholding_ratio=ratio, sample_max_value=max_value)
    got = dynamic_threshold(x0, ratio, max_value)
    assert got.dtype == dtype and got.shape == x0.shape and got.abs().max() <= 1
    assert torch.equal(got, theirs._threshold_sample(x0))
    if max_value == 1.0:  # s clamped to [1, 1]: exactly clip_sample
        assert torch.equal(got, x0.clamp(-1, 1))


# --- forward process ---


@pytest.mark.parametrize("shape", [(5, 7), (5, 3, 4, 4), (5, 2, 3, 4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_add_noise_and_velocity_match_diffusers(schedule, dtype, shape):
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(shape, generator=generator).to(dtype)
    noise = torch.randn(shape, generator=generator).to(dtype)
    t = torch.tensor([0, 1, 500, 998, 999])
    mine, theirs = ours.DDPMScheduler(beta_schedule=schedule), diffusers.DDPMScheduler(beta_schedule=schedule)
    for method in ("add_noise", "get_velocity"):
        got, expected = getattr(mine, method)(x0, noise, t), getattr(theirs, method)(x0, noise, t)
        assert got.dtype == dtype and got.shape == x0.shape
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
