"""The Explore tab: interpolation strips (two seeds, or two prompts) and comparison grids (samplers x step counts).

    explore = explore_tab(MODELS, RESULTS, STYLE_NAMES, gpu, CONCURRENCY)   # inside the gr.Blocks; app.py

Its two API endpoints take the values as sent (preprocess=False) and check every field, each message naming it:

    /interpolate (source, model, prompt, negative_prompt, guidance_scale, seed,
                  between, other_seed, other_prompt, num_frames, scheduler, steps, eta)
        -> (frames gallery, [GIF, WebP] files, settings JSON); frames arrive one by one
    /compare     (source, model, prompt, negative_prompt, guidance_scale, seed, samplers, steps)
        -> (grid PNG, times table, settings JSON); the grid picture is sent again after every cell

source: "Unconditional" (the model named by `model`) or "Text to image" (prompt, negative prompt, guidance scale);
between: "Two seeds" (seed -> other_seed) or "Two prompts" (prompt -> other_prompt, one seed; text to image only);
samplers: labels of uncond.explore.SAMPLERS rows; steps: step counts out of STEP_CHOICES. The work of one request is
bounded (frames x steps, and the grid's total steps), so a request cannot hold the sampling worker for long.
"""

import json
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from uncond.checks import MAX_SEED, check_choice, check_int, check_text, shown
from uncond.explore import SAMPLERS
from uncond.images import save_animation
from webapp.checks import page_errors
from webapp.controls import (
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    prompt_fields,
    sampling_fields,
    scheduler_controls,
    seed_control,
)
from webapp.grid_picture import grid_picture
from webapp.models import ANY_STYLE, Models
from webapp.streaming import ResultFolders, display_scale, sampling_error, save_png

SOURCES = ["Unconditional", "Text to image"]
BETWEEN = ["Two seeds", "Two prompts"]
MAX_FRAMES = 16
MAX_STRIP_STEPS = 800  # frames x steps of one strip: 16 frames of 50 steps
STEP_CHOICES = [5, 10, 25, 50, 100]
DEFAULT_GRID_STEPS = [
    5,
    10,
    25,
]  # on this CPU about a minute for the five rows with a prompt; all five columns: minutes
MAX_GRID_STEPS = len(SAMPLERS) * sum(STEP_CHOICES)  # the whole grid, every row and column: 950 model steps
SAMPLER_ROWS = {sampler.label: sampler for sampler in SAMPLERS}
FRAME_MS = 200  # the animation's time per frame


@dataclass(frozen=True)
class Source:
    """What a strip or grid samples from: a named unconditional model, or the text-to-image model with a prompt."""

    model: str | None
    prompt: object  # webapp.models.Prompt, None for the unconditional model


