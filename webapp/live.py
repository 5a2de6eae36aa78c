"""Live mode for the Text to image tab: while "Live" is on, every prompt change draws one picture with few steps.

    live = live_mode(MODELS, RESULTS, STYLE_NAMES, gpu, prompt, negative, guidance, style, seed)   # inside the tab

API: /live (live, prompt, negative_prompt, guidance_scale, seed, style) -> (picture PNG, settings JSON); DDIM
LIVE_STEPS steps, eta 0, one image. Only a session's newest request is drawn: each request registers as its
session's newest when it arrives; one that is no longer the newest is dropped before it starts or at the next
step of its loop, and answers with no change (gr.skip). So a burst of keystrokes costs one picture, not a queue.
A request with the same inputs as its session's unfinished newest one changes nothing and answers at once: the
page sends such repeats after the last keystroke, and restarting the picture for them cost a step each.

Why not Gradio's trigger_mode="always_last" alone: it holds the page's next request until the running one
answers (a full picture late), and it does nothing for API callers. Here every change is sent at once (trigger
mode "multiple") and the server drops the stale ones; LIVE_ADMITTED requests are let into the handler at a time
(so a waiting one can learn it is stale) and one picture is drawn at a time (`Newest`'s turn), over all sessions.
"""

import json
import threading

import gradio as gr

from uncond.checks import MAX_SEED, check_choice, check_int
from uncond.sampling import Step
from webapp.checks import page_errors
from webapp.controls import ON_OFF, prompt_fields
from webapp.models import Models, Sampling
from webapp.streaming import ResultFolders, save_png

LIVE_STEPS = (
    6  # DDIM 6 and 10 draw the same pictures with the shipped model (eight prompts looked at); 6 is 0.2 s sooner
)
LIVE_ADMITTED = 16  # requests inside the handler at once: waiting for their turn, or dropped as stale


class Newest:
    """Which request is each session's newest, and whose turn it is to draw (one at a time)."""

    def __init__(self):
        self.changed = threading.Condition()
        self.newest: dict = {}  # session -> number of its newest request
        self.inputs: dict = {}  # session -> the inputs of its newest request
        self.count = 0
        self.drawing = False

    def arrive(self, session, inputs=None) -> tuple | None:
        """A new request of `session`: from now on its older ones are stale. Returns its ticket, or None for a repeat
        of the session's unfinished newest request's `inputs` (which stays the newest; never without a session or inputs)."""
        with self.changed:
            if None not in (session, inputs) and session in self.newest and self.inputs[session] == inputs:
                return None
            self.count += 1
            self.newest[session] = self.count
            self.inputs[session] = inputs
            self.changed.notify_all()
            return session, self.count

    def stale(self, ticket: tuple) -> bool:
        """Whether a newer request of the same session has arrived (or the session is done)."""
        session, number = ticket
        return self.newest.get(session) != number

    def take_turn(self, ticket: tuple) -> bool:
        """Wait until nothing is drawing; True with the turn taken, False as soon as the request is stale."""
        with self.changed:
            while self.drawing and not self.stale(ticket):
                self.changed.wait()
            if self.stale(ticket):
                return False
            self.drawing = True
            return True

    def done(self, ticket: tuple, drew: bool) -> None:
        """The request ends: its turn is free; its session is forgotten if it was the newest (bounded memory)."""
        with self.changed:
            if drew:
                self.drawing = False
            if not self.stale(ticket):
                del self.newest[ticket[0]], self.inputs[ticket[0]]
            self.changed.notify_all()


class Live:
    """The /live handler over the app's models."""

    def __init__(self, models: Models, results: ResultFolders, styles: list[str]):
        self.models = models
        self.results = results
        self.styles = styles
        self.newest = Newest()
        self.drawn = 0  # pictures finished (a test counts that a burst draws one)

    @page_errors
    def generate(self, live, prompt, negative_prompt, guidance_scale, seed, style, request: gr.Request = None):
        """One picture for the prompt (DDIM LIVE_STEPS steps) when live mode is on and no newer change has come."""
        inputs = (live, prompt, negative_prompt, guidance_scale, seed, style)
        ticket = self.newest.arrive(getattr(request, "session_hash", None), inputs)  # even "off": older ones stale
        if ticket is None:
            return gr.skip(), gr.skip()  # the same request is already under way
        drew = False
        try:
            if not check_choice("Live", live, ON_OFF):
                return gr.skip(), gr.skip()
            text = prompt_fields(prompt, negative_prompt, guidance_scale, False, 0.995, 1.5, style, self.styles)
            seed = check_int("Seed", seed, 0, MAX_SEED, parse_text=True)
            drew = self.newest.take_turn(ticket)
            return self.draw(text, seed, ticket) if drew else (gr.skip(), gr.skip())
        finally:
            self.newest.done(ticket, drew)

    def draw(self, text, seed: int, ticket: tuple):
        """The picture, or no change if a newer request arrives meanwhile (checked after every step)."""
        events = self.models.text_to_image(text, Sampling("ddim", LIVE_STEPS, 0.0, 1, seed))
        try:
            for event in events:
                if isinstance(event, Step):
                    if self.newest.stale(ticket):
                        return gr.skip(), gr.skip()
                    continue
                folder = self.results.new()
                try:
                    path = save_png(event.images[0], folder, f"live_{seed}", settings=event.settings)
                finally:
                    self.results.release(folder)
                self.drawn += 1
                return path, json.dumps(event.settings, indent=2)
        finally:
            events.close()
        raise RuntimeError("the pipeline's stream ended without its output")


def live_mode(
    models: Models, results: ResultFolders, styles: list[str], gpu, prompt, negative, guidance, style, seed
) -> Live:
    """The Live checkbox and picture (placed where it is called), redrawn on each prompt change; returns the handler."""
    live = Live(models, results, styles)
    with gr.Group():
        on = gr.Checkbox(value=False, label=f"Live: redraw one picture as you type (DDIM {LIVE_STEPS} steps)")
        picture = gr.Image(label="Live picture", type="filepath", format="png", height=160, visible=True)
        settings = gr.Code(label="Live picture's settings", language="json", visible=False)
    inputs = [on, prompt, negative, guidance, seed, style]
    for trigger, name in ((prompt.change, "live"), (on.change, None)):
        trigger(
            gpu(live.generate),
            inputs,
            [picture, settings],
            api_name=name,
            api_visibility="public" if name else "private",
            trigger_mode="multiple",
            concurrency_limit=LIVE_ADMITTED,
            concurrency_id="live",
            show_progress="hidden",
            preprocess=False,
        )
    return live
