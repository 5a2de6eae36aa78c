"""Metrics on cases with known answers: FID, precision/recall, memorisation, filled frames, retrieval, CLIP score."""

import numpy as np
import pytest
import torch

from txt2img.metrics import clip_score, retrieval_accuracy
from uncond.metrics import (
    filled_rate,
    frechet_distance,
    ink_coverage,
    memorisation_rate,
    nearest_training_image,
    pixel_distance,
    precision_recall,
)


def gaussian(n=500, d=8, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)) @ np.random.default_rng(seed + 100).normal(size=(d, d))


# ---- Fréchet distance (Heusel et al. 2017) ----


def test_fid_of_a_set_with_itself_is_zero():
    features = gaussian()
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.tensor(features, dtype=torch.float32), torch.tensor(features)) == pytest.approx(
        0.0, abs=1e-4
    )


def test_fid_of_a_shift_is_the_squared_shift_and_grows_with_it():
    features = gaussian()
    direction = np.ones(features.shape[1]) / np.sqrt(features.shape[1])
    distances = [frechet_distance(features, features + s * direction) for s in (0.5, 1.0, 2.0, 4.0)]
    assert distances == pytest.approx([0.25, 1.0, 4.0, 16.0], rel=1e-6)  # same covariance: only |mu_a - mu_b|^2 is left


def test_fid_closed_form_in_one_dimension():
    # N(mu, v) against N(2 mu, 4 v): (mu - 2 mu)^2 + (sqrt(v) - 2 sqrt(v))^2 = mu^2 + v, from the sample statistics
    a = np.random.default_rng(1).normal(3.0, 1.5, size=(400, 1))
    mu, v = a.mean(), a.var(ddof=1)
    assert frechet_distance(a, 2 * a) == pytest.approx(mu**2 + v, rel=1e-9)


def test_fid_matches_scipy_sqrtm_and_is_symmetric():
    linalg = pytest.importorskip("scipy.linalg")
    a, b = gaussian(seed=0), gaussian(seed=1) + 0.3
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(
        sigma_a + sigma_b - 2 * linalg.sqrtm(sigma_a @ sigma_b).real
    )
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(reference, rel=1e-8)


def test_fid_with_fewer_samples_than_dimensions_is_finite():
    a, b = gaussian(n=10, d=32, seed=0), gaussian(n=12, d=32, seed=1)  # singular covariances
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-7)
    assert np.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 0


def test_fid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same feature shape"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="2 dimensions"):
        frechet_distance(np.zeros(5), np.zeros(5))


# ---- precision and recall (Kynkäänniemi et al. 2019) ----


def test_precision_recall_of_identical_sets_is_one():
    features = gaussian(n=200)
    assert precision_recall(features, features, k=3) == {"precision": 1.0, "recall": 1.0}


def test_precision_recall_of_far_apart_sets_is_zero():
    features = gaussian(n=200)
    assert precision_recall(features, features + 1000.0, k=3) == {"precision": 0.0, "recall": 0.0}


def test_mode_collapse_keeps_precision_and_loses_recall():
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(100, 1, (200, 2))])  # two modes
    fake = rng.normal(0, 0.5, (200, 2))  # only the first, and tighter
    result = precision_recall(real, fake, k=3)
    assert result["precision"] > 0.95
    assert 0.1 < result["recall"] <= 0.5  # the second mode is not covered at all


def test_precision_recall_rejects_k_out_of_range():
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 2)), k=0)


# ---- memorisation ----


def images(n, seed):
    return torch.rand((n, 3, 8, 8), generator=torch.Generator().manual_seed(seed))


def test_pixel_distance_is_rms_in_unit_pixels():
    black, white, grey = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert pixel_distance(black, torch.cat([black, white, grey]))[0].tolist() == pytest.approx([0.0, 1.0, 0.5])


def test_memorisation_of_copies_is_all_and_of_noise_none():
    training = images(50, seed=0)
    copies = (
        training[torch.randperm(50, generator=torch.Generator().manual_seed(1))[:20]] + 0.01 * torch.randn(20, 3, 8, 8)
    ).clamp(0, 1)
    assert memorisation_rate(nearest_training_image(copies, training)[0], threshold=0.05) == 1.0
    assert memorisation_rate(nearest_training_image(images(20, seed=2), training)[0], threshold=0.05) == 0.0
    assert (
        memorisation_rate(
            nearest_training_image(torch.cat([copies[:10], images(10, seed=3)]), training)[0], threshold=0.05
        )
        == 0.5
    )


