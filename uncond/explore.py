"""Exploring around one generation, for either pipeline: interpolation strips between two seeds, and comparison
grids of samplers against step counts (AUTOMATIC1111's X/Y plot).

    frames = list(interpolate_seeds(pipe, seed=0, other_seed=1, num_frames=8, num_inference_steps=25))
    save_animation([f.images[0] for f in frames], "strip.gif")            # uncond.images
    grid = comparison_grid(pipe, steps=(5, 10, 25), seed=0)              # rows: SAMPLERS; grid.image(), grid.times()

Every frame and every cell is one call of the pipeline with plain settings, so each equals the single generation
with those settings; the text-to-image pipeline takes the same calls with a prompt among the keyword arguments
(`txt2img.interpolate` adds strips between two prompts). A seed strip moves x_T along the arc between the two seeds'
noises (`uncond.noise`): the frames show that nearby noises give nearby pictures, and the ends are the two seeds.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from uncond.checks import MAX_SEED, check_choice, check_int
from uncond.pipeline import SampleOutput
from uncond.sampling import SCHEDULER_NAMES

MAX_FRAMES = 64
MAX_CELLS = 64


class Pipeline(Protocol):
    """What these functions need of a pipeline: a call that takes the sampling settings as keywords."""

    def __call__(self, **kwargs) -> SampleOutput: ...


def frame_weights(num_frames: int) -> list[float]:
    """The interpolation weights of `num_frames` frames, 0 to 1 inclusive, evenly spaced."""
    num_frames = check_int("num_frames", num_frames, 2, MAX_FRAMES)
    return [i / (num_frames - 1) for i in range(num_frames)]


def interpolate_seeds(pipe: Pipeline, seed: int, other_seed: int, num_frames: int, **kwargs) -> Iterator[SampleOutput]:
    """One image per frame, x_T slerped from `seed`'s noise to `other_seed`'s; the end frames are the plain
    generations of the two seeds. `kwargs`: the pipeline's other settings (steps, scheduler, prompt, ...)."""
    weights = frame_weights(num_frames)
    other_seed = check_int("other_seed", other_seed, 0, MAX_SEED)
    for weight in weights:
        yield pipe(seed=seed, variation_seed=other_seed, variation_strength=weight, num_images=1, **kwargs)


@dataclass(frozen=True)
class Sampler:
    """One row of a comparison grid: a scheduler and its eta, with the label shown."""

    label: str
    scheduler: str
    eta: float = 0.0


SAMPLERS = (
    Sampler("DDPM", "ddpm"),
    Sampler("DDIM, eta 0", "ddim", 0.0),
    Sampler("DDIM, eta 1", "ddim", 1.0),
    Sampler("DPM-Solver++", "dpm++"),
    Sampler("Euler", "euler"),
)
STEP_COUNTS = (5, 10, 25, 50, 100)


@dataclass
class ComparisonGrid:
    """The cells of a grid, row by row: `cells[r][c]` is `samplers[r]` with `steps[c]` steps."""

    samplers: list[Sampler]
    steps: list[int]
    cells: list[list[SampleOutput]] = field(default_factory=list)

    def times(self) -> list[list[float]]:
        """Seconds each cell took, row by row."""
        return [[cell.elapsed for cell in row] for row in self.cells]

    def image(self) -> Image.Image:
        """The cells' first images tiled: one row per sampler, one column per step count."""
        width, height = self.cells[0][0].images[0].size
        grid = Image.new("RGB", (width * len(self.steps), height * len(self.samplers)), "white")
        for r, row in enumerate(self.cells):
            for c, cell in enumerate(row):
                grid.paste(cell.images[0].convert("RGB"), (c * width, r * height))
        return grid


def check_grid(samplers, steps) -> tuple[list[Sampler], list[int]]:
    """Samplers of known schedulers and step counts, at most MAX_CELLS cells, else a ValueError naming them."""
    samplers, steps = list(samplers), list(steps)
    if not samplers or not all(isinstance(s, Sampler) for s in samplers):
        raise ValueError("samplers must be a non-empty list of Sampler rows")
    for sampler in samplers:
        check_choice("samplers", sampler.scheduler, SCHEDULER_NAMES)
    if not steps:
        raise ValueError("steps must be a non-empty list of step counts")
    steps = [check_int("steps", n, 1, 1000) for n in steps]
    if len(samplers) * len(steps) > MAX_CELLS:
        raise ValueError(f"samplers x steps must be at most {MAX_CELLS} cells, got {len(samplers) * len(steps)}")
    return samplers, steps


def comparison_cells(
    pipe: Pipeline, samplers=SAMPLERS, steps=STEP_COUNTS, **kwargs
) -> Iterator[tuple[int, int, SampleOutput]]:
    """Each cell (row, column, output) as it is done: one generation per sampler and step count, same other settings."""
    samplers, steps = check_grid(samplers, steps)
    kwargs.setdefault("num_images", 1)
    for r, sampler in enumerate(samplers):
        for c, n in enumerate(steps):
            yield r, c, pipe(scheduler=sampler.scheduler, eta=sampler.eta, num_inference_steps=n, **kwargs)


def comparison_grid(pipe: Pipeline, samplers=SAMPLERS, steps=STEP_COUNTS, **kwargs) -> ComparisonGrid:
    """The whole grid of `comparison_cells`, with each cell's time (`ComparisonGrid.times`)."""
    samplers, steps = check_grid(samplers, steps)
    grid = ComparisonGrid(samplers, steps, [[None] * len(steps) for _ in samplers])
    for r, c, cell in comparison_cells(pipe, samplers, steps, **kwargs):
        grid.cells[r][c] = cell
    return grid
