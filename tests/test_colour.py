"""Tests for evaluation.colour: the hue judge on drawn shapes, the colour adherence command."""

import pytest
import torch

from evaluation.__main__ import main
from evaluation.colour import COLOURS, MONOCHROME, judge_colour, prompts_of, summarise
from tests.test_evaluation import read_outputs
from tests.test_natural import folders  # noqa: F401 (the tiny pipeline, CLIP, data and prompts)


def disc(rgb, outline=None, size=32) -> torch.Tensor:
    """uint8 (3, size, size): a filled disc of colour `rgb` on white, with a 2 px outline of `outline` if given."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((x - size / 2 + 0.5) ** 2 + (y - size / 2 + 0.5) ** 2).sqrt()
    image = torch.full((3, size, size), 255, dtype=torch.uint8)
    image[:, r < size * 0.4] = torch.tensor(rgb, dtype=torch.uint8)[:, None]
    if outline is not None:
        ring = (r >= size * 0.4 - 2) & (r < size * 0.4)
        image[:, ring] = torch.tensor(outline, dtype=torch.uint8)[:, None]
    return image


@pytest.mark.parametrize(
    "rgb, colour",
    [
        ((221, 46, 68), "red"),  # Twemoji's red heart
        ((255, 152, 0), "orange"),  # Noto's orange heart
        ((253, 203, 88), "yellow"),
        ((120, 177, 89), "green"),
        ((93, 173, 236), "blue"),
        ((170, 142, 214), "purple"),
        ((121, 85, 72), "brown"),  # Noto's brown heart: a dull, dark orange-red
        ((40, 40, 40), "black"),
    ],
)
def test_the_hue_judge_names_the_colour_of_a_shape(rgb, colour):
    assert judge_colour(disc(rgb)) == colour
    assert judge_colour(disc(rgb, outline=(0, 0, 0))) == colour  # an outline does not change the fill's colour


def test_white_shapes_and_blank_pictures_are_white():
    assert judge_colour(disc((235, 235, 235), outline=(150, 150, 150))) == "white"
    assert judge_colour(torch.full((3, 32, 32), 255, dtype=torch.uint8)) == "white"
    with pytest.raises(ValueError, match="RGB"):
        judge_colour(torch.zeros(1, 8, 8, dtype=torch.uint8))


def test_prompts_and_summary():
    prompts = prompts_of()
    assert (
        len(prompts) == 3 * 9
        and prompts[0] == ("red heart", "red", "heart")
        and ("white square", "white", "square") in prompts
    )
    by_colour = {c: {"right": 3 if c in ("red", "blue") else 1} for c in COLOURS + MONOCHROME}
    summary = summarise(by_colour, 4)
    assert summary["colours_right"] == 2 and summary["colours"] == 7  # most of 4 images: 3 or 4
    assert summary["images_right"] == 3 + 3 + 5 and summary["black_and_white_right"] == {"black": 1, "white": 1}


def test_command_writes_report_and_table(folders, tmp_path, capsys):  # noqa: F811
    argv = ["colour", "--model", folders["txt2img"], "--data", folders["data"], "--out", str(tmp_path)]
    report = main(argv + ["--num-images", "2", "--steps", "2", "--num-candidates", "1"])
    assert read_outputs(tmp_path)["task"] == "colour" and (tmp_path / "grid.png").is_file()
    assert set(report["by_shape"]) == {"heart", "circle", "square"}
    for shape, s in report["summary"].items():
        assert s["colours"] == 7 and 0 <= s["images_right"] <= 14
        assert all(len(report["by_shape"][shape][c]["found"]) == 2 for c in COLOURS)
    assert report["judge_on_real_pictures"]["heart"] is not None  # the tiny data has a red heart in noto and twemoji
    assert "| heart |" in capsys.readouterr().out
