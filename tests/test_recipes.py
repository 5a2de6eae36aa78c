"""The training recipes: min-SNR-γ weights, log-SNR timestep distributions, immiscible noise assignment."""

import itertools

import pytest
import torch

from uncond.recipes import (
    assign_noise,
    log_snrs,
    min_snr_weights,
    nearest_timesteps,
    sample_log_snr,
    sample_timesteps,
    snr,
    timestep_density,
)
from uncond.scheduler import DDPMScheduler

ALPHAS_CUMPROD = DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod


def test_snr_is_alpha_bar_over_one_minus_alpha_bar():
    t = torch.tensor([0, 500, 999])
    a = ALPHAS_CUMPROD.double()[t]
    torch.testing.assert_close(snr(ALPHAS_CUMPROD, t), a / (1 - a))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_follow_hang_et_al(prediction_type):
    t = torch.arange(0, 1000, 37)
    s = snr(ALPHAS_CUMPROD, t)
    weights = min_snr_weights(ALPHAS_CUMPROD, t, 5.0, prediction_type)
    denominator = s + 1 if prediction_type == "v_prediction" else s
    torch.testing.assert_close(weights.double(), torch.minimum(s, torch.tensor(5.0, dtype=s.dtype)) / denominator)
    # noisy steps (SNR < γ) keep weight 1 for ε and SNR / (SNR + 1) for v; clean steps are capped below 1
    noisy, clean = s < 5, s > 5
    if prediction_type == "epsilon":
        assert torch.allclose(weights[noisy], torch.ones(int(noisy.sum())))
    assert (weights[clean] < 1).all() and (weights > 0).all()


def test_min_snr_weights_are_float32_on_the_timesteps_device():
    weights = min_snr_weights(ALPHAS_CUMPROD, torch.tensor([3, 900]), 5.0, "v_prediction")
    assert weights.dtype == torch.float32 and weights.shape == (2,)


def test_log_snrs_decrease_and_nearest_timesteps_invert_them():
    table = log_snrs(ALPHAS_CUMPROD)
    assert (table[1:] < table[:-1]).all()
    t = torch.tensor([0, 1, 250, 998, 999])
    assert torch.equal(nearest_timesteps(ALPHAS_CUMPROD, table[t]), t)


@pytest.mark.parametrize(
    "kind, mean, std", [("lognormal", 2.4, 2.4), ("laplace", 0.0, 0.5 * 2**0.5)], ids=["lognormal", "laplace"]
)
def test_log_snr_draws_have_the_papers_moments(kind, mean, std):
    draws = sample_log_snr(kind, 200_000, torch.Generator().manual_seed(0))
    assert draws.dtype == torch.float64
    assert draws.mean().item() == pytest.approx(mean, abs=0.03)
    assert draws.std().item() == pytest.approx(std, rel=0.02)


def test_laplace_draws_have_the_laplace_median_absolute_deviation():
    draws = sample_log_snr("laplace", 200_000, torch.Generator().manual_seed(1))
    # for Laplace(0, b) P(|x| < b ln 2) = 1/2
    assert draws.abs().median().item() == pytest.approx(0.5 * torch.log(torch.tensor(2.0)).item(), rel=0.02)


def test_uniform_timesteps_are_the_plain_draw():
    a = sample_timesteps("uniform", 50, ALPHAS_CUMPROD, torch.Generator().manual_seed(4))
    b = torch.randint(0, 1000, (50,), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind, median_log_snr", [("lognormal", 2.4), ("laplace", 0.0)])
def test_timestep_draws_centre_on_the_distributions_median_log_snr(kind, median_log_snr):
    density = timestep_density(kind, ALPHAS_CUMPROD)
    assert density.sum().item() == pytest.approx(1.0)
    median_t = int((density.cumsum(0) >= 0.5).nonzero()[0])
    expected = int(nearest_timesteps(ALPHAS_CUMPROD, torch.tensor([median_log_snr])))
    assert abs(median_t - expected) <= 3
    # more concentrated than uniform: the 250 steps around the median hold more than its 25%
    inner = density[max(0, median_t - 125) : median_t + 125].sum().item()
    assert inner > 0.25 + 0.1


def test_sample_timesteps_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="timestep_sampling"):
        sample_timesteps("cosine", 4, ALPHAS_CUMPROD, torch.Generator())


def test_assign_noise_is_a_permutation_of_least_total_distance():
    generator = torch.Generator().manual_seed(2)
    x_0 = torch.rand(6, 1, 2, 2, generator=generator) * 2 - 1
    noise = torch.randn(6, 1, 2, 2, generator=generator)
    assigned = assign_noise(x_0, noise)
    # the same draws, reordered
    assert sorted(map(tuple, assigned.flatten(1).tolist())) == sorted(map(tuple, noise.flatten(1).tolist()))

    def total(n):
        return (x_0 - n).pow(2).sum().item()

    best = min(total(noise[list(p)]) for p in itertools.permutations(range(6)))
    assert total(assigned) == pytest.approx(best)
    assert total(assigned) <= total(noise)
