"""The Image to image and Inpaint tabs through their handlers: strength 0 and 1, steps run, what inpainting keeps."""

import json

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from uncond.edit import fit_picture

SIZE = 8  # the tiny text-to-image model's pictures; the result PNGs are enlarged to 128 px


def picture_file(tmp_path, name="picture.png", size=(24, 16), mode="RGBA") -> tuple[str, Image.Image]:
    """A colourful picture of another size, aspect and mode than the model's, saved as a PNG (what an upload is)."""
    rng = np.random.default_rng(0)
    channels = len(mode)
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    if mode == "RGBA":
        pixels[:, :4, 3] = 0  # a transparent strip: on white
    image = Image.fromarray(pixels.squeeze(), mode)
    path = str(tmp_path / name)
    image.save(path)
    return path, image


def layer_file(tmp_path, size, box, name="layer.png") -> str:
    """A paint layer as the image editor sends it: transparent, opaque magenta strokes in `box`."""
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    if box is not None:
        layer.paste((255, 0, 255, 150), box)
    path = str(tmp_path / name)
    layer.save(path)
    return path


def editor(background=None, layers=(), composite=None) -> dict:
    """An image editor's value as Gradio hands it to a handler with preprocess=False."""
    entry = lambda path: None if path is None else {"path": path, "meta": {"_type": "gradio.FileData"}}  # noqa: E731
    return {"background": entry(background), "layers": [entry(p) for p in layers], "composite": entry(composite)}


def run(handler, *args) -> list:
    return list(handler(*args, progress=lambda *a, **k: None))


def result_pixels(outputs, index: int = 0) -> np.ndarray:
    """The result PNG of the last output, shrunk back to the model's SIZE pixels (it is enlarged to 128 px, nearest)."""
    image = Image.open(outputs[-1][0][index][0]).convert("RGB")
    step = image.width // SIZE
    return np.asarray(image)[::step, ::step]


def test_strength_0_returns_the_picture_at_the_models_resolution(tiny_txt2img, tmp_path):
    path, picture = picture_file(tmp_path)
    outputs = run(app.EDIT.image_to_image, editor(composite=path), "heart", "", 3.0, 0.0, "DDIM", 10, 0.0, 2, 1)
    assert len(outputs) == 1  # no step runs: the answer comes at once
    expected = np.asarray(fit_picture(picture, SIZE))  # on white, centred square, 8x8
    assert np.array_equal(result_pixels(outputs, 0), expected) and np.array_equal(result_pixels(outputs, 1), expected)
    assert json.loads(outputs[-1][1])["strength"] == 0.0


def test_strength_1_is_the_plain_generation_of_that_seed(tiny_txt2img, tmp_path):
    path, _ = picture_file(tmp_path)
    edited = run(app.EDIT.image_to_image, editor(composite=path), "red heart", "", 3.0, 1.0, "DDIM", 4, 0.0, 1, 3)
    plain = list(app.generate_text_to_image("red heart", "", 3.0, "DDIM", 4, 0.0, 1, 3, progress=lambda *a, **k: None))
    assert np.array_equal(result_pixels(edited), result_pixels(plain))


def test_an_empty_prompt_samples_the_unconditional_model(tmp_path):
    path, _ = picture_file(tmp_path)
    edited = run(app.EDIT.image_to_image, editor(background=path), "", "", 3.0, 1.0, "DDPM", 2, 0.0, 1, 5)
    plain = list(
        app.generate_unconditional(app.MODELS.default_uncond, "DDPM", 2, 0.0, 1, 5, progress=lambda *a, **k: None)
    )
    assert json.loads(edited[-1][1])["model"] == json.loads(plain[-1][1])["model"] != "txt2img"
    assert np.array_equal(result_pixels(edited), result_pixels(plain))


@pytest.mark.parametrize("strength, steps_run", [(0.35, 3), (0.01, 1), (0.5, 5), (1.0, 10)])
def test_strength_x_steps_are_run_at_least_one(tiny_txt2img, tmp_path, strength, steps_run):
    path, _ = picture_file(tmp_path, mode="RGB")
    outputs = run(
        app.EDIT.image_to_image, editor(composite=path), "cat", "", 2.0, strength, "Euler (diffusers)", 10, 0.0, 1, 0
    )
    assert len(outputs) == steps_run + 1  # one yield per step, then the result
    assert json.loads(outputs[-1][1])["steps"] == 10


@pytest.mark.parametrize("scheduler", ["DDIM", "DDPM"])
def test_inpainting_keeps_unpainted_pixels_exactly_and_fills_painted_ones(tiny_txt2img, tmp_path, scheduler):
    path, picture = picture_file(tmp_path, size=(16, 16), mode="RGB")  # 2x2 picture pixels per model pixel
    layer = layer_file(tmp_path, (16, 16), (8, 0, 16, 16))  # the right half painted
    value = editor(background=path, layers=[layer], composite=path)
    outputs = run(app.EDIT.inpaint, value, "blue heart", "", 3.0, scheduler, 6, 0.0, 2, 0, 2, 2)
    expected = np.asarray(fit_picture(picture, SIZE)).astype(int)
    for index in (0, 1):
        result = result_pixels(outputs, index).astype(int)
        assert np.array_equal(result[:, :4], expected[:, :4])  # kept exactly
        assert np.abs(result[:, 4:] - expected[:, 4:]).mean() > 10  # filled by the model
    settings = json.loads(outputs[-1][1])
    assert settings["inpainting"] is True and settings["jump_length"] == 2 and settings["jump_n_sample"] == 2
    # RePaint's revisits are the steps streamed: 6 steps, a jump of 2 back at 0 and 2 -> 10 model calls
    assert len(outputs) == 10 + 1


def test_a_result_goes_back_into_the_editor(tiny_txt2img, tmp_path):
    path, _ = picture_file(tmp_path)
    gallery = run(app.EDIT.image_to_image, editor(composite=path), "heart", "", 3.0, 0.5, "DDIM", 2, 0.0, 1, 0)[-1][0]
    from webapp.edit_tab import first_result

    value = first_result([(gallery[0][0], "seed 0 #0")])
    assert value["background"] == gallery[0][0] and value["layers"] == []
    with pytest.raises(gr.Error, match="No result yet"):
        first_result(None)