def test_nearest_training_image_finds_the_copied_one():
    training = images(30, seed=0)
    distances, indices = nearest_training_image(training[[7, 3, 29]], training)
    assert indices.tolist() == [7, 3, 29]
    assert distances.tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_memorisation_rejects_uint8_and_bad_threshold():
    with pytest.raises(ValueError, match="uint8"):
        nearest_training_image(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="threshold"):
        memorisation_rate(torch.zeros(2), 0.0)
    with pytest.raises(ValueError, match="same feature shape"):
        nearest_training_image(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 8, 8))


# ---- filled frames (the coloured-square mode) ----


def square(side: int, colour=(0.9, 0.4, 0.1), size: int = 32) -> torch.Tensor:
    """A (3, size, size) white picture with a centred `side` x `side` square of `colour`."""
    picture = torch.ones(3, size, size)
    start = (size - side) // 2
    picture[:, start : start + side, start : start + side] = torch.tensor(colour).view(3, 1, 1)
    return picture


def test_ink_coverage_is_the_share_of_non_white_pixels():
    pictures = torch.stack([square(0), square(16), square(32), square(16, colour=(0.95, 0.95, 0.95))])
    assert ink_coverage(pictures).tolist() == pytest.approx([0.0, 0.25, 1.0, 0.0])  # near-white is background


def test_filled_rate_counts_the_squares_that_fill_the_frame():
    pictures = torch.stack([square(28), square(28, colour=(0.1, 0.1, 0.3)), square(20), square(0)])  # 77%, 77%, 39%, 0
    assert filled_rate(pictures) == 0.5
    assert filled_rate(pictures, threshold=0.3) == 0.75


def test_filled_rate_rejects_bad_pixels_and_threshold():
    with pytest.raises(ValueError, match="uint8"):
        filled_rate(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        filled_rate(torch.full((2, 3, 4, 4), 255.0))
    with pytest.raises(ValueError, match="threshold"):
        filled_rate(torch.ones(2, 3, 4, 4), threshold=1.5)
    with pytest.raises(ValueError, match="4 dimensions"):
        filled_rate(torch.ones(3, 4, 4))


# ---- retrieval and CLIP score ----


def test_retrieval_with_an_oracle_is_perfect_and_with_a_constant_zero():
    targets = torch.tensor([3, 0, 9, 9, 5])
    oracle = torch.nn.functional.one_hot(targets, 12).float()  # (5 queries, 12 candidates)
    assert retrieval_accuracy(oracle, targets) == {"top1": 1.0, "top5": 1.0}
    assert retrieval_accuracy(torch.ones(5, 12), targets, ks=(1, 5, 12)) == {"top1": 0.0, "top5": 0.0, "top12": 1.0}


def test_retrieval_counts_ranks():
    similarity = torch.tensor(
        [
            [0.9, 0.8, 0.7, 0.1],  # target 2 ranks third
            [0.1, 0.2, 0.3, 0.4],  # target 3 ranks first
            [0.5, 0.5, 0.1, 0.1],
        ]
    )  # target 0 ties with 1: counted second
    assert retrieval_accuracy(similarity, [2, 3, 0], ks=(1, 2, 3)) == pytest.approx(
        {"top1": 1 / 3, "top2": 2 / 3, "top3": 1.0}
    )


def test_retrieval_rejects_bad_targets():
    with pytest.raises(ValueError, match="index"):
        retrieval_accuracy(torch.zeros(2, 4), [0, 4])
    with pytest.raises(ValueError, match="one per row"):
        retrieval_accuracy(torch.zeros(2, 4), [0])
    with pytest.raises(ValueError, match="ks"):
        retrieval_accuracy(torch.zeros(2, 4), [0, 1], ks=(0,))


def test_clip_score_of_same_orthogonal_and_opposite_directions():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [3.0, 4.0]])
    assert clip_score(a, b).tolist() == pytest.approx([100.0, 0.0, 0.0, 100.0])
