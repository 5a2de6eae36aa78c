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
    from tests.txt2img_fixtures import tiny_ranker, tiny_text_encoder, tiny_unet
    from txt2img.pipeline import TextToImagePipeline

    schedule = {"beta_schedule": "squaredcos_cap_v2"}
    pipe = TextToImagePipeline(tiny_unet(), tiny_text_encoder(), schedule, name="tiny", ranker=tiny_ranker())
    monkeypatch.setattr(app.MODELS, "txt2img", pipe)
    return pipe


# The scheduler mutation run (README "Mutation testing"): MUTATION_SAMPLE=k keeps one case in k of the big parity
# grids (chosen by a hash of the test id, so any subset mutmut passes is thinned the same way) and leaves out the
# two tests that run whole models. A surviving mutant then costs about 20 s instead of 3 min.
PARITY_GRIDS = {
    "tests/test_scheduler.py::test_ddim_options_match_diffusers",
    "tests/test_scheduler.py::test_ddpm_loop_matches_diffusers",
    "tests/test_scheduler.py::test_ddim_loop_matches_diffusers",
    "tests/test_scheduler.py::test_ddpm_options_match_diffusers",
    "tests/test_scheduler.py::test_ddim_new_options_match_diffusers",
    "tests/test_scheduler.py::test_ddpm_new_options_match_diffusers",
    "tests/test_scheduler.py::test_ddpm_variance_types_match_diffusers",
}
WHOLE_MODEL_TESTS = {
    "tests/test_pinned_outputs.py::test_seeded_output_is_the_pinned_one",
    "tests/test_train.py::test_a_run_keeps_the_ema_and_learning_rate_of_the_formulas",
}


def pytest_collection_modifyitems(config, items):
    """Under MUTATION_SAMPLE=k only: thin the parity grids to one case in k and drop the whole-model tests."""
    import zlib

    k = int(os.environ.get("MUTATION_SAMPLE", "0"))
    if k <= 1:
        return
    kept, dropped = [], []
    for item in items:
        function = item.nodeid.split("[")[0]
        sampled_out = function in PARITY_GRIDS and zlib.crc32(item.nodeid.encode()) % k != 0
        (dropped if sampled_out or function in WHOLE_MODEL_TESTS else kept).append(item)
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept
