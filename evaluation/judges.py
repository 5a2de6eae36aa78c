"""Two judges of which emoji (and which style) a generated picture shows, so that no number rests on one model.

- `ClipJudge`: the project's CLIP, which is also the text encoder of the model it judges. It ranks the emoji by
  the similarity of the picture to their CLDR names, and the styles by the similarity to their style words.
- `PixelJudge`: no model at all. It ranks the emoji by the pixel distance from the picture to their nearest real
  image, over every style and every image of the data set (held-out ones included, so a held-out pair has its
  own picture to be near), and takes the style of the nearest image. It cannot share the text encoder's blind
  spots; it is strict about drawing (a new pose or colour is far from every real image).

Both merge an emoji's variants (skin tones, hair, family members: `uncond.dataset.variant_base`) into one
candidate, so "vampire" in five skin tones takes one place of a top 5, not five. Both return (B, G) scores over
the same G emoji groups, higher is better.
"""

import torch

from uncond.dataset import variant_base


class EmojiGroups:
    """The data set's emoji as candidates: distinct CLDR names, and the group (variants merged) of each."""

    def __init__(self, names: list):
        self.names = list(dict.fromkeys(names))  # distinct, in data set order
        self.groups = list(dict.fromkeys(variant_base(n) for n in self.names))
        index = {g: i for i, g in enumerate(self.groups)}
        self.group_of_name = torch.tensor([index[variant_base(n)] for n in self.names])  # (N names,)
        self.index = index

    def __len__(self) -> int:
        return len(self.groups)

    def group_ids(self, names) -> set:
        """The groups of `names` that are candidates (names the data set lacks are left out)."""
        return {self.index[variant_base(n)] for n in names if variant_base(n) in self.index}


def best_per_group(scores: torch.Tensor, group_of: torch.Tensor, num_groups: int) -> torch.Tensor:
    """(B, N) scores of N items -> (B, G): each group's best item (items of group `group_of[n]`)."""
    out = torch.full((scores.shape[0], num_groups), float("-inf"), dtype=scores.dtype)
    return out.scatter_reduce(1, group_of.expand_as(scores), scores, reduce="amax")


def top_k_hits(scores: torch.Tensor, acceptable: list, k: int = 5) -> torch.Tensor:
    """(B,) bool: one of row b's `acceptable[b]` groups is among its k best-scored; ties count against it."""
    if scores.shape[0] != len(acceptable):
        raise ValueError(f"acceptable must hold one set per row, got {len(acceptable)} for {scores.shape[0]} rows")
    hits = []
    for row, allowed in zip(scores, acceptable):
        best = max((row[g] for g in allowed), default=torch.tensor(float("-inf")))
        # rank of the best acceptable group = how many other groups score at least as high
        beaten_by = int((row >= best).sum()) - 1 if allowed else len(row)
        hits.append(bool(allowed) and beaten_by < k)
    return torch.tensor(hits, dtype=torch.bool)


class ClipJudge:
    """Emoji and style by CLIP similarity. `embedder`: a `txt2img.clip.CLIPEmbedder`."""

    name = "CLIP"

    def __init__(self, embedder, groups: EmojiGroups, style_words: dict, batch_size: int = 256):
        from evaluation.common import clip_text_features

        self.embedder, self.groups, self.batch_size = embedder, groups, batch_size
        self.name_features = clip_text_features(embedder, groups.names, batch_size)  # (N names, P)
        self.styles = list(style_words)
        self.style_features = clip_text_features(embedder, list(style_words.values()), batch_size)  # (S, P)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        from evaluation.common import clip_image_features

        return clip_image_features(self.embedder, images, self.batch_size)

    def judge(self, images: torch.Tensor) -> tuple[torch.Tensor, list]:
        """uint8 images (B, C, H, W) -> emoji group scores (B, G) and each image's style."""
        features = self.features(images)  # (B, P), unit norm
        scores = best_per_group(features @ self.name_features.T, self.groups.group_of_name, len(self.groups))
        styles = [self.styles[i] for i in (features @ self.style_features.T).argmax(dim=1).tolist()]
        return scores, styles


class PixelJudge:
    """Emoji and style of the nearest real image in pixel space (RMS over [0, 1] pixels)."""

    name = "nearest real image"

    def __init__(self, real_images: torch.Tensor, real_names: list, real_styles: list, groups: EmojiGroups):
        # float64: the expansion |x|^2 + |r|^2 - 2 x.r cancels, and float32 would leave ~3e-4 at distance 0
        self.real = real_images.flatten(1).double() / 255  # (N, D)
        self.real_sq = (self.real**2).sum(dim=1)  # (N,)
        name_index = {n: i for i, n in enumerate(groups.names)}
        self.group_of_image = groups.group_of_name[[name_index[n] for n in real_names]]  # (N,)
        self.real_styles, self.groups = list(real_styles), groups

    def distances(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N) RMS pixel distance from each image to each real image."""
        x = images.flatten(1).double() / 255  # (B, D)
        if x.shape[1] != self.real.shape[1]:
            raise ValueError(f"images must have the real images' shape {self.real.shape[1]} values, got {x.shape[1]}")
        squared = (x**2).sum(dim=1, keepdim=True) + self.real_sq - 2 * x @ self.real.T
        return (squared.clamp_min(0) / x.shape[1]).sqrt().float()

    def judge(self, images: torch.Tensor) -> tuple[torch.Tensor, list]:
        """uint8 images (B, C, H, W) -> emoji group scores (B, G) (minus the distance) and each image's style."""
        distances = self.distances(images)
        scores = best_per_group(-distances, self.group_of_image, len(self.groups))
        styles = [self.real_styles[i] for i in distances.argmin(dim=1).tolist()]
        return scores, styles


def mean_pairwise(features: torch.Tensor, metric: str) -> float:
    """Mean distance over the pairs of rows: "cosine" (1 - cos, rows of unit norm) or "rms" (pixels in [0, 1])."""
    if len(features) < 2:
        raise ValueError(f"features must hold at least two rows, got {len(features)}")
    if metric == "cosine":
        distance = 1 - features @ features.T
    elif metric == "rms":
        x = features.flatten(1).float() / 255
        distance = torch.cdist(x, x) / x.shape[1] ** 0.5
    else:
        raise ValueError(f"metric must be 'cosine' or 'rms', got {metric!r}")
    upper = torch.triu_indices(len(features), len(features), offset=1)
    return distance[upper[0], upper[1]].mean().item()
