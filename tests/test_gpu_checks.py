"""bench/gpu_checks.py, the pieces of bench/gpu.sh that run without a GPU: synthetic data and the throughput rows."""

import json
import os
import subprocess

import pytest

from bench.gpu_checks import synthetic_data, throughput
from uncond.dataset import ImageCaptionDataset


def test_synthetic_data_is_an_image_folder_at_both_sizes(tmp_path):
    synthetic_data(str(tmp_path), count=4)
    for size in (32, 128):
        data = ImageCaptionDataset(str(tmp_path / str(size)))
        assert data.images.shape == (4, 3, size, size)
        assert data.captions[1] == "square 1" and data.caption_lists[0] == ["circle 0", "circle"]
        assert data.images[0, :, 0, 0].tolist() == [255, 255, 255]  # drawn on white


def test_throughput_is_measured_between_the_middle_and_the_last_log_row(tmp_path):
    # a run of batch 8: 10 steps in 2 s, then 10 more in 1 s (items_per_s is the running mean since the start)
    rows = [{"step": 10, "loss": 1.0, "items_per_s": 80 / 2}, {"step": 20, "loss": 0.5, "items_per_s": 160 / 3}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"eval": {"step": 20}}\n')
    (tmp_path / "train_config.json").write_text(json.dumps({"batch_size": 4, "gradient_accumulation_steps": 2}))
    row = throughput(str(tmp_path))
    assert row["items_per_s"] == pytest.approx(80.0) and row["steps_per_s"] == pytest.approx(10.0)
    assert (row["steps"], row["batch"], row["loss"]) == (20, 8, 0.5)


def test_the_script_is_valid_bash():
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "gpu.sh")
    assert subprocess.run(["bash", "-n", script], check=False).returncode == 0
