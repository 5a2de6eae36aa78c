"""The web demo: emoji from noise, unconditionally or from a prompt.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_PORT to change; --share for a public link)

UI only: the models, their sampling loops and their checks live in `uncond/` and `txt2img/`.
Starting, checking requests and streaming results live in `webapp/`.
Environment: EMOJI_WEIGHTS_DIR (default weights/), EMOJI_CONCURRENCY and EMOJI_QUEUE_SIZE (default: by device).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: the app works offline

try:  # Hugging Face ZeroGPU: `spaces` must be imported before anything touches CUDA
    import spaces

    gpu = spaces.GPU
except ImportError:  # anywhere else the decorator does nothing

    def gpu(fn=None, **kwargs):
        return fn if fn is not None else (lambda f: f)


import argparse
import sys
import threading

import gradio as gr
from PIL import Image

from uncond.checks import check_choice, check_int
from uncond.settings import read_settings
from uncond.upscale_pipeline import DEFAULT_STEPS
from webapp.checks import load_picture, page_errors
from webapp.controls import (
    DEFAULT_CANDIDATES,
    MAX_GUIDANCE,
    MAX_PICTURE_SIDE,
    MAX_PROMPT_CHARS,
    MAX_STEPS,
    candidates_control,
    extra_controls,
    history_gallery,
    prompt_fields,
    result_outputs,
    sampling_controls,
    sampling_fields,
    upscale_fields,
    variation_fields,
)
from webapp.edit_tab import edit_tab
from webapp.explore_tab import explore_tab
from webapp.history import keep_in_history
from webapp.live import live_mode
from webapp.memory import limit_arenas
from webapp.models import ANY_STYLE, Models, Sampling, Upscaling, schedule_table
from webapp.restore import TEXT_CONTROLS, UNCOND_CONTROLS, Limits, restored_values
from webapp.startup import device_note, launch_options, queue_settings
from webapp.streaming import STRIP_FRAMES, ResultFolders, save_png, stream_to_page
from webapp.texts import CASCADE_TEXT, CREDITS, DESCRIPTION

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS_DIR = os.path.abspath(os.environ.get("EMOJI_WEIGHTS_DIR", os.path.join(HERE, "weights")))
# what the retrained model draws well: a name, a keyword, two other languages, a style (README, Natural prompts)
PROMPT_EXAMPLES = [
    "red heart",
    "undead",
    "anxious face",
    "corazón rojo",
    "赤いハート",
    "猫",
    "red heart, line art",
    "cat face, 3D",
]
EXAMPLES_DIR = os.path.join(HERE, "assets", "examples")
KEEP_RESULTS = 64  # requests whose PNGs stay in the app's own folder
limit_arenas()  # before Gradio's worker threads exist: its requests share two malloc arenas (webapp/memory.py)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="The emoji diffusion demo.")
    parser.add_argument(
        "--uncond-model",
        action="append",
        default=[],
        metavar="PATH_OR_HUB_ID",
        help="also offer this unconditional model (our format or a diffusers UNet2DModel / DDPMPipeline folder or hub id); repeatable",
    )
    parser.add_argument(
        "--share", action="store_true", help="also serve through a public gradio.live link (off unless asked for)"
    )
    args, _ = parser.parse_known_args(argv)
    return args


ARGS = parse_args(sys.argv[1:] if __name__ == "__main__" else [])
MODELS = Models.load(WEIGHTS_DIR, ARGS.uncond_model)  # or SystemExit naming the broken folder
STYLE_CHOICES = MODELS.styles()  # {label: style}; empty for a model trained on one style
STYLE_NAMES = list(STYLE_CHOICES.values())
UPSCALER = MODELS.upscale_defaults()  # None without weights/upscale: no Upscale control, 32 px pictures
UPSCALE_DEFAULT, UPSCALE_STEPS = UPSCALER is not None, UPSCALER.steps if UPSCALER else DEFAULT_STEPS
NOISE_LEVEL, MAX_NOISE_LEVEL = (UPSCALER.noise_level, UPSCALER.max_noise_level) if UPSCALER else (0, None)
CONCURRENCY, QUEUE_SIZE = queue_settings(MODELS.device)
DEVICE_NOTE = device_note(MODELS.device, MODELS.dtype, CONCURRENCY, QUEUE_SIZE)
RESULTS = ResultFolders(keep=KEEP_RESULTS)


# ---- the generation handlers: their inputs arrive as sent (preprocess=False), checked here, each message naming the field ----


@gpu
@page_errors
def generate_unconditional(
    model: str,
    scheduler: str,
    steps,
    eta,
    num_images,
    seed,
    variation_seed=1,
    variation_strength=0.0,
    upscale=None,
    upscale_steps=UPSCALE_STEPS,
    noise_level=NOISE_LEVEL,
    progress=gr.Progress(),
):
    """Sample unconditional images (a variation, upscaled), streaming predicted-x_0 previews."""
    model = check_choice("Model", model, list(MODELS.uncond))  # a name from the list, never a path
    sampling = sampling_fields(scheduler, steps, eta, num_images, seed)
    variation = variation_fields(variation_seed, variation_strength)
    upscaling = upscale_fields(
        UPSCALE_DEFAULT if upscale is None else upscale, upscale_steps, noise_level, MAX_NOISE_LEVEL
    )
    events = MODELS.unconditional(model, sampling, variation=variation, upscaling=upscaling)
    yield from stream_pictures(events, sampling, upscaling, progress)


def stream_pictures(events, sampling: Sampling, upscaling: Upscaling, progress):
    """A generation's stream on the page; the upsampler's steps counted when it runs."""

    def low_res_view(images):  # the base results as the upsampler is given them, for "How it works"
        return MODELS.noised_low_res(images, upscaling, sampling.seed)

    upscale_steps = upscaling.steps if upscaling.enabled else 0
    yield from stream_to_page(
        events, sampling.steps, sampling.seed, sampling.num_images, progress, RESULTS, upscale_steps, low_res_view
    )


@gpu
@page_errors
def generate_text_to_image(
    prompt,
    negative_prompt,
    guidance_scale,
    scheduler: str,
    steps,
    eta,
    num_images,
    seed,
    thresholding=False,
    threshold_ratio=0.995,
    threshold_max=1.5,
    style=ANY_STYLE,
    variation_seed=1,
    variation_strength=0.0,
    upscale=None,
    upscale_steps=UPSCALE_STEPS,
    noise_level=NOISE_LEVEL,
    num_candidates=DEFAULT_CANDIDATES,
    progress=gr.Progress(),
):
    """Sample images for a prompt with classifier-free guidance (a variation, upscaled, best of N), streaming previews."""
    text = prompt_fields(
        prompt,
        negative_prompt,
        guidance_scale,
        thresholding,
        threshold_ratio,
        threshold_max,
        style,
        STYLE_NAMES,
        num_candidates,
    )
    sampling = sampling_fields(scheduler, steps, eta, num_images, seed)
    variation = variation_fields(variation_seed, variation_strength)
    upscaling = upscale_fields(
        UPSCALE_DEFAULT if upscale is None else upscale, upscale_steps, noise_level, MAX_NOISE_LEVEL
    )
    events = MODELS.text_to_image(text, sampling, variation=variation, upscaling=upscaling)
    yield from stream_pictures(events, sampling, upscaling, progress)


def suggest_captions(prompt: str):
    """The training captions closest to what is typed, so a user learns the model's vocabulary."""
    fits = isinstance(prompt, str) and len(prompt) <= MAX_PROMPT_CHARS
    return gr.update(choices=MODELS.suggestions(prompt, k=6) if fits else [], value=None)


