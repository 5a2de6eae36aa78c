"""Starting noise between two seeds: slerp's ends are exact, its middle keeps the norm; the nearer seed's generator."""

import pytest
import torch

from uncond.noise import check_variation, slerp, starting_noise
from uncond.sampling import initial_noise

SHAPE = (3, 3, 8, 8)


def noises():
    return initial_noise(SHAPE, 1, "cpu")[0], initial_noise(SHAPE, 2, "cpu")[0]


def test_slerp_ends_are_the_two_noises_exactly():
    low, high = noises()
    assert torch.equal(slerp(0.0, low, high), low) and torch.equal(slerp(1.0, low, high), high)
    assert torch.allclose(slerp(1e-7, low, high), low, atol=1e-5)


def test_slerp_keeps_the_norm_where_a_straight_line_loses_it():
    low, high = noises()
    middle = slerp(0.5, low, high).reshape(3, -1).norm(dim=1)
    line = (0.5 * low + 0.5 * high).reshape(3, -1).norm(dim=1)
    ends = (low.reshape(3, -1).norm(dim=1) + high.reshape(3, -1).norm(dim=1)) / 2
    assert torch.allclose(middle, ends, rtol=0.02)  # two independent draws are nearly orthogonal: |x| kept
    assert (line < 0.8 * ends).all()  # the chord's middle is about 1/sqrt(2) as long


def test_slerp_is_per_sample_and_falls_back_to_a_line_for_parallel_noises():
    low, high = noises()
    both = slerp(0.3, low, high)
    assert torch.equal(both[1:2], slerp(0.3, low[1:2], high[1:2]))
    assert torch.allclose(slerp(0.25, low, 2 * low), 1.25 * low)  # parallel: sin(omega) = 0 is not divided by


def test_starting_noise_at_strength_0_and_1_is_each_seeds_own_and_its_generator():
    plain, generator = initial_noise(SHAPE, 1, "cpu")
    other, other_generator = initial_noise(SHAPE, 2, "cpu")
    next_noise = torch.randn(4, generator=generator)
    next_other = torch.randn(4, generator=other_generator)
    for strength, expected, expected_next in (
        (0.0, plain, next_noise),
        (0.4, None, next_noise),
        (1.0, other, next_other),
    ):
        x_t, gen = starting_noise(SHAPE, 1, "cpu", variation_seed=2, variation_strength=strength)
        if expected is not None:
            assert torch.equal(x_t, expected)
        assert torch.equal(torch.randn(4, generator=gen), expected_next)  # the nearer seed's per-step noise
    x_t, _ = starting_noise(SHAPE, 1, "cpu", variation_seed=None, variation_strength=0.7)
    assert torch.equal(x_t, plain)


@pytest.mark.parametrize("seed, strength, argument", [(-1, 0.5, "variation_seed"), ("7", 0.5, "variation_seed"),
                                                      (3, 1.5, "variation_strength"), (3, None, "variation_strength")])  # fmt: skip
def test_bad_variations_name_the_argument(seed, strength, argument):
    with pytest.raises(ValueError, match=argument):
        check_variation(seed, strength)
