"""`python -m evaluation upscale`: reconstruction numbers per noise level, the cascade's FID_CLIP, the grid."""

import json

import pytest
import torch
from PIL import Image
from test_evaluation import folders  # noqa: F401 (the tiny CLIP, base models and 8 px data)
from test_upscale_pipeline import tiny_pipe

import evaluation.upscale as upscale_eval
from evaluation.__main__ import main
from uncond.data import ImageCaptionDataset
from uncond.splits import held_out_indices


@pytest.fixture(scope="module")
def upsampler(tmp_path_factory):
    """A tiny random 8 -> 32 px upsampler folder."""
    path = tmp_path_factory.mktemp("up") / "upscale"
    tiny_pipe().save_pretrained(str(path))
    return str(path)


def run(folders, upsampler, out, *extra):  # noqa: F811
    return main(
        ["upscale", "--model", upsampler, "--clip", folders["clip"], "--data", folders["data"], "--out", str(out)]
        + ["--uncond", folders["uncond"], "--txt2img", folders["txt2img"], "--num-images", "4", "--num-samples", "3"]
        + ["--steps", "2", "--base-steps", "2", "--noise-levels", "0", "20", "--num-real", "12", "--device", "cpu"]
        + list(extra)
    )


def test_upscale_command_writes_both_tables_and_the_grid(folders, upsampler, tmp_path):  # noqa: F811
    report = run(folders, upsampler, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    methods = [row["method"] for row in report["reconstruction"]]
    assert methods == ["nearest", "bicubic", "ours, noise level 0", "ours, noise level 20"]
    held = held_out_indices(ImageCaptionDataset(folders["data"], image_size=32))
    assert report["held_out_pictures"] == len(held["skin_tone"] + held["style_pair"]) == 3  # all the tiny data has
    assert report["cascade_noise_levels"] == [20] == [report["default_noise_level"]]  # the folder's default level
    for row in report["reconstruction"]:
        assert -1 <= row["ssim"] <= 1 and row["psnr"] > 0 and row["consistency_rms"] >= 0
    assert [(r["tab"], r["method"]) for r in report["cascade"]] == [
        ("unconditional", "bicubic"),
        ("unconditional", "ours, noise level 20"),
        ("text to image", "bicubic"),
        ("text to image", "ours, noise level 20"),
    ]
    assert all(r["fid_clip"] >= 0 and r["fid_clip_tiles"] >= 0 and r["num_samples"] == 3 for r in report["cascade"])
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (4 * 32, 3 * 32)  # a row per held-out picture: 32 px, bicubic, ours, real
    assert "| bicubic |" in upscale_eval.markdown_tables(report)


def test_an_upsampler_that_returns_the_real_picture_scores_perfectly(folders, upsampler, tmp_path, monkeypatch):  # noqa: F811
    real = {}
    original = upscale_eval.reconstruction

    def remember(up, pictures, *args):
        real["pictures"] = upscale_eval.unit(pictures)
        return original(up, pictures, *args)

    monkeypatch.setattr(upscale_eval, "reconstruction", remember)
    monkeypatch.setattr(upscale_eval, "upscale_batches", lambda up, low_res, *a: real["pictures"][: len(low_res)])
    report = run(folders, upsampler, tmp_path, "--num-samples", "4")
    oracle = report["reconstruction"][2]
    assert oracle["ssim"] == pytest.approx(1.0) and oracle["psnr"] == pytest.approx(100.0)  # MSE floored at 1e-10


def test_tiles_cut_pictures_into_clip_sized_squares():
    images = torch.arange(2 * 3 * 64 * 64).reshape(2, 3, 64, 64)
    t = upscale_eval.tiles(images)
    assert (
        t.shape == (8, 3, 32, 32)
        and torch.equal(t[1], images[0, :, :32, 32:])
        and torch.equal(t[6], images[1, :, 32:, :32])
    )
