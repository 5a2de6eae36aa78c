"""Text-to-image sampling: one batched UNet call per step, prompts, the pipeline folder, the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from txt2img_fixtures import MAX_LENGTH, save_tiny_clip, tiny_text_encoder, tiny_unet

from txt2img.clip import TextEmbeddings
from txt2img.guidance import classifier_free_guidance, guided_model_fn
from txt2img.pipeline import TextToImagePipeline
from txt2img.sample import main as sample_main
from uncond.sampling import make_scheduler, sample

SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}


@pytest.fixture(scope="module")
def pipe():
    return TextToImagePipeline(tiny_unet(), tiny_text_encoder(), SCHEDULER_CONFIG, name="tiny")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, pipe):
    directory = tmp_path_factory.mktemp("pipeline")
    pipe.save_pretrained(str(directory))
    return directory


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image) for image in images])


class Recorder(torch.nn.Module):
    """Wraps a UNet and records the batch size of every call."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.batches = unet, []

    def forward(self, sample, timestep, encoder_hidden_states, encoder_attention_mask=None):
        self.batches.append(sample.shape[0])
        return self.unet(sample, timestep, encoder_hidden_states, encoder_attention_mask)


def embeddings(encoder, prompts) -> TextEmbeddings:
    return encoder.encode(prompts)


def reference_loop(unet, scheduler, x_t, cond, uncond, guidance_scale):
    """The guided loop with two separate UNet calls per step (what the batched loop must equal)."""
    with torch.no_grad():
        for t in scheduler.timesteps:
            out_cond = unet(x_t, t, cond.hidden_states, cond.attention_mask)
            if uncond is not None:
                out_uncond = unet(x_t, t, uncond.hidden_states, uncond.attention_mask)
                out_cond = classifier_free_guidance(out_cond, out_uncond, guidance_scale)
            x_t = scheduler.step(out_cond, t, x_t, use_clipped_model_output=uncond is not None).prev_sample
    return x_t


def test_batched_guidance_equals_two_separate_calls(pipe):
    encoder, unet = pipe.text_encoder, pipe.unet
    cond, uncond = embeddings(encoder, ["red", "blue square"]), embeddings(encoder, ["", "green"])
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    recorder = Recorder(unet)
    scheduler = make_scheduler("ddim", SCHEDULER_CONFIG)
    scheduler.set_timesteps(4)
    model_fn = guided_model_fn(recorder, cond, uncond, guidance_scale=3.0)
    x_0, steps = sample(model_fn, scheduler, x_t, torch.Generator(), use_clipped_model_output=True)
    assert recorder.batches == [4, 4, 4, 4] and steps == 4  # one UNet call of 2B per step
    torch.testing.assert_close(x_0, reference_loop(unet, scheduler, x_t, cond, uncond, 3.0))


def test_guidance_scale_one_runs_only_the_conditional_pass(pipe):
    encoder, unet = pipe.text_encoder, pipe.unet
    cond, uncond = embeddings(encoder, ["red", "blue"]), embeddings(encoder, ["", ""])
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    recorder = Recorder(unet)
    scheduler = make_scheduler("ddim", SCHEDULER_CONFIG)
    scheduler.set_timesteps(3)
    x_0, _ = sample(guided_model_fn(recorder, cond, uncond, guidance_scale=1.0), scheduler, x_t, torch.Generator())
    assert recorder.batches == [2, 2, 2]
    assert torch.equal(x_0, reference_loop(unet, scheduler, x_t, cond, None, 1.0))
    # and through the pipeline: a negative prompt changes nothing at scale 1 (and is reported as unused)
    plain = pipe("red", num_images=2, num_inference_steps=3, guidance_scale=1.0)
    negative = pipe("red", negative_prompt="blue", num_images=2, num_inference_steps=3, guidance_scale=1.0)
    assert np.array_equal(pixels(plain.images), pixels(negative.images))
    assert any("negative_prompt" in w for w in negative.warnings) and not plain.warnings


