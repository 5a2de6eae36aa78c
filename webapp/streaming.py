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

import gradio as gr
import torch
from PIL import Image

from uncond.images import to_pil
from uncond.sampling import Step
from uncond.settings import save_with_settings

PREVIEW_EVERY = 5  # steps between live previews
STRIP_FRAMES = 8  # frames of the reverse process kept for "How it works"


def strip_steps(total_steps: int) -> set:
    """The step indices (0-based) whose x_t and predicted x_0 the reverse-process strip keeps: evenly spaced."""
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
        """The request is done with `folder`: it may go once it is among the oldest."""
        with self.lock:
            self.in_use.discard(folder)


def save_png(image: Image.Image, folder: str, name: str, scale: int = 4, settings: dict | None = None) -> str:
    """Write `image` enlarged `scale` times (nearest: crisp pixels) as folder/name.png, with settings in text chunks.

    The page gets files, never PIL images: Gradio writes PIL images into its cache in place, so two requests making
    the same picture (the same seed) could overwrite a file while it is being sent; files it copies atomically.
    """
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


def step_outputs(step: Step, steps: int, seed: int, rate: float, folder: str) -> tuple:
    """The page's outputs after one step: a preview every PREVIEW_EVERY steps, otherwise nothing new."""
    done = step.index + 1
    if done % PREVIEW_EVERY or done >= steps:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()  # nothing new, but Stop can take effect here
    previews = preview_entries(step.pred_original_sample.detach().float().cpu(), folder, done)
    return previews, f"step {done}/{steps} ({rate:.1f} steps/s)", seed, gr.skip()


def stream_to_page(events, steps: int, seed: int, num_images: int, progress, folders: ResultFolders):
    """Page outputs while sampling: previews with progress, then the PNGs, their settings, the seed and the reverse-process strip."""
    started = time.perf_counter()
    folder = folders.new()
    keep, strip = strip_steps(steps), []
    try:
        for event in events:
            if not isinstance(event, Step):  # the output
                yield (
                    save_results(event, folder),
                    json.dumps(event.settings, indent=2),
                    seed,
                    strip_entries(strip, folder),
                )
                return
            if event.index in keep:  # (step, x_t, predicted x_0) of the first image
                strip.append(
                    (event.index + 1, event.x_t[:1].float().cpu(), event.pred_original_sample[:1].float().cpu())
                )
            rate = (event.index + 1) / (time.perf_counter() - started)
            progress(
                (event.index + 1, steps), desc=f"{rate:.1f} steps/s, {(steps - event.index - 1) / rate:.0f} s left"
            )
            yield step_outputs(event, steps, seed, rate, folder)
    except gr.Error:
        raise
    except Exception as error:
        raise sampling_error(error, num_images) from error
    finally:
        events.close()  # Stop or a lost client closed us at a yield: end the pipeline's loop with us
        folders.release(folder)
