"""Sampling in a worker thread, streamed to the page as previews, then the result PNGs, in folders of bounded size.

A handler does `yield from stream_to_page(run, steps, seed, num_images, progress, folders)` where `run(callback)`
calls a pipeline with that callback. Stop, or a client that goes away, closes the generator; the worker then
ends within one step.
"""

import json
import os
import queue
import shutil
import tempfile
import threading
import time

import gradio as gr
import torch
from PIL import Image

from uncond.pipeline import to_pil
from uncond.sample import save_with_settings

PREVIEW_EVERY = 5  # steps between live previews
TICK_SECONDS = (
    0.05  # the longest the page's generator waits without yielding, so that Stop and lost clients end it promptly
)
STRIP_FRAMES = 8  # frames of the reverse process kept for "How it works"


def stream_samples(run, total_steps: int):
    """Run `run(callback)` in a worker thread; yield ("preview", x0 tensor, step) every few steps, ("tick", None, step)
    after TICK_SECONDS without news, then ("done", result, strip).

    `strip` holds (step, x_t, predicted x_0) of the first image at up to STRIP_FRAMES evenly spaced steps.
    Closing the generator makes the callback return True, so the worker ends within one step. Gradio can only
    close a generator that is waiting at a yield: the ticks put it there at least every TICK_SECONDS.
    """
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    strip = []
    strip_steps = {round(i * (total_steps - 1) / max(1, STRIP_FRAMES - 1)) for i in range(STRIP_FRAMES)}
    steps_done = [0]  # written by the worker, read by the ticks

    def callback(step, timestep, x_t, pred_original_sample):
        steps_done[0] = step + 1
        if step in strip_steps:
            strip.append((step + 1, x_t[:1].detach().float().cpu(), pred_original_sample[:1].detach().float().cpu()))
        if (step + 1) % PREVIEW_EVERY == 0 and step + 1 < total_steps:
            events.put(("preview", pred_original_sample.detach().float().cpu(), step + 1))
        return stop.is_set()

    def work():
        try:
            result = run(callback)
            events.put(("done", result, strip))
        except Exception as error:  # handed to the page as a message, never a stack trace
            events.put(("error", error, 0))

    worker = threading.Thread(target=work, name="sampling-worker", daemon=True)
    worker.start()
    try:
        while True:
            try:
                kind, payload, step = events.get(timeout=TICK_SECONDS)
            except queue.Empty:
                kind, payload, step = "tick", None, steps_done[0]
            if kind == "error":
                raise payload
            yield kind, payload, step
            if kind == "done":
                return
    finally:
        stop.set()


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
        self.lock = threading.Lock()

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


def stream_to_page(run, steps: int, seed: int, num_images: int, progress, folders: ResultFolders):
    """Page outputs while sampling: previews with progress, then the PNGs, their settings, the seed and the reverse-process strip."""
    started = time.perf_counter()
    folder = folders.new()
    try:
        for kind, payload, extra in stream_samples(run, steps):
            if kind == "done":
                yield (
                    save_results(payload, folder),
                    json.dumps(payload.settings, indent=2),
                    seed,
                    strip_entries(extra, folder),
                )
                continue
            rate = extra / (time.perf_counter() - started)
            if extra:
                progress((extra, steps), desc=f"{rate:.1f} steps/s, {(steps - extra) / rate:.0f} s left")
            if kind == "preview":
                yield (
                    preview_entries(payload, folder, extra),
                    f"step {extra}/{steps} ({rate:.1f} steps/s)",
                    seed,
                    gr.skip(),
                )
            else:
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip()  # a tick: nothing new, but Stop can take effect here
    except gr.Error:
        raise
    except Exception as error:
        raise sampling_error(error, num_images) from error
    finally:
        folders.release(folder)
