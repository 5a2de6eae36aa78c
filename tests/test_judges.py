"""Tests for evaluation.judges: emoji groups, best-per-group scores, top-k with ties, the pixel judge, spreads."""

import pytest
import torch

from evaluation.judges import EmojiGroups, PixelJudge, best_per_group, mean_pairwise, top_k_hits

NAMES = ["vampire", "vampire: dark skin tone", "vampire: light skin tone", "pencil", "red heart", "flag: Japan"]


def test_groups_merge_variants_and_skip_unknown_names():
    groups = EmojiGroups(NAMES + ["pencil"])
    assert groups.names == NAMES  # distinct, in order
    assert groups.groups == ["vampire", "pencil", "red heart", "flag: Japan"]  # a flag is no variant
    assert groups.group_of_name.tolist() == [0, 0, 0, 1, 2, 3]
    assert groups.group_ids(["vampire: light skin tone", "unicorn"]) == {0}
    assert groups.group_ids(["vampire: medium skin tone"]) == {0}  # a tone the data lacks still names its emoji


def test_best_per_group_takes_each_groups_maximum():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.2], [0.5, 0.0, 0.4, 0.8]])
    group_of = torch.tensor([0, 0, 1, 2])
    assert torch.equal(best_per_group(scores, group_of, 3), torch.tensor([[0.9, 0.3, 0.2], [0.5, 0.4, 0.8]]))


def test_top_k_hits_ranks_the_best_acceptable_group_and_ties_count_against_it():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]] * 4)
    hits = top_k_hits(scores, [{4}, {5}, {5, 0}, set()], k=5)
    assert hits.tolist() == [True, False, True, False]  # 5th place in, 6th out, any acceptable group, none given
    tied = torch.tensor([[1.0, 1.0, 1.0]])
    assert top_k_hits(tied, [{0}], k=2).tolist() == [False]  # three-way tie for first: not provably in a top 2
    assert top_k_hits(tied, [{0}], k=3).tolist() == [True]
    with pytest.raises(ValueError, match="acceptable must hold one set per row"):
        top_k_hits(scores, [{0}])


@pytest.fixture
def real():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 4, 4), generator=generator, dtype=torch.uint8)
    styles = ["noto", "twemoji", "noto", "openmoji", "noto", "twemoji"]
    return images, styles


def test_pixel_judge_finds_each_real_image_itself(real):
    images, styles = real
    groups = EmojiGroups(NAMES)
    judge = PixelJudge(images, NAMES, styles, groups)
    scores, found_styles = judge.judge(images)
    assert found_styles == styles
    assert scores.argmax(dim=1).tolist() == groups.group_of_name.tolist()
    assert torch.allclose(scores.max(dim=1).values, torch.zeros(6), atol=1e-3)  # distance 0 to itself


def test_pixel_distance_is_rms_over_unit_pixels(real):
    images, styles = real
    judge = PixelJudge(images, NAMES, styles, EmojiGroups(NAMES))
    a, b = images[:1].float() / 255, images.float() / 255
    expected = ((a - b) ** 2).flatten(1).mean(dim=1).sqrt()
    assert torch.allclose(judge.distances(images[:1])[0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="images must have the real images' shape"):
        judge.distances(images[:, :, :2])


def test_mean_pairwise_distances():
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert mean_pairwise(rows, "cosine") == pytest.approx(2 / 3)  # pairs: 1, 0, 1
    black, white = torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert mean_pairwise(torch.cat([black, white]), "rms") == pytest.approx(1.0)
    assert mean_pairwise(torch.cat([black, black]), "rms") == 0.0
    with pytest.raises(ValueError, match="metric must be"):
        mean_pairwise(rows, "l1")
    with pytest.raises(ValueError, match="at least two rows"):
        mean_pairwise(rows[:1], "cosine")
