"""The README's Explore pictures, made once with the shipped models through the tab's own handlers, and the time of
the tab's default requests (what a person gets pressing Interpolate or Compare without changing anything).

    nice python assets/explore/make_pictures.py          # writes assets/explore/*.png, *.gif; prints the seconds
    nice python assets/explore/make_pictures.py prompt   # only the prompt strips (or seed, grid)
"""

import os
import shutil
import sys
import time

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from webapp.explore_tab import DEFAULT_GRID_STEPS, STEP_CHOICES, Explore  # noqa: E402
from webapp.models import Models  # noqa: E402
from webapp.streaming import ResultFolders  # noqa: E402

MODELS = Models.load(os.path.join(os.path.dirname(os.path.dirname(HERE)), "weights"), [])
EXPLORE = Explore(MODELS, ResultFolders(keep=8), list(MODELS.styles().values()))
MODEL = MODELS.default_uncond
ALL_SAMPLERS = ["DDPM", "DDIM, eta 0", "DDIM, eta 1", "DPM-Solver++", "Euler"]


def last(outputs):
    """The final output of a streaming handler, and the seconds it took."""
    started = time.perf_counter()
    final = None
    for output in outputs:
        final = output
    return final, time.perf_counter() - started


def strip_picture(entries, name: str) -> None:
    """The frames side by side (as the page's PNGs: 4x) and the GIF the page offers."""
    frames = [Image.open(path).convert("RGB") for path, _ in entries]
    picture = Image.new("RGB", (sum(f.width for f in frames) + 4 * (len(frames) - 1), frames[0].height), "white")
    for i, frame in enumerate(frames):
        picture.paste(frame, (i * (frame.width + 4), 0))
    picture.save(os.path.join(HERE, f"{name}.png"), optimize=True)


def prompt_strips() -> None:
    # the tab's defaults: Text to image, "red heart" -> "green heart", 8 frames of DDIM 20, guidance 4, seed 0
    for other, name in (("green heart", "prompt_strip"), ("grinning face", "prompt_strip_face")):
        (entries, animations, _), seconds = last(
            EXPLORE.interpolate(
                "Text to image", MODEL, "red heart", "", 4.0, 0, "Two prompts", 1, other, 8, "DDIM", 20, 0.0
            )  # fmt: skip
        )
        print(f"prompt strip 'red heart' -> {other!r} (8 frames, DDIM 20, the tab's defaults): {seconds:.1f} s")
        strip_picture(entries, name)
        shutil.copy(animations[0], os.path.join(HERE, f"{name}.gif"))


def seed_strips() -> None:
    (entries, animations, _), seconds = last(
        EXPLORE.interpolate("Unconditional", MODEL, "", "", 4.0, 0, "Two seeds", 1, "", 8, "DDIM", 50, 0.0)
    )
    print(f"seed strip (8 frames, DDIM 50 eta 0, unconditional): {seconds:.1f} s")
    strip_picture(entries, "seed_strip")
    (entries, animations, _), seconds = last(
        EXPLORE.interpolate("Text to image", MODEL, "cat face", "", 2.0, 0, "Two seeds", 1, "", 8, "DDIM", 20, 0.0)
    )
    print(f"seed strip (8 frames, DDIM 20, 'cat face' at guidance 2): {seconds:.1f} s")
    strip_picture(entries, "seed_strip_prompt")


def grids() -> None:
    (grid, table, _), seconds = last(
        EXPLORE.compare("Text to image", MODEL, "red heart", "", 4.0, 0, ALL_SAMPLERS, DEFAULT_GRID_STEPS)
    )
    print(f"default grid (5 samplers x {DEFAULT_GRID_STEPS} steps, text to image): {seconds:.1f} s")
    print(table.to_string(index=False))
    (grid, table, _), seconds = last(
        EXPLORE.compare("Text to image", MODEL, "red heart", "", 4.0, 0, ALL_SAMPLERS, STEP_CHOICES)
    )
    print(f"full grid (5 samplers x {STEP_CHOICES} steps, text to image): {seconds:.1f} s")
    print(table.to_string(index=False))
    Image.open(grid).save(os.path.join(HERE, "grid.png"), optimize=True)


PICTURES = {"prompt": prompt_strips, "seed": seed_strips, "grid": grids}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(PICTURES):  # e.g. `... make_pictures.py prompt` for the prompt strips only
        PICTURES[name]()
