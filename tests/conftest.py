"""Test-wide settings: no hub access, deterministic CPU runs."""

import os

# Nothing in the tests may reach a model hub: tiny models and data are built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


import sys  # noqa: E402


@pytest.fixture(autouse=True)
def handlers_leave_the_upsampler_out(monkeypatch):
    """Handler calls in the tests skip the shipped upsampler unless they ask for it (upscale=True): it would add
    seconds to every call. The served app (browser, load and API tests) keeps its real default."""
    app = sys.modules.get("app")
    if app is not None and hasattr(app, "UPSCALE_DEFAULT"):
        monkeypatch.setattr(app, "UPSCALE_DEFAULT", False)


@pytest.fixture
def tiny_txt2img(monkeypatch):
    """A tiny random text-to-image pipeline in place of the app's shipped one (the app tests' models)."""
    import app
    from tests.txt2img_fixtures import tiny_text_encoder, tiny_unet
    from txt2img.pipeline import TextToImagePipeline

    pipe = TextToImagePipeline(tiny_unet(), tiny_text_encoder(), {"beta_schedule": "squaredcos_cap_v2"}, name="tiny")
    monkeypatch.setattr(app.MODELS, "txt2img", pipe)
    return pipe
