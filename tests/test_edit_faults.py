"""The Image to image and Inpaint endpoints under bad input: hostile pictures, bad masks, out-of-range fields, each
refused with a message naming its field; and on the served app, which keeps serving afterwards."""

import gradio as gr
import pytest
from PIL import Image

import app
from tests.test_app_faults import hostile_files
from tests.test_edit_tab import editor, layer_file, picture_file, run


@pytest.mark.parametrize(
    "name, message",
    [
        ("half", "Picture could not be read"),
        ("not an image", "Picture could not be read \\(UnidentifiedImageError\\)"),
        ("bomb", "Picture could not be read \\(DecompressionBombError\\)"),
        ("jpeg", None),  # a JPEG behind a .png name is a picture like any other
    ],
)
def test_a_hostile_picture_gets_a_message_naming_the_picture(tiny_txt2img, tmp_path, name, message):
    path = hostile_files(tmp_path)[name]
    layer = layer_file(tmp_path, (8, 8), (0, 0, 4, 8))
    for handler, args in [
        (app.EDIT.image_to_image, (editor(composite=path), "heart", "", 3.0, 0.5, "DDIM", 2, 0.0, 1, 0)),
        (app.EDIT.inpaint, (editor(background=path, layers=[layer]), "heart", "", 3.0, "DDIM", 2, 0.0, 1, 0)),
    ]:
        if message is None:
            assert len(run(handler, *args)[-1][0]) == 1
        else:
            with pytest.raises(gr.Error, match=message):
                run(handler, *args)
    if message is not None:  # a hostile paint layer names the mask
        good, _ = picture_file(tmp_path, size=(8, 8))
        with pytest.raises(gr.Error, match=message.replace("Picture", "Mask")):
            run(app.EDIT.inpaint, editor(background=good, layers=[path]), "heart", "", 3.0, "DDIM", 2, 0.0, 1, 0)


def test_oversized_and_blank_pictures_are_refused(tiny_txt2img, tmp_path):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (app.MAX_PICTURE_SIDE + 1, 2)).save(wide)
    blank = tmp_path / "blank.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(blank)
    for value, message in [
        (editor(composite=str(wide)), "Picture must be at most 2048 pixels a side, got 2049x2"),
        (editor(composite=str(blank)), "Picture is blank: paint a few blobs"),
        (editor(), "Picture is missing"),
        (None, "Picture is missing"),
        ("a string", "Picture must be an image editor's value"),
        ({"composite": 5}, "Picture must be a picture file, got int"),
    ]:
        with pytest.raises(gr.Error, match=message):
            run(app.EDIT.image_to_image, value, "heart", "", 3.0, 0.5, "DDIM", 2, 0.0, 1, 0)


def bad_masks(tmp_path) -> dict:
    """name -> (layers, message) for a 16x16 picture."""
    return {
        "none painted": ([], "Mask is empty: paint over the region the model should fill"),
        "empty layer": ([layer_file(tmp_path, (16, 16), None, "empty.png")], "Mask is empty: it marks nothing to fill"),
        "full": ([layer_file(tmp_path, (16, 16), (0, 0, 16, 16), "full.png")], "Mask covers the whole picture"),
        "wrong size": (
            [layer_file(tmp_path, (20, 16), (0, 0, 4, 4), "wide.png")],
            "Mask must be painted on the picture \\(16x16\\), got 20x16",
        ),
        "layers not a list": ("layer.png", "Mask layers must be a list of pictures, got str"),
    }


@pytest.mark.parametrize("name", ["none painted", "empty layer", "full", "wrong size", "layers not a list"])
def test_bad_masks_get_a_message_naming_the_mask(tiny_txt2img, tmp_path, name):
    path, _ = picture_file(tmp_path, size=(16, 16))
    layers, message = bad_masks(tmp_path)[name]
    value = {
        **editor(background=path),
        "layers": layers if isinstance(layers, str) else editor(layers=layers)["layers"],
    }
    with pytest.raises(gr.Error, match=message):
        run(app.EDIT.inpaint, value, "heart", "", 3.0, "DDIM", 2, 0.0, 1, 0)
    with pytest.raises(gr.Error, match="Picture is missing: upload the picture to inpaint"):
        run(
            app.EDIT.inpaint,
            editor(layers=[layer_file(tmp_path, (16, 16), (0, 0, 4, 4))]),
            "heart",
            "",
            3.0,
            "DDIM",
            2,
            0.0,
            1,
            0,
        )


