"""Metrics of text-image agreement: CLIP score, and caption retrieval accuracy (top-k) from a similarity matrix."""

import numpy as np
import torch

from uncond.metrics import as_float64


def retrieval_accuracy(similarity, targets, ks: tuple = (1, 5)) -> dict:
    """Top-k accuracy of ranking candidates for each query: similarity (Q, C), targets (Q,) the right candidate's index.

    A target ranks below every other candidate scoring at least as high (ties count against it), so a constant
    similarity scores 0, not 100%.
    """
    similarity = as_float64(similarity, "similarity")
    targets = torch.as_tensor(np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets))
    if targets.shape != (len(similarity),) or targets.dtype.is_floating_point:
        raise ValueError(
            f"targets must be {len(similarity)} integer indices (one per row of similarity), got shape {tuple(targets.shape)}"
        )
    if len(targets) and not (int(targets.min()) >= 0 and int(targets.max()) < similarity.shape[1]):
        raise ValueError(
            f"targets must index the {similarity.shape[1]} candidates, got values in {int(targets.min())}..{int(targets.max())}"
        )
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive ints, got {ks!r}")
    true = similarity.gather(1, targets.long()[:, None])  # (Q, 1)
    rank = (similarity >= true).sum(1) - 1  # (Q,) candidates scoring at least as high, the target not counted
    return {f"top{k}": (rank < k).double().mean().item() for k in ks}


def clip_score(image_features, text_features) -> torch.Tensor:
    """CLIP score per image-text pair (Hessel et al. 2021, w = 100 as torchmetrics has it): 100 max(cos, 0), (B,)."""
    images, texts = as_float64(image_features, "image_features"), as_float64(text_features, "text_features")
    if images.shape != texts.shape:
        raise ValueError(
            f"image_features and text_features must pair up, got shapes {tuple(images.shape)} and {tuple(texts.shape)}"
        )
    cosine = torch.nn.functional.cosine_similarity(images, texts, dim=1)
    return 100 * cosine.clamp(min=0)
