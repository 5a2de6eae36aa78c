"""Tests for evaluation.best_of: one draw of N candidates scored as every smaller N, by both judges."""

import pytest
import torch

from evaluation.__main__ import main
from evaluation.best_of import check_candidates, kept, subset
from tests.test_evaluation import read_outputs
from tests.test_natural import folders  # noqa: F401 (the tiny pipeline, CLIP, data and prompts)


def test_subset_spreads_over_the_list():
    assert subset(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert subset([1, 2], 5) == [1, 2]


def test_candidates_are_checked_by_name():
    assert check_candidates([4, 1, 4]) == [1, 4]
    for bad in ([], [0], [17], 3, [True]):
        with pytest.raises(ValueError, match="candidates"):
            check_candidates(bad)


def test_kept_takes_each_images_best_among_the_first_n():
    candidates = torch.arange(3 * 2).view(3, 2, 1, 1, 1)  # (N, B, C, H, W): candidate c of image b is 2 c + b
    scores = torch.tensor([[0.1, 0.5, 0.9], [0.7, 0.2, 0.3]])  # (B, N)
    assert kept(candidates, scores, 1).flatten().tolist() == [0, 1]
    assert kept(candidates, scores, 2).flatten().tolist() == [2, 1]
    assert kept(candidates, scores, 3).flatten().tolist() == [4, 1]


def test_command_scores_every_n_from_one_draw(folders, tmp_path, capsys):  # noqa: F811
    argv = ["best_of", "--model", folders["txt2img"], "--clip", folders["clip"], "--data", folders["data"]]
    argv += ["--prompts", folders["prompts.json"], "--out", str(tmp_path), "--num-images", "2", "--steps", "2"]
    report = main(argv + ["--candidates", "1", "2", "4", "--timing-steps", "2", "--batch-size", "8"])
    assert read_outputs(tmp_path)["task"] == "best_of"
    assert list(report["by_candidates"]) == [1, 2, 4] and len(report["natural_prompts"]) == 4
    for row in report["by_candidates"].values():
        for judge in report["judges"]:
            assert 0 <= row[judge]["natural_top5"] <= 1 and 0 <= row[judge]["exact_top5"] <= 1
        assert row["diversity"]["cosine"]["real"] > 0
    assert set(report["timing"]["seconds"]["cpu"]) == {1, 2, 4} and set(report["timing"]["seconds"]["wall"]) == {
        1,
        2,
        4,
    }
    assert "| 4 |" in capsys.readouterr().out
