"""Tests for evaluation.ablation: each lever's config differs from the baseline's in its own fields only."""

import dataclasses

import pytest

from evaluation.ablation import LEVERS, lever_config, table
from txt2img.train import TextToImageTrainConfig


def base():
    return TextToImageTrainConfig(clip="weights/clip", max_steps=4200, warmup_steps=100, seed=4, init_from="x")


def test_levers_differ_from_the_baseline_in_their_own_fields_only():
    baseline = dataclasses.asdict(lever_config(base(), "baseline", 200, 5))
    assert baseline["max_steps"] == 200 and baseline["seed"] == 5 and baseline["warmup_steps"] == 50
    assert baseline["init_from"].endswith("weights/txt2img/unet") and baseline["clip"].endswith("weights/clip")
    for lever, fields in LEVERS.items():
        config = dataclasses.asdict(lever_config(base(), lever, 200, 5))
        changed = {k for k in config if config[k] != baseline[k]}
        assert changed == {k for k, v in fields.items() if baseline[k] != v}, lever


def test_an_unknown_lever_is_named():
    with pytest.raises(ValueError, match="lever"):
        lever_config(base(), "dropout", 200, 5)


def test_table_shows_each_levers_change_in_exact_names_by_pixels():
    row = dict(
        held_out_loss=0.1, exact_CLIP=0.3, natural_pixels=0.1, natural_CLIP=0.1, diversity=0.8, train_seconds=600
    )
    rows = [{**row, "lever": "baseline", "exact_pixels": 0.2}, {**row, "lever": "min_snr", "exact_pixels": 0.25}]
    lines = table(rows).splitlines()
    assert lines[2].startswith("| baseline | 0.1000 | 20.0% / 30.0%")
    assert "25.0% (+5.0) / 30.0%" in lines[3] and lines[3].endswith("| 10 |")
