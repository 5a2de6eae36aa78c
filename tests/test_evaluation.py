"""The evaluate command: fixed caption lists, reports and plots from tiny random models, known answers when samples are copies."""

import json

import pytest
import torch
from PIL import Image

import evaluation.common as common
import evaluation.txt2img as ev_txt2img
import evaluation.uncond as ev_uncond
from evaluation.__main__ import main
from evaluation.txt2img import evaluation_captions
from tests.txt2img_fixtures import save_tiny_clip_model, tiny_text_encoder, tiny_unet
from txt2img.pipeline import TextToImagePipeline
from uncond.captions import SKIN_TONES
from uncond.metrics import filled_rate
from uncond.pipeline import UnconditionalPipeline
from uncond.scheduler import DDPMScheduler
from uncond.splits import held_out_skin_tones
from uncond.unet import UNet, UNetConfig

BASES = ["waving hand", "thumbs up", "ear", "nose", "baby", "farmer", "cook", "artist", "pilot", "judge"]
OTHER = [
    "red heart",
    "cat face",
    "flag: Japan",
    "grinning face",
    "waving hand",
    "handshake: light skin tone, dark skin tone",
]
SCHEDULE = dict(DDPMScheduler(beta_schedule="squaredcos_cap_v2").config)


def emoji_captions(tones=SKIN_TONES):
    return [f"{base}: {tone}" for base in BASES for tone in tones] + OTHER


# ---- the fixed caption lists ----


def test_evaluation_captions_are_fixed_and_exclude_held_out():
    captions = emoji_captions()
    held_out = held_out_skin_tones(captions)
    chosen = evaluation_captions(captions, 20, exclude=held_out)
    assert len(set(chosen)) == 20 and not set(chosen) & set(held_out)
    assert chosen == evaluation_captions(list(reversed(captions)) + captions, 20, exclude=held_out)
    assert evaluation_captions(captions, 10, exclude=held_out) == chosen[:10]  # a longer list extends a shorter one
    with pytest.raises(ValueError, match="n must be"):
        evaluation_captions(captions, len(captions), exclude=held_out)


