"""Tests for txt2img.rerank: best of N candidates drawn in one candidate-major batch, ranked by a CLIP."""

import numpy as np
import pytest
import torch
from txt2img_fixtures import save_tiny_clip, save_tiny_clip_model, tiny_text_encoder, tiny_unet

from txt2img.clip import CLIPEmbedder
from txt2img.pipeline import TextToImagePipeline
from txt2img.rerank import best_of, candidate_scores, check_num_candidates, load_ranker, per_candidate

SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}


@pytest.fixture(scope="module")
def ranker(tmp_path_factory):
    return CLIPEmbedder.from_pretrained(save_tiny_clip_model(tmp_path_factory.mktemp("clip"), 8, 4))


@pytest.fixture(scope="module")
def pipe(ranker):
    return TextToImagePipeline(tiny_unet(), tiny_text_encoder(), SCHEDULE, name="tiny", ranker=ranker)


class Recorder(torch.nn.Module):
    """Wraps a UNet and records the batch size of every call."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.config, self.batches = unet, unet.config, []

    def forward(self, sample, *args, **kwargs):
        self.batches.append(sample.shape[0])
        return self.unet(sample, *args, **kwargs)


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image) for image in images]).astype(int)


def test_candidates_are_tiled_candidate_major():
    embeddings = tiny_text_encoder().encode(["a", "b"])
    tiled = per_candidate(embeddings, 3)
    assert tiled.hidden_states.shape[0] == 6 and len(tiled.truncated) == 6
    assert torch.equal(tiled.hidden_states[4], embeddings.hidden_states[0])  # row c * B + b is image b
    assert torch.equal(tiled.attention_mask[5], embeddings.attention_mask[1])


def test_best_of_keeps_each_images_own_best():
    x_0 = torch.arange(6.0).view(6, 1, 1, 1)  # (N B) with N = 3, B = 2: candidate c of image b is 2 c + b
    scores = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.5]])  # (B, N)
    assert best_of(x_0, scores).flatten().tolist() == [2.0, 1.0]
    assert best_of(x_0, scores, 1).flatten().tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="num_candidates"):
        best_of(x_0, scores, 4)


def test_scores_are_the_clip_cosines(ranker):
    x_0 = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = candidate_scores(ranker, x_0, ["red", "blue"], 2)
    expected = (ranker.image_features(x_0) * ranker.text_features(["red", "blue", "red", "blue"])).sum(-1)
    assert scores.shape == (2, 2)
    assert torch.allclose(scores, expected.view(2, 2).T, atol=1e-5)
    with pytest.raises(ValueError, match="x_0"):
        candidate_scores(ranker, x_0, ["red"], 2)


def test_num_candidates_is_checked_by_name(pipe):
    assert check_num_candidates(16) == 16
    for bad in (0, 17, 2.5, "4", True):
        with pytest.raises(ValueError, match="num_candidates"):
            pipe("red", num_candidates=bad, num_inference_steps=1)


def test_a_text_only_clip_cannot_rank(tmp_path):
    with pytest.raises(ValueError, match="image tower"):
        load_ranker(save_tiny_clip(tmp_path), "cpu")
    plain = TextToImagePipeline(tiny_unet(), tiny_text_encoder(), SCHEDULE)
    assert len(plain("red", num_images=2, num_inference_steps=1).images) == 2  # N = 1 needs no ranker
    with pytest.raises(ValueError, match="ranker"):
        plain("red", num_candidates=2, num_inference_steps=1)


def test_pipeline_draws_candidates_in_one_batch_and_keeps_the_best(pipe, ranker):
    recorder = Recorder(pipe.unet)
    pipe.unet = recorder
    try:
        events = list(pipe.stream(["red", "sun"], num_images=2, num_candidates=3, num_inference_steps=3, seed=5))
    finally:
        pipe.unet = recorder.unet
    result = events[-1]
    assert recorder.batches == [2 * 3 * 4] * 3  # guided: conditional and unconditional halves, N B rows each
    assert all(step.x_t.shape[0] == 4 for step in events[:-1])  # the steps show each image's first candidate
    assert len(result.images) == 4 and len(result.candidates) == 12
    assert result.settings["num_candidates"] == 3
    scores = torch.tensor(result.candidate_scores)  # (B, N)
    candidates = pixels(result.candidates).reshape(3, 4, 8, 8, 3)
    for b, image in enumerate(pixels(result.images)):
        assert np.array_equal(image, candidates[int(scores[b].argmax()), b])  # among its own candidates only


def test_n_equals_one_is_the_first_candidate_of_any_n(pipe):
    plain = pipe("red", num_images=2, num_inference_steps=3, seed=1)
    best = pipe("red", num_images=2, num_candidates=4, num_inference_steps=3, seed=1)
    assert np.array_equal(pixels(plain.images), pixels(best.candidates[:2]))  # same x_T rows, same images
    assert plain.candidates == [] and plain.settings["num_candidates"] == 1


def test_the_sampling_command_keeps_the_best_of_its_candidates(tmp_path):
    from PIL import Image

    from txt2img.clip import TextEncoder
    from txt2img.sample import main as sample_main

    clip = save_tiny_clip_model(tmp_path / "clip", 8, 4)  # both towers: the text encoder and the ranker
    pipe = TextToImagePipeline(tiny_unet(), TextEncoder.from_pretrained(clip), SCHEDULE)
    pipe.save_pretrained(str(tmp_path / "model"), text_encoder_reference=clip)
    out = tmp_path / "out"
    sample_main(
        ["--model", str(tmp_path / "model"), "--prompt", "sun", "--num-images", "2", "--steps", "2"]
        + ["--out", str(out)]
    )
    with Image.open(out / "001.png") as image:
        assert image.text["num_candidates"] == "1"  # the command's default
