"""The page's Image to image and Inpaint tabs, and their API.

    edit = edit_tab(MODELS, RESULTS, CONCURRENCY, gpu, [h_strip])   # inside the gr.Blocks, after the Text to image tab

API (`gradio_client`), both answering (gallery, settings JSON, seed, reverse-process strip) like /text_to_image:

    /image_to_image  (picture, prompt, negative_prompt, guidance_scale, strength, scheduler, steps, eta, num_images, seed)
    /inpaint         (picture, prompt, negative_prompt, guidance_scale, scheduler, steps, eta, num_images, seed,
                      jump_length, jump_n_sample)

`picture` is an image editor's value, {"background": file, "layers": [file, ...], "composite": file} (files as
`gradio_client.handle_file` makes them). Image to image starts from `composite` (or `background` when there is no
composite); Inpaint keeps `background` and fills what the `layers` cover (PNGs with transparency: any opaque pixel
is painted; the background's size). An empty prompt samples the shipped unconditional model (guidance unused).
Strength 0 returns the picture at the model's 32x32, 1 is the plain generation of that seed; strength x steps run.
Inpaint takes DDPM or DDIM; its jumps go back `jump_length` steps, `jump_n_sample` passes over each stretch.
"""

import os

import gradio as gr
from PIL import Image

from uncond.repaint import DEFAULT_JUMP_LENGTH, DEFAULT_JUMP_N_SAMPLE, MAX_JUMPS
from webapp.controls import (
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    SCHEDULER_CHOICES,
    result_outputs,
    scheduler_controls,
    seed_control,
)
from webapp.edit import INPAINT_SCHEDULERS, EditHandlers
from webapp.models import Models
from webapp.streaming import ResultFolders

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "examples")
SKETCH_SIDE = 256  # the sketch pad's canvas, in pixels; the models see its 32x32 reduction
# blob colours: the emoji sets' own reds, yellows, greens, blues ... (a few, so a sketch is quick)
BRUSH_COLOURS = ["#e0245e", "#ff8c00", "#ffcc4d", "#77b255", "#3b88c3", "#aa8ed6", "#8b5e3c", "#292f33", "#ffffff"]


def text_controls(prompt: str) -> list:
    """Prompt (empty: the unconditional model), negative prompt and guidance scale."""
    return [
        gr.Textbox(
            label="Prompt (empty: the unconditional model)", value=prompt, max_lines=2, max_length=MAX_PROMPT_CHARS
        ),
        gr.Textbox(label="Negative prompt", value="", max_lines=2, max_length=MAX_PROMPT_CHARS),
        gr.Slider(0.0, MAX_GUIDANCE, value=4.0, step=0.5, label="Guidance scale (1: no guidance)"),
    ]


def run_controls(schedulers: dict, num_images: int) -> tuple[list, gr.Button, gr.Button]:
    """Scheduler, steps, eta, number of images and seed (in the handlers' order), Generate and Stop."""
    scheduler, steps, eta = scheduler_controls(eta_default=0.0, choices=schedulers)
    count = gr.Slider(1, MAX_IMAGES, value=num_images, step=1, label="Number of images")
    seed = seed_control()
    with gr.Row():
        generate = gr.Button("Generate", variant="primary")
        stop = gr.Button("Stop")
    return [scheduler, steps, eta, count, seed], generate, stop


def first_result(gallery) -> dict:
    """The first image of a result gallery as an image editor's value (its background, nothing painted)."""
    if not gallery:
        raise gr.Error("No result yet: generate first.")
    first = gallery[0]
    path = first[0] if isinstance(first, (tuple, list)) else first
    return {"background": path, "layers": [], "composite": path}


def use_result_button(gallery: gr.Gallery, editor: gr.ImageEditor) -> None:
    """A button that puts the tab's first result into its editor, to edit it again."""
    button = gr.Button("Use the first result as the picture", size="sm")
    button.click(first_result, gallery, editor, api_visibility="private")


