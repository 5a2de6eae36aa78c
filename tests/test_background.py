"""Tests for evaluation.background: how far corners are from white, the detail a picture holds beyond 32 px."""

import torch

from evaluation.background import corner_levels, detail_rms, markdown_table


def test_corner_levels_read_the_four_corners():
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    assert corner_levels(images) == 0
    images[:, :, 12:20, 12:20] = 0  # a drawing in the middle does not count
    assert corner_levels(images) == 0
    images[0, :, :8, :8] = 215  # one corner of one picture 40 levels off: 40 / 8 on average
    assert corner_levels(images) == 5.0


def test_detail_is_what_the_low_res_version_lacks():
    flat = torch.full((1, 3, 32, 32), 200, dtype=torch.uint8)
    assert detail_rms(flat) == 0
    y, x = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = (((x + y) % 2) * 255).to(torch.uint8).expand(1, 3, 32, 32)  # 1 px detail: gone at 8 px
    smooth = (x * 8).clamp(max=255).to(torch.uint8).expand(1, 3, 32, 32)  # a slow ramp: kept at 8 px
    assert detail_rms(checker) > 100 > 10 > detail_rms(smooth)


def test_the_table_has_a_row_per_measurement():
    report = {"rows": [{"tab": "text to image", "sampling": "clipped", "corners": 4.4, "detail": 20.9}]}
    assert "| text to image | clipped | 4.4 | 20.9 |" in markdown_table(report)