def test_prompts_condition_the_images_and_seeds_repeat(pipe):
    red = pipe("red", num_images=2, num_inference_steps=4, guidance_scale=3.0, seed=1)
    again = pipe("red", num_images=2, num_inference_steps=4, guidance_scale=3.0, seed=1)
    blue = pipe("blue", num_images=2, num_inference_steps=4, guidance_scale=3.0, seed=1)
    assert np.array_equal(pixels(red.images), pixels(again.images))
    assert not np.array_equal(pixels(red.images), pixels(blue.images))
    assert (
        red.settings["prompt"] == "red"
        and red.settings["guidance_scale"] == 3.0
        and red.settings["negative_prompt"] == ""
    )
    assert red.settings["truncated"] is False and red.warnings == []


def test_prompt_lists_and_empty_prompt(pipe):
    result = pipe(["red", ""], negative_prompt=["", "blue"], num_images=2, num_inference_steps=2, guidance_scale=2.0)
    assert len(result.images) == 4 and result.images[0].size == (8, 8)
    # prompt-major: images 0-1 are "red"; a single-prompt call with the same noise gives the same first images
    single = pipe("red", num_images=2, num_inference_steps=2, guidance_scale=2.0)
    assert np.array_equal(pixels(result.images[:2]), pixels(single.images))


def test_long_prompt_is_truncated_and_flagged(pipe):
    long_prompt = "a" * (MAX_LENGTH * 3)
    result = pipe(long_prompt, num_images=1, num_inference_steps=2, guidance_scale=2.0)
    assert result.settings["truncated"] is True
    assert (
        len(result.warnings) == 1 and "truncated" in result.warnings[0] and f"{MAX_LENGTH} tokens" in result.warnings[0]
    )
    # the negative prompt too
    result = pipe("red", negative_prompt=long_prompt, num_images=1, num_inference_steps=2, guidance_scale=2.0)
    assert result.settings["truncated"] is True and "negative_prompt" in result.warnings[0]


def test_callback_can_stop(pipe):
    seen = []
    result = pipe(
        "red", num_images=1, num_inference_steps=5, callback=lambda step, t, x_t, x_0: seen.append(step) or step == 1
    )
    assert seen == [0, 1] and result.steps_done == 2 and result.stopped


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(prompt=3), "prompt"),
        (dict(prompt=[]), "prompt"),
        (dict(prompt=["red", 3]), "prompt"),
        (dict(prompt=["red", "blue"], negative_prompt=["x"]), "negative_prompt"),
        (dict(negative_prompt=5), "negative_prompt"),
        (dict(guidance_scale=-1.0), "guidance_scale"),
        (dict(guidance_scale=float("nan")), "guidance_scale"),
        (dict(guidance_scale=float("inf")), "guidance_scale"),
        (dict(guidance_scale="7"), "guidance_scale"),
        (dict(guidance_scale=True), "guidance_scale"),
        (dict(guidance_rescale=1.5), "guidance_rescale"),
        (dict(num_images=0), "num_images"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(scheduler="plms"), "scheduler"),
        (dict(eta=2.0), "eta"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(pipe, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        pipe(**{"prompt": "red", "num_inference_steps": 2, **kwargs})


def test_save_and_load_round_trip(pipe, model_dir):
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "pipeline.json",
        "scheduler_config.json",
        "text_encoder",
        "unet",
    ]
    loaded = TextToImagePipeline.from_pretrained(str(model_dir), device="cpu")
    assert loaded.scheduler_config == SCHEDULER_CONFIG and loaded.name == model_dir.name
    kwargs = dict(
        prompt="red",
        negative_prompt="blue",
        num_images=2,
        num_inference_steps=3,
        scheduler="ddpm",
        guidance_scale=2.5,
        seed=4,
    )
    assert np.array_equal(pixels(loaded(**kwargs).images), pixels(pipe(**kwargs).images))


def test_text_encoder_may_be_referenced_instead_of_copied(pipe, tmp_path):
    clip = save_tiny_clip(tmp_path / "clip")
    pipe.save_pretrained(str(tmp_path / "model"), text_encoder_reference=clip)
    assert not (tmp_path / "model" / "text_encoder").exists()
    assert json.load(open(tmp_path / "model" / "pipeline.json"))["text_encoder"] == clip
    loaded = TextToImagePipeline.from_pretrained(str(tmp_path / "model"), device="cpu")
    kwargs = dict(prompt="red", num_images=1, num_inference_steps=2, guidance_scale=2.0)
    assert np.array_equal(pixels(loaded(**kwargs).images), pixels(pipe(**kwargs).images))


def test_loading_errors_name_the_problem(tmp_path, pipe):
    with pytest.raises(ValueError, match="unet/"):
        TextToImagePipeline.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="cross_attention_dim"):
        TextToImagePipeline(tiny_unet(cross_attention_dim=8), pipe.text_encoder, SCHEDULER_CONFIG)