def edit_tab(models: Models, results: ResultFolders, concurrency: int, gpu, shared: list) -> EditHandlers:
    """The Image to image and Inpaint tabs, their events wired; the handlers. `shared`: the outputs every generation
    tab streams into after its own ("How it works"' reverse-process strip), as many as `stream_to_page` yields."""
    handlers = EditHandlers(models, results)
    with gr.Tab("Image to image"), gr.Row():
        with gr.Column(scale=1):
            sketch = gr.ImageEditor(
                value=Image.new("RGB", (SKETCH_SIDE, SKETCH_SIDE), "white"),
                label="Picture: paint blobs, or upload one",
                type="filepath",
                sources=("upload", "clipboard"),
                canvas_size=(SKETCH_SIDE, SKETCH_SIDE),
                brush=gr.Brush(default_size=24, colors=BRUSH_COLOURS, default_color=BRUSH_COLOURS[0]),
                format="png",
                layers=False,
                height=360,
            )
            gr.Markdown(
                "Sketch to emoji: a red blob and the prompt *heart* give a red heart. The picture is put on white, "
                "cropped to its centred square and shrunk to the model's 32x32."
            )
            i_text = text_controls("heart")
            strength = gr.Slider(
                0.0, 1.0, value=0.7, step=0.05, label="Strength (0: the picture as it is, 1: ignore it)"
            )
            i_run, i_generate, i_stop = run_controls(SCHEDULER_CHOICES, num_images=4)
        with gr.Column(scale=2):
            i_outputs = result_outputs()
            use_result_button(i_outputs[0], sketch)
    with gr.Tab("Inpaint"), gr.Row():
        with gr.Column(scale=1):
            painted = gr.ImageEditor(
                label="Picture: upload or pick one, paint what to fill",
                type="filepath",
                sources=("upload", "clipboard"),
                brush=gr.Brush(default_size=24, colors=[("#ff00ff", 0.6)], color_mode="fixed"),
                format="png",
                layers=False,
                height=360,
            )
            gr.Examples(sorted(os.path.join(EXAMPLES_DIR, f) for f in os.listdir(EXAMPLES_DIR)), painted)
            gr.Markdown(
                "RePaint: after each step the unpainted region is put back, noised to that step's level, and the "
                "model fills the painted one to match; outside the paint the result is the picture exactly."
            )
            p_text = text_controls("blue heart")
            with gr.Accordion("RePaint jumps", open=False):
                gr.Markdown(
                    "The chain goes back *jump length* steps and down again, so each stretch is denoised *passes* "
                    "times and the fill hears of what is kept around it. Each pass costs model calls: 50 steps are "
                    "130 calls at 10 and 3, 50 with one pass (a visible seam)."
                )
                jump_length = gr.Slider(1, 50, value=DEFAULT_JUMP_LENGTH, step=1, label="Jump length (steps gone back)")
                jump_n_sample = gr.Slider(
                    1, MAX_JUMPS, value=DEFAULT_JUMP_N_SAMPLE, step=1, label="Passes per jump (1: no jumps)"
                )
            p_run, p_generate, p_stop = run_controls(INPAINT_SCHEDULERS, num_images=2)
        with gr.Column(scale=2):
            p_outputs = result_outputs()
            use_result_button(p_outputs[0], painted)

    # preprocess=False as the other tabs: the handlers check every field (the editor's files included) themselves
    i_event = i_generate.click(
        gpu(handlers.image_to_image),
        [sketch, *i_text, strength, *i_run],
        i_outputs + shared,
        api_name="image_to_image",
        concurrency_limit=concurrency,
        concurrency_id="sampling",
        preprocess=False,
    )
    i_stop.click(None, None, None, cancels=[i_event], api_visibility="private")
    p_event = p_generate.click(
        gpu(handlers.inpaint),
        [painted, *p_text, *p_run, jump_length, jump_n_sample],
        p_outputs + shared,
        api_name="inpaint",
        concurrency_limit=concurrency,
        concurrency_id="sampling",
        preprocess=False,
    )
    p_stop.click(None, None, None, cancels=[p_event], api_visibility="private")
    return handlers
