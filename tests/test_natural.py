"""Tests for evaluation.natural: natural prompts vs exact names, diversity and held-out style pairs, two judges."""

import json

import pytest
import torch

import evaluation.natural as natural
from evaluation.__main__ import main
from tests.test_evaluation import SCHEDULE, read_outputs
from tests.txt2img_fixtures import save_tiny_clip_model, tiny_text_encoder, tiny_unet, write_emoji_folder
from txt2img.pipeline import TextToImagePipeline
from uncond.data import ImageCaptionDataset

NAMES = ["red heart", "pencil", "vampire", "vampire: dark skin tone", "cat face", "rocket"]
STYLES = ["noto", "twemoji", "openmoji"]
PROMPTS = [
    {"prompt": "love", "kind": "keyword", "acceptable": ["red heart"], "held_out": None},
    {
        "prompt": "undead",
        "kind": "keyword",
        "acceptable": ["vampire", "vampire: dark skin tone"],
        "held_out": "keyword",
    },
    {"prompt": "lápiz", "kind": "language", "acceptable": ["pencil"], "held_out": None},
    {"prompt": "a drawing of a kitty", "kind": "sentence", "acceptable": ["cat face"], "held_out": "template"},
    {"prompt": "unicorn", "kind": "keyword", "acceptable": ["unicorn"], "held_out": None},  # not in the data
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny CLIP and text-to-image pipeline, 8x8 data of six emoji in three styles, and a prompts file."""

    root = tmp_path_factory.mktemp("natural")
    save_tiny_clip_model(root / "clip", image_size=8, patch_size=4)
    TextToImagePipeline(
        tiny_unet(block_out_channels=(8, 16), norm_num_groups=4), tiny_text_encoder(), SCHEDULE
    ).save_pretrained(str(root / "txt2img"))
    write_emoji_folder(root / "data", NAMES, STYLES)
    (root / "prompts.json").write_text(json.dumps({"prompts": PROMPTS}, ensure_ascii=False))
    return {name: str(root / name) for name in ("clip", "txt2img", "data", "prompts.json")}


@pytest.fixture
def some_pairs(monkeypatch):
    """Two held-out (emoji, style) pairs (six emoji are too few for the real split to pick any)."""
    pairs = [("pencil", "twemoji"), ("rocket", "noto")]
    monkeypatch.setattr(natural, "held_out", lambda dataset: {"style_pairs": pairs})
    return pairs


def test_command_writes_report_grids_and_table(folders, tmp_path, some_pairs, capsys):
    argv = ["natural", "--model", folders["txt2img"], "--clip", folders["clip"], "--data", folders["data"]]
    argv += ["--prompts", folders["prompts.json"], "--out", str(tmp_path), "--num-images", "2", "--steps", "2"]
    main(argv + ["--batch-size", "4"])
    report = read_outputs(tmp_path)
    assert report["natural"]["prompts"] == 4  # "unicorn" is not in the data
    assert report["natural"]["exact_names"] == 4 and report["judges"] == ["CLIP", "nearest real image"]
    for judge in report["judges"]:
        row = report["natural"][judge]
        assert set(row["by_kind"]) == {"keyword", "language", "sentence"}
        assert all(0 <= row[k] <= 1 for k in ("natural_top5", "exact_top5", "held_out", "seen"))
        assert (
            report["held_out_style_pairs"][judge]["style_and_emoji"] <= report["held_out_style_pairs"][judge]["style"]
        )
    assert report["diversity"]["prompts"] == 4 and report["diversity"]["cosine"]["real"] > 0
    ceiling = report["natural"]["CLIP on the real images"]
    assert set(ceiling) == {"natural_top5", "exact_top5"} and all(0 <= v <= 1 for v in ceiling.values())
    names = {p.name for p in tmp_path.iterdir()}
    assert {"samples_natural.png", "samples_exact.png", "samples_held_out_styles.png"} <= names
    printed = capsys.readouterr().out
    assert "| natural prompts, top 5 |" in printed and "| CLIP on the real pictures (its ceiling)" in printed


def test_real_images_as_samples_are_judged_right_by_the_pixel_judge(folders, tmp_path, some_pairs, monkeypatch):
    """A model that returns a real image of the right emoji in the asked style (else noto) scores 100% by pixels."""
    data = ImageCaptionDataset(folders["data"])
    image = {(c, s): x for c, s, x in zip(data.captions, data.styles, data.images)}
    by_prompt = {p["prompt"]: p["acceptable"][0] for p in PROMPTS[:4]}

    def fake_generate(pipe, prompts, num_images, *args):
        picked = []
        for prompt in prompts:
            name, _, words = prompt.partition(", ")
            style = next((s for s in STYLES if words and words.startswith(s)), None)
            name = by_prompt.get(prompt, name)
            picked += [image[(name, style or STYLES[j % len(STYLES)])] for j in range(num_images)]
        return torch.stack(picked)

    monkeypatch.setattr(natural, "generate", fake_generate)
    report = natural.evaluate_natural(
        folders["txt2img"],
        folders["clip"],
        folders["data"],
        str(tmp_path),
        folders["prompts.json"],
        num_images=3,
        log=lambda *_: None,
    )
    pixels = report["natural"]["nearest real image"]
    assert pixels["natural_top5"] == pixels["exact_top5"] == pixels["natural_vs_exact"] == 1.0
    assert report["held_out_style_pairs"]["nearest real image"] == {
        "style_and_emoji": 1.0,
        "style": 1.0,
        "emoji_top5": 1.0,
    }
    # three seeds showing the three real styles: exactly the real spread
    assert report["diversity"]["rms"]["ratio"] == pytest.approx(1.0) and report["diversity"]["cosine"][
        "ratio"
    ] == pytest.approx(1.0, abs=1e-3)
    assert report["met"]["nearest real image"] == {
        "natural_top5": True,
        "natural_vs_exact": True,
        "held_out_style_pairs": True,
    }
    assert report["met"]["diversity_ratio"] is True


def test_real_image_share_averages_per_prompt_over_its_real_pictures():
    """Seven candidates, six real pictures; each ranks its own emoji first, except the two that rank it last."""
    groups = natural.EmojiGroups(["a", "b", "c", "d", "e", "f", "g"])
    real_names = ["a", "a", "a", "a", "b", "c"]
    scores = torch.eye(7)[[groups.index[n] for n in real_names]]  # (6 pictures, 7 groups): own emoji on top
    scores[[1, 5]] = 1 - scores[[1, 5]]  # picture 1 (an "a") and picture 5 (the "c") rank theirs last
    real_of = {"a": [0, 1, 2, 3], "b": [4], "c": [5]}
    # "a": 3 of 4, "b": 1 of 1, "c": 0 of 1; "x" has no picture and is not counted
    assert natural.real_image_share(scores, real_of, groups, [["a"], ["b"], ["c"], ["x"]]) == round(1.75 / 3, 4)
    # a prompt with two acceptable emoji judges the pictures of both against both
    assert natural.real_image_share(scores, real_of, groups, [["a", "c"]]) == round(3 / 5, 4)
    assert natural.real_image_share(scores, real_of, groups, [["x"]]) is None


def test_bad_arguments_are_named(folders, tmp_path):
    with pytest.raises(ValueError, match="num_images must be an int >= 2"):
        natural.evaluate_natural(folders["txt2img"], folders["clip"], folders["data"], str(tmp_path), num_images=1)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"prompts": [{"prompt": "x"}]}))
    with pytest.raises(ValueError, match="expected a 'prompts' list"):
        natural.read_prompts(str(bad))