def test_sample_cli_writes_pngs_with_settings_and_a_grid(model_dir, tmp_path):
    out = tmp_path / "out"
    sample_main(
        [
            "--model",
            str(model_dir),
            "--prompt",
            "red heart",
            "--negative-prompt",
            "",
            "--num-images",
            "3",
            "--steps",
            "2",
            "--scheduler",
            "ddim",
            "--guidance-scale",
            "4",
            "--seed",
            "5",
            "--num-candidates",  # the folder's tiny CLIP has no image tower (best of N's command: tests/test_rerank.py)
            "1",
            "--out",
            str(out),
        ]
    )
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "001.png", "002.png", "grid.png"]
    image = Image.open(out / "001.png")
    assert image.text["prompt"] == "red heart" and image.text["guidance_scale"] == "4.0" and image.text["seed"] == "5"
    assert image.text["index"] == "1" and image.text["truncated"] == "False"


@pytest.mark.parametrize("scheduler", ["dpm++", "euler"])
def test_diffusers_samplers_run_in_the_guided_loop(pipe, scheduler):
    result = pipe("red", num_images=2, num_inference_steps=4, scheduler=scheduler, guidance_scale=3.0, seed=1)
    again = pipe("red", num_images=2, num_inference_steps=4, scheduler=scheduler, guidance_scale=3.0, seed=1)
    assert len(result.images) == 2 and result.images[1].tobytes() == again.images[1].tobytes()


def test_half_precision_unet_keeps_x_t_and_guidance_in_float32():
    unet, encoder = tiny_unet(), tiny_text_encoder()
    full = TextToImagePipeline(unet, encoder, SCHEDULER_CONFIG)
    half = TextToImagePipeline(tiny_unet().to(torch.bfloat16), encoder, SCHEDULER_CONFIG)
    unet_inputs, loop_dtypes = [], []
    hook = half.unet.register_forward_pre_hook(
        lambda module, args: unet_inputs.append((args[0].dtype, args[2].dtype, args[0].shape[0]))
    )
    try:
        result = half(
            "red",
            num_images=2,
            num_inference_steps=4,
            guidance_scale=3.0,
            seed=0,
            callback=lambda step, t, x_t, x_0: loop_dtypes.append((x_t.dtype, x_0.dtype)) and None,
        )
    finally:
        hook.remove()
    assert unet_inputs == [(torch.bfloat16, torch.bfloat16, 4)] * 4  # one guided batch of 2B per step, all in bf16
    assert loop_dtypes == [(torch.float32, torch.float32)] * 4
    reference = full("red", num_images=2, num_inference_steps=4, guidance_scale=3.0, seed=0)
    assert np.abs(pixels(result.images).astype(np.int16) - pixels(reference.images).astype(np.int16)).mean() < 3


def test_dynamic_thresholding_changes_guided_samples_and_is_recorded(pipe):
    kwargs = dict(prompt="red", num_images=2, num_inference_steps=4, guidance_scale=12.0, seed=3)
    plain = pipe(**kwargs)
    thresholded = pipe(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=3.0, **kwargs)
    assert not np.array_equal(pixels(plain.images), pixels(thresholded.images))
    assert thresholded.settings["thresholding"] is True and thresholded.settings["sample_max_value"] == 3.0
    assert plain.settings["thresholding"] is False and "sample_max_value" not in plain.settings
    # with sample_max_value 1 the threshold s is 1: exactly clipping to [-1, 1], as the plain DDIM's clip_sample
    clip_only = pipe(thresholding=True, sample_max_value=1.0, **kwargs)
    assert np.array_equal(pixels(clip_only.images), pixels(plain.images))
    with pytest.raises(ValueError, match="dynamic_thresholding_ratio"):
        pipe(thresholding=True, dynamic_thresholding_ratio=1.5, **kwargs)
    with pytest.raises(ValueError, match="thresholding must be True or False"):
        pipe(thresholding="yes", **kwargs)
