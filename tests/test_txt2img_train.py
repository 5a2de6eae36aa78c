"""Text-to-image training: the caption cache, caption dropout, exact resume, the pipeline folder, and a tiny model that learns colours."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from txt2img_fixtures import TINY_UNET, save_tiny_clip, tiny_text_encoder

from txt2img.pipeline import TextToImagePipeline
from txt2img.train import TextToImageTask, TextToImageTrainConfig, encode_batch, main, train_text_to_image
from uncond.train import train
from uncond.train_loop import caption_lists, draw_captions, step_generator

UNET = {k: v for k, v in TINY_UNET.items() if k not in ("sample_size", "cross_attention_dim")}


class CaptionedColours(torch.utils.data.Dataset):
    """Six 8x8 solid images with captions, one caption twice; nothing is read from disk."""

    captions = ["red", "blue", "green", "red", "dark blue", "teal"]

    def __init__(self):
        colours = torch.linspace(-1, 1, len(self.captions))
        self.images = torch.stack(
            [torch.stack([c.expand(8, 8), (-c).expand(8, 8), torch.zeros(8, 8)]) for c in colours]
        )

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"pixel_values": self.images[i], "text": self.captions[i], "index": i}


def tiny_config(**overrides):
    values = dict(
        image_size=8,
        batch_size=4,
        max_steps=4,
        warmup_steps=2,
        checkpoint_every=2,
        sample_every=1000,
        unet=UNET,
        seed=3,
        clip="tiny",
        p_uncond=0.5,
        validation_prompts=["red", "blue"],
    )
    values.update(overrides)
    return TextToImageTrainConfig(**values)


@pytest.fixture(scope="module")
def encoder():
    return tiny_text_encoder()


def test_caption_lists_fall_back_to_the_one_caption_of_each_image():
    assert caption_lists(CaptionedColours()) == [[c] for c in CaptionedColours.captions]
    dataset = CaptionedColours()
    dataset.caption_lists = [["red", "scarlet"], ["blue"], ["green"], ["red"], ["dark blue", "navy"], ["teal"]]
    assert caption_lists(dataset) == dataset.caption_lists
    dataset.caption_lists[2] = []
    with pytest.raises(ValueError, match="caption_lists"):
        caption_lists(dataset)


def test_one_caption_is_drawn_per_image_uniformly_and_reproducibly():
    lists = [["a", "b", "c", "d"], ["e"]]
    indices = torch.tensor([0] * 4000 + [1])
    drawn = draw_captions(lists, indices, torch.Generator().manual_seed(0))
    assert drawn[-1] == "e" and {d: drawn[:-1].count(d) for d in "abcd"} == pytest.approx(
        dict.fromkeys("abcd", 1000), abs=100
    )
    assert drawn == draw_captions(lists, indices, torch.Generator().manual_seed(0))
    assert drawn != draw_captions(lists, indices, torch.Generator().manual_seed(1))


def multi_caption_colours():
    dataset = CaptionedColours()
    dataset.caption_lists = [
        ["red", "scarlet", "rot"],
        ["blue"],
        ["green", "grün"],
        ["red"],
        ["dark blue"],
        ["teal", "青"],
    ]
    return dataset


def test_each_step_encodes_the_drawn_captions_of_its_batch(encoder):
    task = TextToImageTask(multi_caption_colours(), encoder, tiny_config(p_uncond=0.0), log=lambda *_: None)
    indices = torch.arange(6).repeat(4)  # 24 items
    kwargs = task.model_kwargs(7, indices, torch.Generator().manual_seed(0), slice(0, 24), "cpu")
    captions = task.batch_captions(indices, torch.Generator().manual_seed(0), 7)
    assert all(c in task.caption_lists[i] for c, i in zip(captions, indices.tolist()))
    assert {"scarlet", "rot", "red"} <= {c for c, i in zip(captions, indices.tolist()) if i == 0}
    full = encoder.encode(captions)  # (24, 16, D) padded to the tokenizer's length
    length = kwargs["encoder_hidden_states"].shape[1]
    assert length == int(full.attention_mask.sum(1).max()) < full.hidden_states.shape[1]  # cut after the longest
    torch.testing.assert_close(kwargs["encoder_hidden_states"], full.hidden_states[:, :length])
    assert torch.equal(kwargs["encoder_attention_mask"], full.attention_mask[:, :length])
    assert not kwargs["encoder_hidden_states"].is_inference()  # autograd may save it for the backward pass
    # the caption draws depend on (seed, step) only; a process's part is a slice of the global batch's
    again = task.model_kwargs(7, indices, torch.Generator().manual_seed(0), slice(12, 24), "cpu")
    expected = encode_batch(encoder, captions[12:]).hidden_states
    torch.testing.assert_close(again["encoder_hidden_states"], expected)
    assert task.batch_captions(indices, torch.Generator().manual_seed(0), 8) != captions


def test_long_captions_are_truncated_and_logged_once(encoder):
    dataset = CaptionedColours()
    dataset.captions = dataset.captions[:5] + ["a colour with a rather long name"]
    messages = []
    task = TextToImageTask(dataset, encoder, tiny_config(p_uncond=0.0), log=messages.append)
    for step in range(2):
        kwargs = task.model_kwargs(step, torch.arange(6), torch.Generator().manual_seed(0), slice(0, 6), "cpu")
    assert kwargs["encoder_hidden_states"].shape[1] == encoder.max_length
    assert messages == ["caption longer than 16 tokens, truncated: 'a colour with a rather long name'"]


def test_model_kwargs_drop_captions_with_probability_p_uncond(encoder):
    dataset = CaptionedColours()
    indices = torch.arange(6).repeat(50)  # 300 items
    empty = encoder.encode([""])

    def kwargs(p, seed=0):
        task = TextToImageTask(dataset, encoder, tiny_config(p_uncond=p), log=lambda *_: None)
        return task.model_kwargs(0, indices, torch.Generator().manual_seed(seed), slice(0, 300), "cpu")

    kept = kwargs(0.0)
    torch.testing.assert_close(
        kept["encoder_hidden_states"], encode_batch(encoder, [dataset.captions[i] for i in indices]).hidden_states
    )
    dropped = kwargs(1.0)
    torch.testing.assert_close(dropped["encoder_hidden_states"], empty.hidden_states[:, :2].expand(300, -1, -1))
    assert dropped["encoder_attention_mask"].all() and dropped["encoder_attention_mask"].shape == (300, 2)  # start, end
    half, half_again = kwargs(0.5), kwargs(0.5)
    assert torch.equal(half["encoder_hidden_states"], half_again["encoder_hidden_states"])  # same generator, same drops
    is_empty = half["encoder_attention_mask"].sum(1) == 2
    assert 100 < is_empty.sum() < 200
    # the drops come from the step's noise stream, as when each caption had one cached embedding
    drop = torch.rand(300, generator=torch.Generator().manual_seed(0)) < 0.5
    assert torch.equal(is_empty, drop)


class Killed(Exception):
    pass


class KilledAt(TextToImageTask):
    """Dies right after the checkpoint of step `kill_step` is written, as a killed process would; no sample grids."""

    def __init__(self, encoder, config, kill_step):
        super().__init__(multi_caption_colours(), encoder, config, log=lambda *_: None)
        self.kill_step = kill_step

    def save_model(self, out_dir, model, config):
        super().save_model(out_dir, model, config)
        if json.load(open(os.path.join(out_dir, "checkpoint", "state.json")))["step"] == self.kill_step:
            raise Killed()

    def evaluate(self, *args):
        pass  # sampling is tested elsewhere; keep this test fast


def test_killed_and_resumed_run_equals_uninterrupted(encoder, tmp_path):
    config = tiny_config()
    train("", str(tmp_path / "straight"), config, task=KilledAt(encoder, config, None), log=lambda *_: None)
    with pytest.raises(Killed):
        train("", str(tmp_path / "resumed"), config, task=KilledAt(encoder, config, 2), log=lambda *_: None)
    train("", str(tmp_path / "resumed"), config, resume=True, task=KilledAt(encoder, config, None), log=lambda *_: None)
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        straight = load_file(tmp_path / "straight" / "checkpoint" / name)
        resumed = load_file(tmp_path / "resumed" / "checkpoint" / name)
        assert straight.keys() == resumed.keys()
        assert all(torch.equal(straight[key], resumed[key]) for key in straight), name
    # a hub id is referenced in pipeline.json, not copied
    assert json.load(open(tmp_path / "resumed" / "pipeline.json"))["text_encoder"] == "tiny"
    assert not (tmp_path / "resumed" / "text_encoder").exists()
    assert "grün" in json.load(open(tmp_path / "resumed" / "captions.json"))  # every caption of every list
    names = json.load(open(tmp_path / "resumed" / "names.json"))  # the primary captions, for suggestions
    assert "grün" not in names and names == sorted(set(names))
    saved = json.load(open(tmp_path / "resumed" / "train_config.json"))
    assert saved["p_uncond"] == 0.5 and saved["validation_prompts"] == ["red", "blue"] and saved["clip"] == "tiny"


def test_bad_settings_raise(encoder):
    with pytest.raises(ValueError, match="p_uncond"):
        tiny_config(p_uncond=1.5)
    with pytest.raises(ValueError, match="validation_prompts"):
        tiny_config(validation_prompts=[])
    with pytest.raises(ValueError, match="batch_size"):  # TrainConfig's own checks still run
        tiny_config(batch_size=0)
    with pytest.raises(ValueError, match="clip"):
        train_text_to_image("", "unused", tiny_config(clip=""), dataset=CaptionedColours())
    task = TextToImageTask(CaptionedColours(), encoder, tiny_config(), log=lambda *_: None)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        task.build_model(tiny_config(unet={**UNET, "cross_attention_dim": 8}))


def mean_colours(images) -> np.ndarray:
    """(N, 3) mean RGB of each image."""
    return np.stack([np.asarray(image, dtype=np.float64).mean(axis=(0, 1)) for image in images])


@pytest.mark.slow
def test_tiny_model_learns_which_caption_is_which_colour(tmp_path):
    # two captions, two solid squares; trained through the command line with a local CLIP folder
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "metadata.jsonl", "w") as f:
        for colour in ("red", "blue"):
            Image.new("RGB", (8, 8), colour).save(data / f"{colour}.png")
            f.write(json.dumps({"file_name": f"{colour}.png", "text": colour}) + "\n")
    clip = save_tiny_clip(tmp_path / "clip")
    unet = {**UNET, "block_out_channels": [8, 16], "norm_num_groups": 4, "attention_resolutions": [4]}
    config = dict(
        image_size=8,
        batch_size=16,
        max_steps=150,
        learning_rate=1e-2,
        warmup_steps=10,
        ema_decay=0.9,
        prediction_type="v_prediction",
        checkpoint_every=1000,
        num_sample_images=4,
        validation_prompts=["red", "blue"],
        unet=unet,
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    main(
        ["--data", str(data), "--clip", clip, "--out", str(tmp_path / "run"), "--config", str(tmp_path / "config.json")]
    )
    run = tmp_path / "run"
    assert {"unet", "text_encoder", "pipeline.json", "scheduler_config.json", "train_config.json"} <= {
        p.name for p in run.iterdir()
    }
    assert Image.open(run / "samples" / "step_0000150.png").size == (16, 16)  # 2 prompts x 2 images

    pipe = TextToImagePipeline.from_pretrained(str(run), device="cpu")
    for guidance_scale in (1.0, 3.0):
        red = mean_colours(
            pipe("red", num_images=4, num_inference_steps=10, guidance_scale=guidance_scale, seed=0).images
        )
        blue = mean_colours(
            pipe("blue", num_images=4, num_inference_steps=10, guidance_scale=guidance_scale, seed=0).images
        )
        assert (red[:, 0] > red[:, 2] + 100).all(), (guidance_scale, red)
        assert (blue[:, 2] > blue[:, 0] + 100).all(), (guidance_scale, blue)
        assert (red[:, 1] < 80).all() and (blue[:, 1] < 80).all(), (guidance_scale, red, blue)


def test_caption_draws_are_independent_of_caption_dropout(encoder):
    dataset = CaptionedColours()
    dataset.caption_lists = [["red", "blue"]] * 6
    task = TextToImageTask(dataset, encoder, tiny_config(p_uncond=0.5), log=lambda *_: None)
    # the loop hands the task the step's generator (stream 0); caption draws take a stream of their own
    captions = task.batch_captions(torch.arange(6).repeat(50), step_generator(task.config.seed, 0), 0)
    kept = [c for c in captions if c]
    assert 100 < len(kept) < 200 and 0.3 < kept.count("red") / len(kept) < 0.7


def styled_colours():
    dataset = multi_caption_colours()
    dataset.styles = ["noto", "openmoji-line", "twemoji", "fluent-high-contrast", "openmoji-line", "noto"]
    return dataset


def test_p_name_draws_the_name_that_often_and_off_keeps_the_plain_draws(encoder):
    dataset = multi_caption_colours()
    indices = torch.zeros(4000, dtype=torch.long)  # image 0: "red", "scarlet", "rot"

    def captions(**overrides):
        task = TextToImageTask(dataset, encoder, tiny_config(p_uncond=0.0, **overrides), log=lambda *_: None)
        return task.batch_captions(indices, torch.Generator().manual_seed(0), 3)

    plain, named = captions(), captions(p_name=0.5)
    assert plain == captions(p_name=0.0)  # off: the draws of before
    assert plain.count("red") == pytest.approx(4000 / 3, abs=120)
    assert named.count("red") == pytest.approx(4000 * (0.5 + 0.5 / 3), abs=120)  # the name, or drawn as before
    assert all(n == p for n, p in zip(named, plain) if n != "red")


def test_always_styled_styles_carry_their_style_words(encoder):
    config = tiny_config(p_uncond=0.0, always_styled=["openmoji-line", "fluent-high-contrast"])
    task = TextToImageTask(styled_colours(), encoder, config, log=lambda *_: None)
    captions = task.batch_captions(torch.arange(6), torch.Generator().manual_seed(0), 0)
    plain = TextToImageTask(styled_colours(), encoder, tiny_config(p_uncond=0.0), log=lambda *_: None)
    drawn = plain.batch_captions(torch.arange(6), torch.Generator().manual_seed(0), 0)
    assert captions[0] == drawn[0] and captions[2] == drawn[2] and captions[5] == drawn[5]  # colour styles: as drawn
    assert captions[1] == "blue, line art" and captions[4] == "dark blue, line art"
    assert captions[3] == "red, high contrast style"


def test_with_style_leaves_captions_that_name_the_style_and_the_empty_prompt():
    from txt2img.train import with_style

    assert with_style("owl, black and white line art", "openmoji-line", ["openmoji-line"]).count("line art") == 1
    assert with_style("LINE ART", "openmoji-line", ["openmoji-line"]) == "LINE ART"
    assert with_style("owl", "noto", ["openmoji-line"]) == "owl"
    assert with_style("owl", "", ["openmoji-line"]) == "owl"


def test_dropped_captions_stay_empty_with_always_styled(encoder):
    config = tiny_config(p_uncond=1.0, always_styled=["openmoji-line"])
    task = TextToImageTask(styled_colours(), encoder, config, log=lambda *_: None)
    assert task.batch_captions(torch.arange(6), torch.Generator().manual_seed(0), 0) == [""] * 6


def test_caption_mix_settings_are_checked():
    with pytest.raises(ValueError, match="p_name"):
        tiny_config(p_name=1.5)
    with pytest.raises(ValueError, match="always_styled"):
        tiny_config(always_styled=["sketch"])