@pytest.mark.parametrize(
    "strength, message",
    [
        (1.5, "Strength must be a number from 0 to 1, got 1.5"),
        (-0.1, "Strength .* got -0.1"),
        (float("nan"), "Strength .* got nan"),
        ("much", "Strength"),
        (None, "Strength"),
    ],
)
def test_out_of_range_strength_names_the_field(tiny_txt2img, tmp_path, strength, message):
    path, _ = picture_file(tmp_path)
    with pytest.raises(gr.Error, match=message):
        run(app.EDIT.image_to_image, editor(composite=path), "heart", "", 3.0, strength, "DDIM", 2, 0.0, 1, 0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({4: "Euler (diffusers)"}, "Scheduler must be one of DDPM, DDIM, got 'Euler \\(diffusers\\)'"),
        ({9: 0}, "Jump length must be a whole number from 1 to 1000, got 0"),
        ({10: 101}, "Passes per jump must be a whole number from 1 to 100, got 101"),
        ({3: 25.0}, "Guidance scale must be a number from 0 to 20, got 25.0"),
        ({1: "x\x1b"}, "Prompt must not contain control characters"),
        ({5: 0}, "Steps must be a whole number from 1 to 1000, got 0"),
    ],
)
def test_inpaint_fields_are_checked_by_name(tiny_txt2img, tmp_path, change, message):
    path, _ = picture_file(tmp_path, size=(16, 16))
    layer = layer_file(tmp_path, (16, 16), (0, 0, 8, 16))
    args = [editor(background=path, layers=[layer]), "heart", "", 3.0, "DDIM", 2, 0.0, 1, 0, 10, 3]
    for index, value in change.items():
        args[index] = value
    with pytest.raises(gr.Error, match=message):
        run(app.EDIT.inpaint, *args)


@pytest.mark.slow
def test_the_served_endpoints_refuse_bad_input_by_name_and_keep_serving(tmp_path):
    from gradio_client import Client, handle_file

    from tests.serving import free_port

    port = free_port()
    app.demo.queue(max_size=app.QUEUE_SIZE)
    app.demo.launch(
        prevent_thread_lock=True, quiet=True, **{**app.launch_options(app.parse_args([])), "server_port": port}
    )
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        path, _ = picture_file(tmp_path, size=(40, 40))
        half = layer_file(tmp_path, (40, 40), (20, 0, 40, 40))
        full = layer_file(tmp_path, (40, 40), (0, 0, 40, 40), name="full.png")
        sketch = {"background": None, "layers": [], "composite": handle_file(path)}
        gallery, settings, seed, *_ = client.predict(
            sketch, "heart", "", 4.0, 0.5, "DDIM", 4, 0.0, 1, 7, api_name="/image_to_image"
        )
        assert seed == 7 and len(gallery) == 1 and '"strength": 0.5' in settings
        with pytest.raises(Exception, match="Strength must be a number from 0 to 1, got 2.0"):
            client.predict(sketch, "heart", "", 4.0, 2.0, "DDIM", 4, 0.0, 1, 7, api_name="/image_to_image")
        painted = {"background": handle_file(path), "layers": [handle_file(half)], "composite": None}
        gallery, settings, seed, *_ = client.predict(
            painted, "blue heart", "", 4.0, "DDIM", 4, 0.0, 1, 8, 2, 2, api_name="/inpaint"
        )
        assert seed == 8 and '"inpainting": true' in settings
        painted["layers"] = [handle_file(full)]
        with pytest.raises(Exception, match="Mask covers the whole picture"):
            client.predict(painted, "blue heart", "", 4.0, "DDIM", 4, 0.0, 1, 8, 2, 2, api_name="/inpaint")
        not_a_picture = tmp_path / "notes.png"
        not_a_picture.write_bytes(b"hello")
        with pytest.raises(Exception, match="Picture could not be read"):
            client.predict(
                {"background": None, "layers": [], "composite": handle_file(str(not_a_picture))},
                "heart",
                "",
                4.0,
                0.5,
                "DDIM",
                4,
                0.0,
                1,
                7,
                api_name="/image_to_image",
            )
        # still serving, the other tabs too
        assert client.predict(app.MODELS.default_uncond, "DDIM", 2, 0.0, 1, 1, api_name="/unconditional")[2] == 1
    finally:
        app.demo.close()
