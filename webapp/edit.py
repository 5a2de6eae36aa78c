"""The Image to image and Inpaint handlers: an image editor's value as sent, checked field by field, then sampled.

    handlers = EditHandlers(models, results)
    for outputs in handlers.image_to_image(editor, "heart", "", 4.0, 0.7, "DDIM", 50, 0.0, 1, 0): ...
    for outputs in handlers.inpaint(editor, "blue heart", "", 4.0, "DDIM", 50, 0.0, 1, 0, 10, 3): ...

The picture arrives as `gr.ImageEditor` sends it (preprocess=False): {"background": file, "layers": [file, ...],
"composite": file}, each file {"path": ...} (in Gradio's cache: Gradio refuses paths outside it). Image to image
starts from the composite (the upload with the strokes painted on it, or the strokes alone on white); Inpaint
keeps the background and fills what the layers' strokes cover. Every file is decoded by `load_picture` with its
limits; an empty prompt samples the shipped unconditional model instead of the text-to-image one.
"""

import gradio as gr
from PIL import Image

from uncond.checks import check_choice, check_float, check_int
from uncond.edit import fit_mask, steps_for_strength
from uncond.repaint import DEFAULT_JUMP_LENGTH, DEFAULT_JUMP_N_SAMPLE, MAX_JUMPS, repaint_positions
from webapp.checks import load_picture, page_errors, painted_mask
from webapp.controls import MAX_PICTURE_SIDE, MAX_STEPS, SCHEDULER_CHOICES, prompt_fields, sampling_fields
from webapp.models import ANY_STYLE, Models, StartPicture
from webapp.streaming import ResultFolders, stream_to_page

# RePaint goes back up the chain, which only samplers whose step depends on t alone allow (uncond.edit)
INPAINT_SCHEDULERS = {label: SCHEDULER_CHOICES[label] for label in ("DDPM", "DDIM")}


def file_path(entry, field: str) -> str | None:
    """The path of one file of an editor's value ({"path": ...}, or a path), None for none."""
    if entry is None:
        return None
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("path"), str):
        return entry["path"]
    raise ValueError(f"{field} must be a picture file, got {type(entry).__name__}.")


def decode(path: str, field: str) -> Image.Image:
    """A file of the editor decoded with the upload limits; the message names `field`."""
    try:
        return load_picture(path, MAX_PICTURE_SIDE)
    except ValueError as error:
        raise ValueError(field + str(error).removeprefix("Picture")) from None


def editor_value(value) -> tuple[str | None, list, str | None]:
    """(background, layers, composite) of an image editor's value as sent, as paths; (None, [], None) for none."""
    if value is None:
        return None, [], None
    if not isinstance(value, dict):
        raise ValueError(
            f"Picture must be an image editor's value (background, layers, composite), got {type(value).__name__}."
        )
    layers = value.get("layers") or []
    if not isinstance(layers, list):
        raise ValueError(f"Mask layers must be a list of pictures, got {type(layers).__name__}.")
    return (
        file_path(value.get("background"), "Picture"),
        [file_path(layer, "Mask") for layer in layers],
        file_path(value.get("composite"), "Picture"),
    )


def blank(image: Image.Image) -> bool:
    """Whether a picture is fully transparent (an untouched sketch pad)."""
    return image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[1] == 0


def start_picture(value) -> Image.Image:
    """Image to image's start: the editor's composite (or its background), refused when missing or blank."""
    background, _, composite = editor_value(value)
    path = composite or background
    if path is None:
        raise ValueError("Picture is missing: upload a picture or paint a few blobs on the sketch pad.")
    picture = decode(path, "Picture")
    if blank(picture):
        raise ValueError("Picture is blank: paint a few blobs on the sketch pad or upload a picture.")
    return picture


def picture_and_mask(value, size: int) -> tuple[Image.Image, Image.Image]:
    """Inpaint's picture (the editor's background) and mask (its painted layers), both checked at the model's `size`."""
    background, layers, _ = editor_value(value)
    if background is None:
        raise ValueError("Picture is missing: upload the picture to inpaint, then paint over the region to fill.")
    picture = decode(background, "Picture")
    mask = painted_mask([decode(path, "Mask") for path in layers if path is not None], picture.size)
    if mask is None:
        raise ValueError("Mask is empty: paint over the region the model should fill.")
    try:  # the pipelines' own check, run here so that its message names the field
        fit_mask(mask, picture.size, size)
    except ValueError as error:
        raise ValueError("Mask" + str(error).removeprefix("mask")) from None
    return picture, mask


class EditHandlers:
    """The two editing endpoints of the page, over the app's models and result folders."""

    def __init__(self, models: Models, results: ResultFolders):
        self.models = models
        self.results = results

    def text(self, prompt, negative_prompt, guidance_scale):
        """The prompt's settings, or None for an empty prompt (the unconditional model)."""
        text = prompt_fields(prompt, negative_prompt, guidance_scale, False, 0.995, 1.5, ANY_STYLE, [ANY_STYLE])
        return text if text.prompt.strip() else None

    def pipeline(self, text):
        return self.models.uncond[self.models.default_uncond] if text is None else self.models.txt2img

    def events(self, text, sampling, start: StartPicture):
        if text is None:
            return self.models.unconditional(self.models.default_uncond, sampling, start)
        return self.models.text_to_image(text, sampling, start)

    @page_errors
    def image_to_image(
        self,
        picture,
        prompt,
        negative_prompt,
        guidance_scale,
        strength,
        scheduler: str,
        steps,
        eta,
        num_images,
        seed,
        progress=gr.Progress(),
    ):
        """SDEdit from the editor's picture: noised to `strength`, denoised with the prompt (or unconditionally)."""
        picture = start_picture(picture)
        text = self.text(prompt, negative_prompt, guidance_scale)
        strength = check_float("Strength", strength, 0.0, 1.0, parse_text=True)
        sampling = sampling_fields(scheduler, steps, eta, num_images, seed)
        events = self.events(text, sampling, StartPicture(picture, strength=strength))
        planned = steps_for_strength(sampling.steps, strength)
        yield from stream_to_page(events, planned, sampling.seed, sampling.num_images, progress, self.results)

    @page_errors
    def inpaint(
        self,
        picture,
        prompt,
        negative_prompt,
        guidance_scale,
        scheduler: str,
        steps,
        eta,
        num_images,
        seed,
        jump_length=DEFAULT_JUMP_LENGTH,
        jump_n_sample=DEFAULT_JUMP_N_SAMPLE,
        progress=gr.Progress(),
    ):
        """RePaint: the editor's painted region of its picture filled, everything else kept exactly."""
        text = self.text(prompt, negative_prompt, guidance_scale)
        check_choice("Scheduler", scheduler, INPAINT_SCHEDULERS)
        sampling = sampling_fields(scheduler, steps, eta, num_images, seed)
        jump_length = check_int("Jump length", jump_length, 1, MAX_STEPS, parse_text=True)
        jump_n_sample = check_int("Passes per jump", jump_n_sample, 1, MAX_JUMPS, parse_text=True)
        picture, mask = picture_and_mask(picture, self.pipeline(text).unet.config.sample_size)
        start = StartPicture(picture, mask=mask, jump_length=jump_length, jump_n_sample=jump_n_sample)
        planned = len(repaint_positions(sampling.steps, jump_length, jump_n_sample))
        events = self.events(text, sampling, start)
        yield from stream_to_page(events, planned, sampling.seed, sampling.num_images, progress, self.results)
