"""Sample-quality metrics on feature vectors and pixels: plain functions of arrays, no models.

    frechet_distance(real_features, fake_features)          # FID when the features are Inception's; here CLIP's
    precision_recall(real_features, fake_features, k=3)     # {"precision": ..., "recall": ...}
    memorisation_rate(samples, training_images, 0.05)       # share of samples that copy a training image
    filled_rate(images)                                     # share of pictures that fill their frame (colour squares)
    retrieval_accuracy(similarity, targets, ks=(1, 5))      # {"top1": ..., "top5": ...}
    clip_score(image_features, text_features)               # (B,) per pair

Features are (N, D) arrays (numpy or torch, any float dtype); everything is computed in float64.
"""

import numpy as np
import torch

CHUNK = 1024  # rows per distance block: bounds memory at CHUNK x M float64


def as_float64(x, name: str, ndim: int | None = 2) -> torch.Tensor:
    """A CPU float64 tensor of `x` (numpy or torch), checked to have `ndim` dimensions (None: at least 2)."""
    x = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x))
    if x.dtype == torch.uint8:
        raise ValueError(f"{name} is uint8: pass floats (pixels in [0, 1]: divide by 255)")
    x = x.to(torch.float64)
    if (ndim is not None and x.ndim != ndim) or (ndim is None and x.ndim < 2):
        raise ValueError(f"{name} must have {ndim or 'at least 2'} dimensions, got shape {tuple(x.shape)}")
    return x


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str, min_rows: int = 1) -> None:
    """Both sets hold at least `min_rows` rows of the same width."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"{names} must have the same feature shape, got {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
    if len(a) < min_rows or len(b) < min_rows:
        raise ValueError(f"{names} need at least {min_rows} rows each, got {len(a)} and {len(b)}")


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, eq. 6): FID on Inception features.

    d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)). The matrix square root: tr (S_a S_b)^(1/2) is the sum of
    the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2), which has the same eigenvalues as S_a S_b but is
    symmetric positive semi-definite, so `eigh` in float64 gives it exactly, with no complex parts to drop and no
    singular-matrix trouble (scipy.linalg.sqrtm of the non-symmetric S_a S_b needs both when N < D).
    """
    a, b = as_float64(features_a, "features_a").numpy(), as_float64(features_b, "features_b").numpy()
    _check_pair(a, b, "features_a and features_b", min_rows=2)
    mu_a, mu_b = a.mean(0), b.mean(0)  # (D,)
    sigma_a, sigma_b = (
        np.cov(a, rowvar=False).reshape(a.shape[1], -1),
        np.cov(b, rowvar=False).reshape(b.shape[1], -1),
    )  # (D, D)
    w, v = np.linalg.eigh(sigma_a)
    sqrt_a = (v * np.sqrt(w.clip(min=0))) @ v.T  # S_a^(1/2)
    eigenvalues = np.linalg.eigvalsh(sqrt_a @ sigma_b @ sqrt_a)
    trace_sqrt = np.sqrt(eigenvalues.clip(min=0)).sum()  # tr (S_a S_b)^(1/2)
    distance = ((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a) + np.trace(sigma_b) - 2 * trace_sqrt
    return float(max(distance, 0.0))  # rounding can leave -1e-12 for identical sets


def _kth_neighbour_distance(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance (N,) from each row of `x` to its k-th nearest other row."""
    # the row itself is among the nearest at distance 0, hence k + 1
    return torch.cat([torch.cdist(x[i : i + CHUNK], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), CHUNK)])


def _inside_any_ball(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether each point (N,) lies within radius of some centre: the k-NN manifold estimate."""
    return torch.cat(
        [(torch.cdist(points[i : i + CHUNK], centres) <= radii[None]).any(1) for i in range(0, len(points), CHUNK)]
    )


def precision_recall(real_features, fake_features, k: int = 3) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019): shares of fake in the real k-NN manifold and of real in the fake one.

    Each set's manifold is the union of balls around its points, each reaching the point's k-th nearest neighbour
    in the same set (the paper uses k = 3). Precision: share of fake points inside the real manifold (fidelity);
    recall: share of real points inside the fake manifold (coverage).
    """
    real, fake = as_float64(real_features, "real_features"), as_float64(fake_features, "fake_features")
    _check_pair(real, fake, "real_features and fake_features")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < min(len(real), len(fake)):
        raise ValueError(
            f"k must be an int in 1..{min(len(real), len(fake)) - 1} (fewer than the rows of each set), got {k!r}"
        )
    precision = _inside_any_ball(fake, real, _kth_neighbour_distance(real, k)).double().mean().item()
    recall = _inside_any_ball(real, fake, _kth_neighbour_distance(fake, k)).double().mean().item()
    return {"precision": precision, "recall": recall}


def pixel_distance(a, b) -> torch.Tensor:
    """Root-mean-square pixel distance (N, M) between image sets (N, ...) and (M, ...) in [0, 1]: 0 equal, 1 black vs white."""
    a, b = as_float64(a, "a", None), as_float64(b, "b", None)
    _check_pair(a, b, "both image sets")
    a, b = a.flatten(1), b.flatten(1)  # (N, D), (M, D)
    return torch.cat([torch.cdist(a[i : i + CHUNK], b) for i in range(0, len(a), CHUNK)]) / a.shape[1] ** 0.5


def nearest_training_image(samples, training_images) -> tuple[torch.Tensor, torch.Tensor]:
    """For each sample, the RMS pixel distance (N,) to its nearest training image and that image's index (N,)."""
    distances = pixel_distance(samples, training_images)
    return distances.min(dim=1)


def memorisation_rate(distances, threshold: float = 0.05) -> float:
    """Share of samples whose nearest training image is closer than `threshold` (cf. Carlini et al. 2023).

    `distances` (N,) are `nearest_training_image`'s RMS pixel distances, pixels in [0, 1] (uint8 / 255): the distance
    is sqrt(mean over C H W of (x - y)^2), so 0.05 is an error of 13 of 255 levels on an average pixel. For scale, on
    the 32 x 32 emoji set: the median distance of a training image to its nearest other one is 0.08 (10% of them,
    mostly skin-tone variants, are within 0.03), and uniform noise lies 0.40 from its nearest.
    """
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not threshold > 0:
        raise ValueError(f"threshold must be a positive number, got {threshold!r}")
    return (as_float64(distances, "distances", 1) < threshold).double().mean().item()


# ---- the colour-square mode ----

INK = 0.1  # a pixel is ink where its mean distance from white, over channels in [0, 1], exceeds this
FILLED = 0.7  # a picture is filled where ink covers more than this share of it


def ink_coverage(images) -> torch.Tensor:
    """Share (N,) of each picture's pixels that are not white background; images (N, C, H, W) in [0, 1]."""
    images = as_float64(images, "images", 4)
    if images.min() < 0 or images.max() > 1:
        raise ValueError("images must be in [0, 1] (uint8 / 255)")
    return ((1 - images).mean(dim=1) > INK).flatten(1).double().mean(dim=1)


def filled_rate(images, threshold: float = FILLED) -> float:
    """Share of pictures whose ink covers more than `threshold` of the frame: the coloured-square mode.

    Every emoji of the data set is centred on white with a margin, so few cover 70% of their 32 x 32 frame (1.9%
    of the four colour styles: square buttons, keycaps, flags); the samples of an undertrained model that draw a
    plain rounded square, in one emoji colour, cover 75-77%.
    """
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold < 1:
        raise ValueError(f"threshold must be a number in (0, 1), got {threshold!r}")
    return (ink_coverage(images) > threshold).double().mean().item()
