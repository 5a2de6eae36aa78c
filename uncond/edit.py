"""Starting from a picture: image to image (SDEdit, Meng et al. 2022) and, with a mask, inpainting (`uncond.repaint`).

    pipe(image=picture, strength=0.6, seed=0)             # SDEdit: the picture noised to 60%, then denoised
    pipe(image=picture, mask=mask, scheduler="ddpm")      # RePaint: the mask's white region filled in

SDEdit noises the picture x_0 with the scheduler's own `add_noise` to the level of one timestep of the schedule and
runs the loop from there: the coarse layout (colours, blobs) survives, the model redraws the details. `strength` in
[0, 1] picks that timestep as diffusers' img2img pipelines do (`StableDiffusionImg2ImgPipeline.get_timesteps`): of the
n inference steps the last min(int(n strength), n) run, at least 1 when strength > 0; so 0 returns the picture
unchanged and 1 runs every step. At strength 1 the picture is dropped altogether, x_T being the seed's noise alone
(diffusers' inpainting pipeline does the same, `is_strength_max`): strength 1 is exactly a plain generation.

Pictures of any size and mode are made the model's input the same way (`fit_picture`): transparency onto white
(the training data's background), the centred square of the shorter side cropped, resized (bicubic) to the
model's resolution. Masks get the same crop (`fit_mask`); a model pixel is filled when any of it was marked.
"""

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from uncond.checks import check_float
from uncond.images import from_pil
from uncond.repaint import (
    DEFAULT_JUMP_LENGTH,
    DEFAULT_JUMP_N_SAMPLE,
    RePaintHook,
    check_jumps,
    paste,
    repaint_positions,
)
from uncond.sampling import Callback, ModelFn, denoise

Mask = Image.Image | np.ndarray | torch.Tensor  # white / True where the model fills, the picture's size
IMAGE_TO_IMAGE_STRENGTH = 0.8  # diffusers' img2img default; inpainting's is 1 (the masked region from noise)
INPAINT_SCHEDULERS = ("ddpm", "ddim")  # whose step depends on t alone, so the chain may go back up


def on_white(image: Image.Image) -> Image.Image:
    """An RGB (or L) copy of a picture with any transparency composited onto white."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("L" if image.mode in ("1", "L", "I", "F", "I;16") else "RGB")


def centre_square(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box (left, top, right, bottom) of the centred square of the shorter side of a (width, height) picture."""
    width, height = size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def check_picture(name: str, image) -> Image.Image:
    """A PIL image of at least one pixel, else a ValueError naming it."""
    if not isinstance(image, Image.Image):
        raise ValueError(f"{name} must be a PIL image, got {type(image).__name__}.")
    if min(image.size) < 1:
        raise ValueError(f"{name} must have at least one pixel, got {image.size[0]}x{image.size[1]}.")
    return image


def fit_picture(image: Image.Image, size: int) -> Image.Image:
    """The picture as the model sees it: on white, its centred square, `size` x `size` (RGB; L stays L)."""
    image = on_white(check_picture("image", image))
    return image.crop(centre_square(image.size)).resize((size, size), Image.Resampling.BICUBIC)


def mask_array(mask: Mask, size: tuple[int, int]) -> np.ndarray:
    """A mask as a (height, width) bool array, True where to fill; it must have the picture's `size` (width, height).

    A PIL mask is white where to fill; with transparency (an editor's paint layer) painted, i.e. opaque, pixels are.
    An array (numpy or torch, bool or numbers) marks with True or values >= 0.5.
    """
    if isinstance(mask, Image.Image):
        shape = (mask.size[1], mask.size[0])
        if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
            marked = np.asarray(mask.convert("RGBA"))[:, :, 3] >= 128
        else:
            marked = np.asarray(mask.convert("L")) >= 128
    else:
        try:
            array = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
            marked = array.astype(bool) if array.dtype == bool else array.astype(np.float32) >= 0.5
        except (TypeError, ValueError):
            raise ValueError(f"mask must be a PIL image or a 2-D array, got {type(mask).__name__}.") from None
        shape = marked.shape
    if len(shape) != 2 or marked.ndim != 2:
        raise ValueError(f"mask must be a PIL image or a 2-D array, got shape {tuple(marked.shape)}.")
    if shape != (size[1], size[0]):
        raise ValueError(f"mask must be the picture's size, {size[0]}x{size[1]}, got {shape[1]}x{shape[0]}.")
    return marked


