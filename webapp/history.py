"""The session's recent generations, newest first: their pictures and settings, and restoring one of them.

The history lives in a `gr.State` (one list per browser session, never shared between people). Each entry is what
a finished generation showed: its gallery's files and its settings (the JSON the page shows, the same as each PNG
carries), so restoring one brings back exactly that result, and every control through `webapp.restore`.
"""

import json

import gradio as gr

from webapp.checks import page_errors
from webapp.restore import Limits, restored_values

MAX_ENTRIES = 12  # generations a session keeps; older ones drop off


def caption(settings: dict) -> str:
    """A history thumbnail's caption: the prompt (if any), sampler, steps and seed."""
    words = [f'"{settings["prompt"]}"'] if settings.get("prompt") else []
    words += [f"{settings.get('scheduler', '?')} {settings.get('steps', '?')}", f"seed {settings.get('seed', '?')}"]
    if "upscale_steps" in settings:
        words.append("128 px")
    return ", ".join(words)


def gallery_files(gallery) -> list[str]:
    """The file paths of a gallery's value (items as paths or (path, caption) pairs)."""
    return [item[0] if isinstance(item, (list, tuple)) else item for item in gallery or []]


def remember(history: list | None, gallery, settings_json: str) -> list:
    """The history with the finished generation added first (at most MAX_ENTRIES); unchanged for an empty result."""
    history = list(history or [])
    files = gallery_files(gallery)
    if not files or not settings_json:
        return history
    entry = {"files": files, "settings": json.loads(settings_json)}
    return [entry] + history[: MAX_ENTRIES - 1]


def history_items(history: list | None) -> list[tuple[str, str]]:
    """The history gallery's items: each generation's first picture with its caption."""
    return [(entry["files"][0], caption(entry["settings"])) for entry in history or []]


def recalled(history: list | None, index) -> dict:
    """The entry at `index` (a click on the history gallery); ValueError naming History for a stale index."""
    history = history or []
    if not isinstance(index, int) or not 0 <= index < len(history):
        raise ValueError(f"History has no entry {index!r}: generate something first.")
    return history[index]


def remember_and_show(history: list | None, gallery, settings_json: str) -> tuple[list, list]:
    """`remember`, and the history gallery's items after it."""
    history = remember(history, gallery, settings_json)
    return history, history_items(history)


def history_restorer(names: list[str], limits: Limits):
    """The click handler of a tab's history: the entry's controls (`names`), then its gallery, settings and seed."""

    @page_errors
    def restore(history, selected: gr.SelectData) -> list:
        entry = recalled(history, selected.index)
        values = restored_values(entry["settings"], names, limits)
        return values + [entry["files"], json.dumps(entry["settings"], indent=2), entry["settings"].get("seed")]

    return restore


def keep_in_history(event, history, shown, outputs: list, controls: list, names: list[str], limits: Limits) -> None:
    """Wire a tab's history: a finished generation (`event`) joins it; a click on one restores it into `controls`
    and `outputs` (gallery, settings, seed)."""
    event.success(remember_and_show, [history, outputs[0], outputs[1]], [history, shown], api_visibility="private")
    shown.select(history_restorer(names, limits), history, controls + outputs, api_visibility="private")
