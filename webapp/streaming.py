"""A pipeline's stream of steps shown on the page: previews, progress, then the result PNGs, in folders of bounded size.

A handler does `yield from stream_to_page(events, steps, seed, num_images, progress, folders)` where `events` is a
pipeline's `stream(...)` (a `Step` after each denoising step, the output last). No worker thread: the handler is a
generator that Gradio iterates in its own thread pool, one denoising step per `next`, and every step yields to the
page (a preview every PREVIEW_EVERY steps, an empty update otherwise). Stop and a vanished client therefore take
effect at the next step: Gradio stops iterating and closes the generator, which closes the pipeline's stream.
"""

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass

import gradio as gr
import torch
from PIL import Image

from uncond.images import to_pil
from uncond.sampling import Step
from uncond.settings import save_with_settings
from webapp.memory import trim

PREVIEW_EVERY = 5  # steps between live previews
STRIP_FRAMES = 8  # frames of the reverse process kept for "How it works"
DISPLAY_SIZE = 128  # pixels a side the page's PNGs have at least (smaller pictures are enlarged)


def strip_steps(total_steps: int) -> set:
    """The step indices (0-based) whose x_t and predicted x_0 the reverse-process strip keeps: evenly spaced."""
    if total_steps < 1:
        return set()
    return {round(i * (total_steps - 1) / max(1, STRIP_FRAMES - 1)) for i in range(STRIP_FRAMES)}