class Explore:
    """The tab's two handlers, over the app's models and result folders."""

    def __init__(self, models: Models, results: ResultFolders, styles: list[str]):
        self.models = models
        self.results = results
        self.styles = styles

    def source_fields(self, source, model, prompt, negative_prompt, guidance_scale) -> Source:
        """The Source and Model fields (and with text the prompt's), checked."""
        source = check_choice("Source", source, SOURCES)
        model = check_choice("Model", model, list(self.models.uncond))  # a name from the list, never a path
        if source == "Unconditional":
            return Source(model, None)
        text = prompt_fields(prompt, negative_prompt, guidance_scale, False, 0.995, 1.5, ANY_STYLE, self.styles)
        return Source(None, text)

    @page_errors
    def interpolate(
        self, source, model, prompt, negative_prompt, guidance_scale, seed,
        between, other_seed, other_prompt, num_frames, scheduler, steps, eta,
    ):  # fmt: skip
        """An interpolation strip, frame by frame into the gallery, then the frames as a GIF and a WebP."""
        what = self.source_fields(source, model, prompt, negative_prompt, guidance_scale)
        between = check_choice("Between", between, BETWEEN)
        sampling = sampling_fields(scheduler, steps, eta, 1, seed)
        num_frames = check_int("Frames", num_frames, 2, MAX_FRAMES, parse_text=True)
        if num_frames * sampling.steps > MAX_STRIP_STEPS:
            raise ValueError(
                f"Frames x Steps must be at most {MAX_STRIP_STEPS}, got {num_frames} x {sampling.steps}: "
                "fewer frames or fewer steps."
            )
        if between == "Two seeds":
            other = check_int("Other seed", other_seed, 0, MAX_SEED, parse_text=True)
            frames = self.models.seed_strip(sampling, other, num_frames, model=what.model, prompt=what.prompt)
            ends = (f"seed {sampling.seed}", f"seed {other}")
        else:
            if what.prompt is None:
                raise ValueError("Between: two prompts need the text-to-image model (Source: Text to image).")
            other = check_text("Other prompt", other_prompt, MAX_PROMPT_CHARS)
            frames = self.models.prompt_strip(what.prompt, other, num_frames, sampling)
            ends = (what.prompt.prompt, other)
        yield from self.stream_strip(frames, num_frames, ends, {"between": between, "num_frames": num_frames})

    def stream_strip(self, frames, num_frames: int, ends: tuple[str, str], summary: dict):
        """Page outputs while a strip is made: the gallery after each frame, then the animations and the settings."""
        folder = self.results.new()
        entries, images, settings = [], [], []
        try:
            for i, frame in enumerate(frames):
                weight = i / (num_frames - 1)
                caption = ends[0] if i == 0 else ends[1] if i == num_frames - 1 else f"{weight:.2f}"
                images.append(frame.images[0])
                settings.append(frame.settings)
                entries.append((save_png(frame.images[0], folder, f"frame_{i}", settings=frame.settings), caption))
                yield list(entries), gr.skip(), gr.skip()
            animations = [f"{folder}/strip.gif", f"{folder}/strip.webp"]
            for path in animations:
                save_animation(images, path, duration_ms=FRAME_MS, scale=display_scale(images[0].width), boomerang=True)
            yield entries, animations, json.dumps({**summary, "frames": settings}, indent=2)
        except gr.Error:
            raise
        except Exception as error:
            raise sampling_error(error, 1) from error
        finally:
            frames.close()  # Stop or a lost client: end the pipeline's loop with us
            self.results.release(folder)

    @page_errors
    def compare(self, source, model, prompt, negative_prompt, guidance_scale, seed, samplers, steps):
        """A comparison grid, redrawn after every cell, with the seconds each cell took."""
        what = self.source_fields(source, model, prompt, negative_prompt, guidance_scale)
        seed = check_int("Seed", seed, 0, MAX_SEED, parse_text=True)
        rows = self.checked_list("Samplers", samplers, list(SAMPLER_ROWS))
        steps = self.checked_list("Steps", steps, STEP_CHOICES)
        if len(rows) * sum(steps) > MAX_GRID_STEPS:  # every choice fits: the bound holds if the choices grow
            raise ValueError(f"Samplers x Steps must be at most {MAX_GRID_STEPS} steps in all.")
        labels = [SAMPLER_ROWS[label].label for label in rows]
        cells = [[None] * len(steps) for _ in rows]
        events = self.models.comparison(
            tuple(steps), seed, model=what.model, prompt=what.prompt, samplers=tuple(SAMPLER_ROWS[r] for r in rows)
        )
        folder = self.results.new()
        try:
            for r, c, cell in events:
                cells[r][c] = cell
                picture = save_png(grid_picture(labels, steps, cells), folder, f"grid_{r}_{c}", scale=1)
                yield picture, times_table(labels, steps, cells), gr.skip()
            common = {
                k: v for k, v in cells[0][0].settings.items() if k not in ("scheduler", "eta", "steps", "elapsed")
            }
            seconds = [[cell.elapsed for cell in row] for row in cells]
            settings = {**common, "seed": seed, "samplers": rows, "steps": steps, "seconds": seconds}
            yield picture, times_table(labels, steps, cells), json.dumps(settings, indent=2)
        except gr.Error:
            raise
        except Exception as error:
            raise sampling_error(error, 1) from error
        finally:
            events.close()
            self.results.release(folder)

    @staticmethod
    def checked_list(name: str, values, choices: list) -> list:
        """A non-empty selection out of `choices`, in the choices' order, without repeats; else a ValueError naming it."""
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(
                f"{name} must be a non-empty list out of {', '.join(map(str, choices))}, got {shown(values)}."
            )
        picked = {check_choice(name, value, choices) for value in values}
        return [choice for choice in choices if choice in picked]


