"""Seed strips and comparison grids: each frame and cell is the single generation with its settings; animations."""

import numpy as np
import pytest
import torch
from PIL import Image

from uncond.explore import SAMPLERS, Sampler, comparison_cells, comparison_grid, frame_weights, interpolate_seeds
from uncond.images import save_animation
from uncond.pipeline import UnconditionalPipeline
from uncond.unet import UNet, UNetConfig

SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    config = UNetConfig(sample_size=8, block_out_channels=(8, 16), layers_per_block=1, attention_resolutions=(4,),
                        norm_num_groups=4, attention_head_dim=8)  # fmt: skip
    return UnconditionalPipeline(UNet(config), SCHEDULE, name="tiny")


def pixels(result) -> np.ndarray:
    return np.stack([np.asarray(image) for image in result.images])


def test_frame_weights_run_from_0_to_1():
    assert frame_weights(2) == [0.0, 1.0] and frame_weights(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    for bad in (1, 65, 2.5, "4"):
        with pytest.raises(ValueError, match="num_frames"):
            frame_weights(bad)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_seed_strip_ends_are_the_two_plain_generations(pipe, scheduler):
    kwargs = dict(num_inference_steps=4, scheduler=scheduler, eta=1.0)
    frames = list(interpolate_seeds(pipe, 3, 11, 5, **kwargs))
    assert len(frames) == 5 and all(len(f.images) == 1 for f in frames)
    assert np.array_equal(pixels(frames[0]), pixels(pipe(seed=3, num_images=1, **kwargs)))
    assert np.array_equal(pixels(frames[-1]), pixels(pipe(seed=11, num_images=1, **kwargs)))
    assert [f.settings.get("variation_strength", 0.0) for f in frames] == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="other_seed"):
        list(interpolate_seeds(pipe, 3, -1, 3, **kwargs))


def test_the_grid_cells_are_single_generations_with_their_times(pipe):
    grid = comparison_grid(pipe, steps=(2, 5), seed=7)
    assert [s.label for s in grid.samplers] == [s.label for s in SAMPLERS] and grid.steps == [2, 5]
    for r, sampler in enumerate(SAMPLERS):
        for c, n in enumerate((2, 5)):
            cell = grid.cells[r][c]
            single = pipe(scheduler=sampler.scheduler, eta=sampler.eta, num_inference_steps=n, seed=7, num_images=1)
            assert np.array_equal(pixels(cell), pixels(single)), (sampler, n)
            assert cell.settings["scheduler"] == sampler.scheduler and cell.settings["steps"] == n
    times = grid.times()
    assert len(times) == 5 and all(len(row) == 2 and all(t > 0 for t in row) for row in times)
    image = grid.image()
    assert image.size == (2 * 8, 5 * 8)
    assert np.array_equal(np.asarray(image)[8:16, 8:16], np.asarray(grid.cells[1][1].images[0]))
    assert not np.array_equal(pixels(grid.cells[1][1]), pixels(grid.cells[2][1]))  # eta 0 and 1 differ


def test_the_cells_stream_in_row_order_and_bad_grids_are_refused(pipe):
    cells = list(comparison_cells(pipe, [Sampler("x", "ddim")], [1, 2], seed=0))
    assert [(r, c) for r, c, _ in cells] == [(0, 0), (0, 1)]
    for samplers, steps, argument in (([], [5], "samplers"), ([Sampler("x", "plms")], [5], "samplers"),
                                      (SAMPLERS, [], "steps"), (SAMPLERS, [0], "steps"), (SAMPLERS, [1] * 13, "cells")):  # fmt: skip
        with pytest.raises(ValueError, match=argument):
            comparison_grid(pipe, samplers, steps)


@pytest.mark.parametrize("extension", [".gif", ".webp"])
def test_an_animation_holds_every_frame(tmp_path, extension):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (8, 8), c) for c in colours]
    path = tmp_path / f"strip{extension}"
    save_animation(frames, str(path), duration_ms=100, scale=4, boomerang=True)
    with Image.open(path) as animation:
        assert animation.n_frames == 4 and animation.size == (32, 32)  # 0 1 2 1
        seen = []
        for i in range(animation.n_frames):
            animation.seek(i)
            seen.append(animation.convert("RGB").getpixel((5, 5)))
    assert seen == [colours[0], colours[1], colours[2], colours[1]]
    with pytest.raises(ValueError, match="path"):
        save_animation(frames, str(tmp_path / "strip.png"))