def sampling_error(error: Exception, num_images: int) -> Exception:
    """What the page shows for a failed generation: out of memory suggests fewer images; a refused argument names it."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # give the failed batch's memory back before the next request
        return gr.Error(f"Out of memory while generating {num_images} images at once: try fewer images.")
    if isinstance(error, ValueError):
        return gr.Error(str(error))
    return error


class ResultFolders:
    """One folder per request under `root` for its PNGs; beyond `keep`, the oldest folders no request is writing
    are removed (Gradio has copied their files to its cache by then), so the disk use stays bounded."""

    def __init__(self, keep: int):
        self.root = tempfile.mkdtemp(prefix="emoji-app-")
        self.keep = keep
        self.in_use: set[str] = set()
        self.lock = threading.Lock()  # requests run in Gradio's thread pool, several at a time

    def new(self) -> str:
        """A fresh folder, in use until `release`."""
        with self.lock:
            idle = [entry for entry in os.scandir(self.root) if entry.is_dir() and entry.path not in self.in_use]
            idle.sort(key=lambda entry: entry.stat().st_mtime)
            for entry in idle[: max(0, len(idle) - self.keep + 1)]:
                shutil.rmtree(entry.path, ignore_errors=True)
            folder = tempfile.mkdtemp(dir=self.root)
            self.in_use.add(folder)
        return folder

    def release(self, folder: str) -> None:
        """The request is done with `folder`: it may go once it is among the oldest; the memory its tensors held
        goes back to the OS (`webapp.memory.trim`: otherwise the server's resident memory creeps up)."""
        with self.lock:
            self.in_use.discard(folder)
        trim()


def display_scale(width: int) -> int:
    """How many times a picture is enlarged for the page (nearest: crisp pixels): 32 px by 4, 128 px not at all."""
    return max(1, DISPLAY_SIZE // width)


def save_png(image: Image.Image, folder: str, name: str, scale: int | None = None, settings: dict | None = None) -> str:
    """Write `image` enlarged `scale` times (nearest; default `display_scale`) as folder/name.png, with settings in text chunks.

    The page gets files, never PIL images: Gradio writes PIL images into its cache in place, so two requests making
    the same picture (the same seed) could overwrite a file while it is being sent; files it copies atomically.
    """
    scale = display_scale(image.width) if scale is None else scale
    path = os.path.join(folder, f"{name}.png")  # names made here from checked numbers: no user text in paths
    save_with_settings(image.resize((image.width * scale, image.height * scale), 0), path, settings or {})
    return path


def save_results(result, folder: str) -> list[tuple[str, str]]:
    """Each image as PNG with its settings in text chunks; gallery entries (path, caption)."""
    entries = []
    for i, image in enumerate(result.images):
        path = save_png(image, folder, f"emoji_{result.seed}_{i}", settings={**result.settings, "index": i})
        entries.append((path, f"seed {result.seed} #{i}"))
    return entries


def preview_entries(x0: torch.Tensor, folder: str, step: int) -> list:
    """Predicted x_0 of the current step as enlarged PNGs."""
    return [save_png(image, folder, f"preview_{step}_{i}") for i, image in enumerate(to_pil(x0))]


def strip_entries(strip: list, folder: str) -> list:
    """The reverse process of the first image: x_t frames, then the predicted x_0 frames, captioned by step."""
    x_t_row = [(save_png(to_pil(x_t)[0], folder, f"x_t_{step}"), f"x_t after step {step}") for step, x_t, _ in strip]
    x_0_row = [
        (save_png(to_pil(x_0)[0], folder, f"x_0_{step}"), f"predicted x_0 at step {step}") for step, _, x_0 in strip
    ]
    return x_t_row + x_0_row


def step_outputs(step: Step, done: int, total: int, seed: int, rate: float, folder: str) -> tuple:
    """The page's outputs after a step (`done` of `total`): a preview every PREVIEW_EVERY steps, otherwise nothing new."""
    if done % PREVIEW_EVERY or done >= total:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()  # nothing new, but Stop can take effect here
    previews = preview_entries(step.pred_original_sample.detach().float().cpu(), folder, done)
    return previews, f"step {done}/{total} ({rate:.1f} steps/s)", seed, gr.skip(), gr.skip()


@dataclass
class Stages:
    """Where a stream is: the base model's steps, then (in a cascade) the upsampler's, told apart by x_t's size."""

    size: int | None = None  # x_t's size in the current stage
    offset: int = 0  # steps done in the stages before the current one
    upscaling: bool = False
    last_index: int = -1  # the index of the last step seen
    base_x_t: torch.Tensor | None = None  # the base stage's last x_t: its result, for "How it works"

    def advance(self, step: Step) -> int:
        """Steps done of both stages after `step`."""
        size = step.x_t.shape[-1]
        if self.size is not None and size != self.size:  # the upsampler's first step
            self.offset, self.upscaling = self.offset + self.last_index + 1, True
        self.size, self.last_index = size, step.index
        if not self.upscaling:
            self.base_x_t = step.x_t
        return self.offset + step.index + 1


def cascade_entries(stages: Stages, frames: list, low_res_view, folder: str) -> list:
    """The upscaling of the first image for "How it works": the base result, its noised version that the upsampler
    is given (`low_res_view` of all base results, None without an upsampler), then the upsampler's x_t frames."""
    if not stages.upscaling or stages.base_x_t is None:
        return []
    base = to_pil(stages.base_x_t.float().cpu())
    entries = [(save_png(base[0], folder, "base"), f"base model's result ({base[0].width} px)")]
    if low_res_view is not None:
        entries.append((save_png(low_res_view(base)[0], folder, "low_res"), "low-res input, noised (augmentation)"))
    return entries + [
        (save_png(to_pil(x_t)[0], folder, f"up_{step}"), f"upsampler x_t after step {step}") for step, x_t in frames
    ]


def stream_to_page(
    events, steps: int, seed: int, num_images: int, progress, folders: ResultFolders, upscale_steps=0, low_res_view=None
):
    """Page outputs while sampling: previews with progress, then the PNGs, their settings, the seed, the reverse-process
    strip and (for a cascade of `upscale_steps` more steps) the upscaling strip."""
    started = time.perf_counter()
    folder = folders.new()
    stages, total = Stages(), steps + upscale_steps
    keep, keep_up, strip, frames = strip_steps(steps), strip_steps(upscale_steps), [], []
    try:
        for event in events:
            if not isinstance(event, Step):  # the output
                yield (
                    save_results(event, folder),
                    json.dumps(event.settings, indent=2),
                    seed,
                    strip_entries(strip, folder),
                    cascade_entries(stages, frames, low_res_view, folder),
                )
                return
            done = stages.advance(event)
            if not stages.upscaling and event.index in keep:  # (step, x_t, predicted x_0) of the first image
                strip.append(
                    (event.index + 1, event.x_t[:1].float().cpu(), event.pred_original_sample[:1].float().cpu())
                )
            if stages.upscaling and event.index in keep_up:
                frames.append((event.index + 1, event.x_t[:1].float().cpu()))
            rate = done / (time.perf_counter() - started)
            stage = "upscaling, " if stages.upscaling else ""
            progress((done, total), desc=f"{stage}{rate:.1f} steps/s, {(total - done) / rate:.0f} s left")
            yield step_outputs(event, done, total, seed, rate, folder)
    except gr.Error:
        raise
    except Exception as error:
        raise sampling_error(error, num_images) from error
    finally:
        events.close()  # Stop or a lost client closed us at a yield: end the pipeline's loop with us
        folders.release(folder)