def times_table(labels: list[str], steps: list[int], cells: list[list]) -> pd.DataFrame:
    """Seconds per cell (blank while pending): a row per sampler, a column per step count."""
    rows = [
        [label] + ["" if cell is None else f"{cell.elapsed:.2f}" for cell in row] for label, row in zip(labels, cells)
    ]
    return pd.DataFrame(rows, columns=["sampler"] + [f"{n} steps (s)" for n in steps])


def explore_tab(models: Models, results: ResultFolders, styles: list[str], gpu, concurrency: int) -> Explore:
    """The Explore tab, its controls wired to /interpolate and /compare; returns the handlers."""
    explore = Explore(models, results, styles)
    with gr.Tab("Explore"):
        gr.Markdown(
            "**Interpolation strip**: the frames between two seeds (their starting noises x_T moved along the arc "
            "between them) or two prompts (their text embeddings mixed); the end frames are the plain generations. "
            "**Comparison grid**: one seed, a row per sampler and a column per step count, with the time each took."
        )
        with gr.Row():
            with gr.Column(scale=1):
                source = gr.Radio(SOURCES, value="Text to image", label="Source")
                model = gr.Dropdown(
                    list(models.uncond), value=models.default_uncond, label="Model", visible=len(models.uncond) > 1
                )
                prompt = gr.Textbox(label="Prompt", value="red heart", max_lines=2, max_length=MAX_PROMPT_CHARS)
                negative = gr.Textbox(label="Negative prompt", value="", max_lines=2, max_length=MAX_PROMPT_CHARS)
                guidance = gr.Slider(0.0, MAX_GUIDANCE, value=4.0, step=0.5, label="Guidance scale")
                seed = seed_control()
            with gr.Column(scale=2):
                with gr.Tab("Interpolation strip"):
                    with gr.Row():
                        between = gr.Radio(BETWEEN, value="Two prompts", label="Between")
                        frames = gr.Slider(2, MAX_FRAMES, value=8, step=1, label="Frames")
                    with gr.Row():
                        other_seed = gr.Number(value=1, precision=0, label="Other seed")
                        # the shipped model draws "blue heart" red at seed 0; "green heart" comes out yellow: a colour that moves
                        other_prompt = gr.Textbox(label="Other prompt", value="green heart", max_lines=1)
                    scheduler, steps, eta = scheduler_controls(eta_default=0.0)
                    steps.value = 20  # a strip is frames x steps: fewer steps than one picture's default
                    with gr.Row():
                        strip_go = gr.Button("Interpolate", variant="primary")
                        strip_stop = gr.Button("Stop")
                    strip = gr.Gallery(label="Frames", columns=8, height=200, format="png")
                    animation = gr.File(label="Animation (GIF, WebP)", file_count="multiple")
                    strip_settings = gr.Code(label="Settings", language="json")
                with gr.Tab("Comparison grid"):
                    samplers = gr.CheckboxGroup(list(SAMPLER_ROWS), value=list(SAMPLER_ROWS), label="Samplers (rows)")
                    grid_steps = gr.CheckboxGroup(STEP_CHOICES, value=DEFAULT_GRID_STEPS, label="Steps (columns)")
                    with gr.Row():
                        grid_go = gr.Button("Compare", variant="primary")
                        grid_stop = gr.Button("Stop")
                    grid = gr.Image(label="Grid", type="filepath", format="png")
                    times = gr.Dataframe(label="Seconds per cell", interactive=False)
                    grid_settings = gr.Code(label="Settings", language="json")
    shared = [source, model, prompt, negative, guidance, seed]
    strip_event = strip_go.click(
        gpu(explore.interpolate),
        shared + [between, other_seed, other_prompt, frames, scheduler, steps, eta],
        [strip, animation, strip_settings],
        api_name="interpolate",
        concurrency_limit=concurrency,
        concurrency_id="sampling",
        preprocess=False,
    )
    strip_stop.click(None, None, None, cancels=[strip_event], api_visibility="private")
    grid_event = grid_go.click(
        gpu(explore.compare),
        shared + [samplers, grid_steps],
        [grid, times, grid_settings],
        api_name="compare",
        concurrency_limit=concurrency,
        concurrency_id="sampling",
        preprocess=False,
    )
    grid_stop.click(None, None, None, cancels=[grid_event], api_visibility="private")
    return explore