# ---- "How it works" and restoring settings: uploaded files ----


@page_errors
def show_forward_process(picture, timestep, model: str):
    """x_t of the picked picture (a file path, or an image) at timestep t, under the chosen model's noise schedule."""
    if picture is None:
        raise gr.Error("Pick or upload a picture first.")
    image = picture if isinstance(picture, Image.Image) else load_picture(picture, MAX_PICTURE_SIDE)
    timestep = check_int("Timestep t", timestep, 0, MAX_STEPS - 1, parse_text=True)
    noisy = MODELS.forward_process(image, timestep, model)
    folder = RESULTS.new()
    try:
        return save_png(noisy, folder, f"x_{timestep}", scale=256 // noisy.width)
    finally:
        RESULTS.release(folder)


LIMITS = Limits(STYLE_NAMES, MAX_NOISE_LEVEL, {pipe.name: label for label, pipe in MODELS.uncond.items()})


def restore_settings(file, names: list[str]) -> list:
    """Control values (`names`, webapp.restore) from a PNG this app made, each checked."""
    if file is None:
        return [gr.skip()] * len(names)
    try:
        return restored_values(read_settings(file if isinstance(file, str) else file.name), names, LIMITS)
    except ValueError as error:
        raise gr.Error(f"Settings file: {str(error).rstrip('.')}.") from None


# ---- the page ----


# Gradio's cache (the PNGs it serves): every 10 minutes, files older than an hour go
with gr.Blocks(title="Emoji from noise", delete_cache=(600, 3600)) as demo:
    gr.Markdown(DESCRIPTION)
    gr.Markdown(DEVICE_NOTE)
    # made here, shown in "How it works": every generation tab streams its reverse process into it
    h_strip = gr.Gallery(label="Last generation, step by step", columns=STRIP_FRAMES, height=300, render=False)
    h_cascade = gr.Gallery(
        label="Last generation, upscaled: base result, noised low-res input, the upsampler's x_t",
        columns=STRIP_FRAMES + 2,
        height=200,
        visible=UPSCALER is not None,
        render=False,
    )
    with gr.Tab("Unconditional"), gr.Row():
        with gr.Column(scale=1):
            u_model = gr.Dropdown(
                list(MODELS.uncond), value=MODELS.default_uncond, label="Model", visible=len(MODELS.uncond) > 1
            )
            # eta 1: the shipped unconditional model's deterministic DDIM-50 drifts into textured squares
            # (FID_CLIP 0.38 against DDPM-1000's 0.29); re-injecting noise brings it to 0.27 (README, Evaluation)
            u = sampling_controls(eta_default=1.0)
            u_extra = extra_controls(UPSCALER)
        with gr.Column(scale=2):
            u_outputs = result_outputs()
            u_history, u_shown = history_gallery()
    u_controls = [u_model, u.scheduler, u.steps, u.eta, u.seed] + u_extra.inputs()
    with gr.Tab("Text to image"):
        with gr.Row():
            with gr.Column(scale=1):
                t_prompt = gr.Textbox(label="Prompt", value="red heart", max_lines=2, max_length=MAX_PROMPT_CHARS)
                t_suggestions = gr.Radio(
                    choices=[],
                    label="Closest captions the model was trained on (pick one to use it)",
                    visible=MODELS.has_captions(),
                )
                t_style = gr.Dropdown(
                    list(STYLE_CHOICES.items()) or [("any colour style", ANY_STYLE)],
                    value=ANY_STYLE,
                    label="Style (added to the prompt)",
                    visible=bool(STYLE_CHOICES),
                )
                t_negative = gr.Textbox(label="Negative prompt", value="", max_lines=2, max_length=MAX_PROMPT_CHARS)
                t_guidance = gr.Slider(0.0, MAX_GUIDANCE, value=4.0, step=0.5, label="Guidance scale (1: no guidance)")
                t_candidates = candidates_control()
                with gr.Accordion("Dynamic thresholding (Imagen): for high guidance scales", open=False):
                    gr.Markdown(
                        "Each step's estimate of the picture is clipped at its own percentile s of |x_0| (at least 1, "
                        "at most the max) and divided by s, instead of being clipped to [-1, 1]. Imagen uses it to keep "
                        "colours from saturating at high guidance; with these small emoji models plain clipping "
                        "looks better (README, Guided sampling)."
                    )
                    t_thresholding = gr.Checkbox(value=False, label="Dynamic thresholding (not with Euler)")
                    t_threshold_ratio = gr.Slider(0.5, 1.0, value=0.995, step=0.005, label="Thresholding percentile")
                    t_threshold_max = gr.Slider(1.0, 10.0, value=1.5, step=0.1, label="Thresholding max")
                t = sampling_controls(eta_default=0.0)
                t_extra = extra_controls(UPSCALER)
                gr.Examples(PROMPT_EXAMPLES, t_prompt)
            with gr.Column(scale=2):
                LIVE = live_mode(MODELS, RESULTS, STYLE_NAMES, gpu, t_prompt, t_negative, t_guidance, t_style, t.seed)
                t_outputs = result_outputs()
                t_history, t_shown = history_gallery()
        t_prompt.change(
            suggest_captions,
            t_prompt,
            t_suggestions,
            trigger_mode="always_last",
            api_visibility="private",
            concurrency_id="suggest",
        )
        t_suggestions.input(lambda caption: caption, t_suggestions, t_prompt, api_visibility="private")
        t_controls = [t_prompt, t_negative, t_guidance, t_style, t_thresholding, t_threshold_ratio, t_threshold_max]
        t_controls += [t.scheduler, t.steps, t.eta, t.seed] + t_extra.inputs() + [t_candidates]
        t.restore.change(lambda f: restore_settings(f, TEXT_CONTROLS), t.restore, t_controls, api_visibility="private")

    EXPLORE = explore_tab(MODELS, RESULTS, STYLE_NAMES, gpu, CONCURRENCY)  # /interpolate, /compare

    EDIT = edit_tab(
        MODELS, RESULTS, CONCURRENCY, gpu, [h_strip, h_cascade]
    )  # Image to image and Inpaint (webapp/edit_tab.py)

    with gr.Tab("How it works"):
        gr.Markdown(
            "**Forward process.** Training takes a picture x_0, picks a timestep t and mixes in Gaussian noise: "
            "x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) noise. The network learns to predict that noise, or "
            "(all three shipped models) the velocity v = sqrt(alpha-bar_t) noise - sqrt(1 - alpha-bar_t) x_0, which still "
            "says what the picture is where almost only noise is left (Salimans & Ho 2022). "
            "Move t to see what it is shown. The plot's last curve is the schedule rescaled to zero terminal SNR "
            "(Lin et al. 2024): alpha-bar at the last step exactly 0, so training sees the pure noise sampling starts "
            "from. The shipped cosine schedule already ends at 2.4e-9, so the two alpha-bar curves overlap here."
        )
        with gr.Row():
            with gr.Column():
                # a file path, decoded by load_picture with its limits (image_mode None: Gradio passes the upload on undecoded)
                h_image = gr.Image(type="filepath", image_mode=None, label="Picture x_0", height=256)
                gr.Examples(
                    sorted(os.path.join(EXAMPLES_DIR, f) for f in os.listdir(EXAMPLES_DIR) if f.endswith(".png")),
                    h_image,
                )
                h_t = gr.Slider(0, MAX_STEPS - 1, value=250, step=1, label="Timestep t")
            with gr.Column():
                h_noisy = gr.Image(label="x_t", height=256)
                h_plot = gr.LinePlot(
                    schedule_table(MODELS, MODELS.default_uncond),
                    x="t",
                    y="value",
                    color="curve",
                    title="Noise schedule",
                    height=260,
                )
        gr.Markdown(
            "**Reverse process.** Sampling starts from pure noise x_T and removes a little of it at each step. "
            "Top row: x_t of the first image of your last generation (either tab); bottom row: the network's guess of the final picture at that step."
        )
        h_strip.render()
        gr.Markdown(CASCADE_TEXT, visible=UPSCALER is not None)
        h_cascade.render()
        for trigger in (h_image.change, h_t.release):
            trigger(show_forward_process, [h_image, h_t, u_model], h_noisy, api_visibility="private")

    # preprocess=False: the handlers get the values as sent and check every field themselves, so an API caller's
    # out-of-range slider value gets the same message, naming the field and its range, as the page
    u_event = u.generate.click(
        generate_unconditional,
        [u_model, u.scheduler, u.steps, u.eta, u.num_images, u.seed] + u_extra.inputs(),
        u_outputs + [h_strip, h_cascade],
        api_name="unconditional",
        concurrency_limit=CONCURRENCY,
        concurrency_id="sampling",
        preprocess=False,
    )
    u.stop.click(None, None, None, cancels=[u_event], api_visibility="private")
    t_event = t.generate.click(
        generate_text_to_image,
        [
            t_prompt,
            t_negative,
            t_guidance,
            t.scheduler,
            t.steps,
            t.eta,
            t.num_images,
            t.seed,
            t_thresholding,
            t_threshold_ratio,
            t_threshold_max,
            t_style,
        ]
        + t_extra.inputs()
        + [t_candidates],
        t_outputs + [h_strip, h_cascade],
        api_name="text_to_image",
        concurrency_limit=CONCURRENCY,
        concurrency_id="sampling",
        preprocess=False,
    )
    t.stop.click(None, None, None, cancels=[t_event], api_visibility="private")
    u.restore.change(lambda f: restore_settings(f, UNCOND_CONTROLS), u.restore, u_controls, api_visibility="private")
    keep_in_history(u_event, u_history, u_shown, u_outputs, u_controls, UNCOND_CONTROLS, LIMITS)
    keep_in_history(t_event, t_history, t_shown, t_outputs, t_controls, TEXT_CONTROLS, LIMITS)
    u_model.change(lambda model: schedule_table(MODELS, model), u_model, h_plot, api_visibility="private")
    gr.Markdown(CREDITS)


if __name__ == "__main__":
    # encode the training captions for the suggestions in the background, not on the first keystroke
    threading.Thread(target=MODELS.suggestions, args=("warm up",), daemon=True).start()
    demo.queue(max_size=QUEUE_SIZE).launch(**launch_options(ARGS))