def fit_mask(mask: Mask, picture_size: tuple[int, int], size: int) -> torch.Tensor:
    """The mask at the model's resolution, (1, 1, size, size) float 1 where to fill; ValueError if empty or full."""
    marked = mask_array(mask, picture_size)
    if not marked.any():
        raise ValueError("mask is empty: it marks nothing to fill (paint the region the model should redraw).")
    if marked.all():
        raise ValueError("mask covers the whole picture: nothing is kept (generate without a picture instead).")
    square = Image.fromarray(marked.astype(np.uint8) * 255).crop(centre_square(picture_size))
    # a model pixel is filled when any part of it was marked: box-average, then > 0
    fitted = np.asarray(square.resize((size, size), Image.Resampling.BOX)) > 0
    if not fitted.any():
        raise ValueError(f"mask marks nothing inside the centred square the model sees ({size}x{size}).")
    if fitted.all():
        raise ValueError(f"mask covers the whole picture at the model's {size}x{size}: nothing is kept.")
    return torch.from_numpy(fitted.astype(np.float32))[None, None]


@dataclass(frozen=True)
class Edit:
    """A picture to start from and, for inpainting, the region to fill; at the model's resolution."""

    image: torch.Tensor  # x_0 (1, C, H, W) in [-1, 1]
    strength: float  # in [0, 1]: how much of the schedule runs
    mask: torch.Tensor | None = None  # (1, 1, H, W): 1 where the model fills, 0 where the picture is kept
    jump_length: int = DEFAULT_JUMP_LENGTH
    jump_n_sample: int = DEFAULT_JUMP_N_SAMPLE

    def planned_steps(self, num_inference_steps: int) -> int:
        """The model calls the loop will make: strength's share of the steps, RePaint's revisits included."""
        steps = steps_for_strength(num_inference_steps, self.strength)
        if self.mask is None or steps == 0:
            return steps
        return len(repaint_positions(steps, self.jump_length, self.jump_n_sample))


def prepare_edit(
    image,
    size: int,
    channels: int,
    strength: float | None = None,
    mask: Mask | None = None,
    jump_length: int = DEFAULT_JUMP_LENGTH,
    jump_n_sample: int = DEFAULT_JUMP_N_SAMPLE,
) -> Edit | None:
    """The checked `Edit` of a pipeline call (None without a picture); ValueErrors name the argument at fault.

    strength None: 0.8 for image to image, 1 for inpainting (diffusers' defaults for the two).
    """
    if image is None:
        if mask is not None:
            raise ValueError("mask needs an image: the picture whose masked region is filled.")
        if strength is not None:
            raise ValueError("strength needs an image: the picture to start from.")
        return None
    fitted = fit_picture(image, size)
    fitted_mask = None if mask is None else fit_mask(mask, image.size, size)
    default = IMAGE_TO_IMAGE_STRENGTH if mask is None else 1.0
    strength = check_float("strength", default if strength is None else strength, 0.0, 1.0)
    jump_length, jump_n_sample = check_jumps(jump_length, jump_n_sample)
    return Edit(from_pil(fitted, size, channels), strength, fitted_mask, jump_length, jump_n_sample)


def steps_for_strength(num_inference_steps: int, strength: float) -> int:
    """How many of the n steps image to image runs: min(int(n strength), n) as diffusers, at least 1 if strength > 0."""
    steps = min(int(num_inference_steps * strength), num_inference_steps)
    return max(steps, 1) if strength > 0 else steps


def edit_stream(
    model_fn: ModelFn,
    scheduler,
    edit: Edit,
    x_t: torch.Tensor,
    generator=None,
    callback: Callback | None = None,
    **options,
):
    """The loop from a picture: yields its steps, returns (x_0, steps done). `scheduler` is set to its n steps,
    `x_t` is the seed's x_T (B, C, H, W); with a mask, RePaint's hook fills the masked region."""
    n = len(scheduler.timesteps)
    steps = steps_for_strength(n, edit.strength)
    start = n - steps  # the position in the schedule the loop starts from
    x_0 = edit.image.to(device=x_t.device, dtype=x_t.dtype).expand(x_t.shape[0], -1, -1, -1)  # (B, C, H, W)
    if steps == 0:
        return x_0.clone(), 0
    if start > 0:  # strength 1 starts from the noise alone: a plain generation
        if hasattr(scheduler, "set_begin_index"):  # diffusers' samplers index their sigmas from here (as img2img)
            scheduler.set_begin_index(start)
        x_t = scheduler.add_noise(x_0, x_t, scheduler.timesteps[start : start + 1].repeat(x_t.shape[0]))
    if edit.mask is None:
        timesteps = None if start == 0 else scheduler.timesteps[start:]
        return (yield from denoise(model_fn, scheduler, x_t, generator, callback, timesteps=timesteps, **options))
    positions = [start + p for p in repaint_positions(steps, edit.jump_length, edit.jump_n_sample)]
    run = scheduler.timesteps[positions]
    hook = RePaintHook(scheduler, x_0, edit.mask, run.tolist(), generator)
    x, done = yield from denoise(model_fn, scheduler, x_t, generator, callback, timesteps=run, hook=hook, **options)
    return paste(x, x_0, edit.mask), done
