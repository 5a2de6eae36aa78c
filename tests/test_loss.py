"""Tests for evaluation.loss: the held-out denoising loss of a text-to-image pipeline folder."""

import json

import pytest
import torch

import evaluation.loss as loss_module
from evaluation.__main__ import main
from tests.test_evaluation import SCHEDULE
from tests.txt2img_fixtures import tiny_text_encoder, tiny_unet, write_emoji_folder
from txt2img.pipeline import TextToImagePipeline
from uncond.data import ImageCaptionDataset

NAMES = ["red heart", "pencil", "rocket"]
STYLES = ["noto", "openmoji-line"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny pipeline whose UNet outputs zeros (epsilon targets) and 8x8 data of three emoji in two styles."""
    root = tmp_path_factory.mktemp("loss")
    unet = tiny_unet(block_out_channels=(8, 16), norm_num_groups=4)
    with torch.no_grad():
        for parameter in unet.conv_out.parameters():
            parameter.zero_()
    TextToImagePipeline(unet, tiny_text_encoder(), {**SCHEDULE, "prediction_type": "epsilon"}).save_pretrained(
        str(root / "txt2img")
    )
    data = write_emoji_folder(root / "data", NAMES, STYLES)
    return {"txt2img": str(root / "txt2img"), "data": data}


@pytest.fixture
def held_out_all(monkeypatch):
    """Every image held out (three emoji are too few for the real split to pick any)."""
    monkeypatch.setattr(
        loss_module, "held_out_indices", lambda dataset: {"skin_tone": [], "style_pair": [0, 1, 2, 3, 4, 5]}
    )


def test_a_zero_model_has_the_mean_squared_noise_as_its_loss(folders, held_out_all):
    report = loss_module.held_out_loss(folders["txt2img"], folders["data"], batch_size=4, log=lambda *_: None)
    assert report["images"] == 6 and report["levels"] == list(range(50, 1000, 100))
    # epsilon targets and a zero output: the loss is E[eps^2] = 1 (6 x 192 draws per level, 10 levels)
    assert report["loss"] == pytest.approx(1.0, abs=0.06)
    assert len(report["per_level"]) == 10 and all(0.8 < v < 1.2 for v in report["per_level"])
    again = loss_module.held_out_loss(folders["txt2img"], folders["data"], batch_size=6, log=lambda *_: None)
    assert again["per_level"] == pytest.approx(report["per_level"], abs=1e-6)  # fixed noise, any batch size


def test_held_out_images_are_captioned_with_their_style(folders):
    dataset = ImageCaptionDataset(folders["data"])
    assert loss_module.held_out_captions(dataset, [0, 1]) == ["red heart, noto style", "red heart, line art"]


def test_no_held_out_images_and_bad_batch_sizes_are_named(folders, monkeypatch):
    with pytest.raises(ValueError, match="batch_size"):
        loss_module.held_out_loss(folders["txt2img"], folders["data"], batch_size=0)
    monkeypatch.setattr(loss_module, "held_out_indices", lambda dataset: {"skin_tone": [], "style_pair": []})
    with pytest.raises(ValueError, match="no held-out images"):
        loss_module.held_out_loss(folders["txt2img"], folders["data"])


def test_command_writes_the_report(folders, held_out_all, tmp_path, capsys):
    report = main(["loss", "--model", folders["txt2img"], "--data", folders["data"], "--out", str(tmp_path)])
    assert json.loads((tmp_path / "report.json").read_text())["loss"] == report["loss"]
    assert "held-out loss" in capsys.readouterr().out