# ---- tiny models and data ----


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A CLIP (both towers), an unconditional model, a text-to-image pipeline and 8x8 data, all tiny and random."""
    root = tmp_path_factory.mktemp("evaluate")
    save_tiny_clip_model(root / "clip", image_size=16, patch_size=8)

    unet = UNet(
        UNetConfig(
            sample_size=8,
            block_out_channels=(8, 16),
            layers_per_block=1,
            attention_resolutions=(4,),
            norm_num_groups=4,
            attention_head_dim=8,
        )
    )
    unet.save_pretrained(str(root / "uncond"))
    (root / "uncond" / "scheduler_config.json").write_text(json.dumps(SCHEDULE))
    TextToImagePipeline(
        tiny_unet(block_out_channels=(8, 16), norm_num_groups=4), tiny_text_encoder(), SCHEDULE
    ).save_pretrained(str(root / "txt2img"))

    data = root / "data"
    data.mkdir()
    generator = torch.Generator().manual_seed(0)
    with open(data / "metadata.jsonl", "w") as meta:
        for i, caption in enumerate(emoji_captions(tones=SKIN_TONES[:3])):
            pixels = (torch.rand(8, 8, 3, generator=generator) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(data / f"{i}.png")
            meta.write(json.dumps({"file_name": f"{i}.png", "text": caption}) + "\n")
    return {name: str(root / name) for name in ("clip", "uncond", "txt2img", "data")}


def read_outputs(out):
    report = json.loads((out / "report.json").read_text())
    with Image.open(out / "plot.png") as plot:
        assert plot.format == "PNG" and plot.width > 600
    return report


def test_uncond_command_writes_report_plot_and_grids(folders, tmp_path):
    main(
        [
            "uncond",
            "--model",
            folders["uncond"],
            "--clip",
            folders["clip"],
            "--data",
            folders["data"],
            "--out",
            str(tmp_path),
            "--num-samples",
            "9",
            "--samplers",
            "ddpm:3",
            "ddim:2",
            "ddim:4",
            "ddim:4:1",
            "--batch-size",
            "4",
        ]
    )
    report = read_outputs(tmp_path)
    assert [(r["sampler"], r["steps"], r["eta"]) for r in report["results"]] == [
        ("ddpm", 3, 0),
        ("ddim", 2, 0),
        ("ddim", 4, 0),
        ("ddim", 4, 1),
    ]
    assert report["num_samples"] == 9 and report["num_training_images"] == 36 and report["image_size"] == 8
    for row in report["results"] + [report["reference_data_halves"]]:
        assert row["fid_clip"] >= 0 and 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    for row in report["results"]:
        assert (
            row["memorisation_rate"] == 0.0 and row["nearest_distance_median"] > 0.1
        )  # an untrained model draws noise
    assert {"samples_ddpm3.png", "samples_ddim2.png", "samples_ddim4.png", "samples_ddim4_eta1.png"} <= {
        p.name for p in tmp_path.iterdir()
    }


def test_uncond_samples_that_copy_the_data_are_memorised(folders, tmp_path, monkeypatch):
    data = ev_uncond.ImageCaptionDataset(folders["data"]).images
    copies = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in data[:12]]
    monkeypatch.setattr(ev_uncond, "generate_uncond", lambda *args: copies)
    report = ev_uncond.evaluate_uncond(
        folders["uncond"],
        folders["clip"],
        folders["data"],
        str(tmp_path),
        num_samples=12,
        samplers=["ddim:2"],
        batch_size=5,
        log=lambda *_: None,
    )
    row = report["results"][0]
    assert row["memorisation_rate"] == 1.0 and row["nearest_distance_median"] == pytest.approx(0.0, abs=1e-6)
    assert row["precision"] == 1.0  # every sample is a data point
    assert row["filled_rate"] == filled_rate(data[:12].float() / 255)  # copies fill their frames as the data does
    assert report["reference_data_halves"]["filled_rate"] == filled_rate(data.float() / 255)


def test_uncond_generation_is_seeded_and_batched(folders):
    pipe = UnconditionalPipeline.from_pretrained(folders["uncond"], device="cpu")
    first = common.to_uint8(ev_uncond.generate_uncond(pipe, 5, "ddim", 2, 2, seed=3))
    again = common.to_uint8(ev_uncond.generate_uncond(pipe, 5, "ddim", 2, 2, seed=3))
    other = common.to_uint8(ev_uncond.generate_uncond(pipe, 5, "ddim", 2, 2, seed=4))
    assert first.shape == (5, 3, 8, 8) and torch.equal(first, again) and not torch.equal(first, other)


def test_txt2img_command_writes_report_with_held_out_pairs(folders, tmp_path):
    main(
        [
            "txt2img",
            "--model",
            folders["txt2img"],
            "--clip",
            folders["clip"],
            "--data",
            folders["data"],
            "--out",
            str(tmp_path),
            "--captions",
            "6",
            "--guidance-scales",
            "1",
            "3",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--precision",
            "bf16",
        ]
    )
    report = read_outputs(tmp_path)
    assert report["precision"] == "bf16"
    held_out = held_out_skin_tones(emoji_captions(tones=SKIN_TONES[:3]))
    assert report["held_out_captions"] == held_out and report["num_held_out"] == len(held_out) > 0
    assert len(report["captions"]) == 6 and not set(report["captions"]) & set(held_out)
    assert report["num_candidates"] == 36 and report["chance_top5"] == 5 / 36
    assert [r["guidance_scale"] for r in report["results"]] == [1.0, 3.0]
    for row in report["results"] + [report["reference_real_images"]]:
        for metrics in (row, row["held_out"]):
            assert 0 <= metrics["top1"] <= metrics["top5"] <= 1 and 0 <= metrics["clip_score"] <= 100
    assert {"samples_guidance1.png", "samples_guidance3.png"} <= {p.name for p in tmp_path.iterdir()}


def test_txt2img_real_images_as_samples_score_as_the_reference(folders, tmp_path, monkeypatch):
    data = ev_uncond.ImageCaptionDataset(folders["data"])
    by_caption = {c: Image.fromarray(image.permute(1, 2, 0).numpy()) for c, image in zip(data.captions, data.images)}
    monkeypatch.setattr(ev_txt2img, "generate_txt2img", lambda pipe, prompts, *args: [by_caption[p] for p in prompts])
    report = ev_txt2img.evaluate_txt2img(
        folders["txt2img"],
        folders["clip"],
        folders["data"],
        str(tmp_path),
        num_captions=10,
        guidance_scales=[2.0],
        log=lambda *_: None,
    )
    row, reference = report["results"][0], report["reference_real_images"]
    assert (
        row["top1"] == reference["top1"]
        and row["top5"] == reference["top5"]
        and row["held_out"] == reference["held_out"]
    )
    assert row["clip_score"] == pytest.approx(reference["clip_score"])


@pytest.mark.parametrize("spec", ["plms:10", "ddim:0", "ddim:x", "ddim:50:2", "ddim:50:x", "ddpm:1000:1"])
def test_bad_sampler_settings_are_refused(spec):
    with pytest.raises(ValueError, match="sampler must look like"):
        common.parse_sampler(spec)


def test_sampler_settings_parse():
    assert common.parse_sampler("ddim:50") == ("ddim", 50, 0.0) and common.parse_sampler("ddim:50:1") == (
        "ddim",
        50,
        1.0,
    )
    assert common.parse_sampler("ddpm:1000") == ("ddpm", 1000, 0.0)


def test_bad_arguments_are_named(folders, tmp_path):
    with pytest.raises(ValueError, match="sampler must look like"):
        ev_uncond.evaluate_uncond(
            folders["uncond"], folders["clip"], folders["data"], str(tmp_path), samplers=["plms:10"]
        )
    with pytest.raises(ValueError, match="num_samples"):
        ev_uncond.evaluate_uncond(folders["uncond"], folders["clip"], folders["data"], str(tmp_path), num_samples=3)
    with pytest.raises(ValueError, match="precision must be"):
        ev_uncond.evaluate_uncond(
            folders["uncond"], folders["clip"], folders["data"], str(tmp_path), num_samples=5, precision="fp8"
        )
    with pytest.raises(ValueError, match="n must be"):
        ev_txt2img.evaluate_txt2img(
            folders["txt2img"], folders["clip"], folders["data"], str(tmp_path), num_captions=1000
        )
