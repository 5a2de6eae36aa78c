"""The project's CLIP: a BPE in CLIP's format, contrastive training, save/load round trips, the retrieval metric."""

import json
import math
import os
import shutil
from dataclasses import asdict

import pytest
import torch
from PIL import Image

import txt2img.train_clip
from txt2img.clip import CLIPEmbedder, TextEncoder
from txt2img.clip_tokenizer import train_tokenizer
from txt2img.train_clip import (
    CLIPTask,
    CLIPTrainConfig,
    build_model,
    caption_matches,
    caption_retrieval_accuracy,
    clip_loss,
    paired_retrieval_accuracy,
    save_clip,
    train_clip,
)

COLOURS = {
    "red": (230, 20, 20),
    "green": (20, 170, 40),
    "blue": (20, 40, 230),
    "yellow": (250, 230, 0),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "purple": (130, 0, 150),
    "orange": (255, 140, 0),
}
CAPTIONS = [
    "red heart",
    "green heart",
    "blue heart",
    "waving hand: medium skin tone",
    "waving hand: dark skin tone",
    "flag: Japan",
    "flag: France",
    "cat face",
    "grinning face",
    "red apple",
    "man: red hair",
    "woman: red hair",
    "woman’s hat",
    "keycap: 1",
    "Japanese “here” button",
]
TINY = dict(
    image_size=8,
    patch_size=4,
    vocab_size=600,
    max_text_length=16,
    text_hidden_size=32,
    text_layers=1,
    text_heads=2,
    vision_hidden_size=32,
    vision_layers=1,
    vision_heads=2,
    projection_dim=32,
    batch_size=8,
    max_steps=40,
    learning_rate=3e-3,
    warmup_steps=5,
    weight_decay=0.0,
    eval_every=40,
    log_every=1,
    seed=0,
)


def write_colours(folder, size=8):
    """Eight solid-colour squares captioned with their colour's name, in the imagefolder layout."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.jsonl", "w") as meta:
        for name, rgb in COLOURS.items():
            Image.new("RGB", (size, size), rgb).save(folder / f"{name}.png")
            meta.write(json.dumps({"file_name": f"{name}.png", "text": name}) + "\n")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CLIP trained on the eight colours: (folder, final metrics, logged rows)."""
    data = write_colours(tmp_path_factory.mktemp("colours"))
    out = tmp_path_factory.mktemp("clip")
    metrics = train_clip(str(data), str(out), CLIPTrainConfig(**TINY), log=lambda *_: None)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return out, metrics, rows


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A freshly initialised CLIP saved the way training saves it: (folder, in-memory model, tokenizer)."""
    out = tmp_path_factory.mktemp("clip_init")
    config = CLIPTrainConfig(**TINY)
    tokenizer = train_tokenizer(CAPTIONS, config.vocab_size, config.max_text_length, out_dir=str(out))
    torch.manual_seed(0)
    model = build_model(config, tokenizer).eval()
    save_clip(str(out), model, config)
    return out, model, tokenizer


def test_training_lowers_loss_and_retrieves(trained):
    out, metrics, rows = trained
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) == TINY["max_steps"]
    assert losses[0] == pytest.approx(math.log(8), abs=0.3)  # untrained: every pairing about equally likely
    assert losses[-1] < 0.25 * losses[0]
    assert metrics["step"] == TINY["max_steps"] and metrics["num_pairs"] == 8 and metrics["chance_top1"] == 1 / 8
    assert metrics["image_to_text_top1"] >= 0.75 and metrics["text_to_image_top1"] >= 0.75
    assert metrics["image_to_text_top5"] == 1.0 and metrics["text_to_image_top5"] == 1.0
    assert json.loads((out / "retrieval.json").read_text()) == metrics
    assert json.loads((out / "train_config.json").read_text()) == asdict(CLIPTrainConfig(**TINY))


def test_trained_folder_loads_as_clip(trained):
    from transformers import CLIPModel, CLIPTextModel

    out, metrics, _ = trained
    assert {
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "preprocessor_config.json",
    } <= {p.name for p in out.iterdir()}
    model, info = CLIPModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    text_model, info = CLIPTextModel.from_pretrained(out, output_loading_info=True)  # the vision tower is skipped
    assert not info["missing_keys"]
    assert torch.equal(text_model.embeddings.token_embedding.weight, model.text_model.embeddings.token_embedding.weight)

    # The embedder retrieves what training measured: each colour's own caption scores highest.
    embedder = CLIPEmbedder.from_pretrained(str(out))
    images = torch.stack(
        [torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1).expand(3, 16, 16) for rgb in COLOURS.values()]
    )
    images = images / 127.5 - 1  # 16 px: resized to the tower's 8
    image_embeds, text_embeds = embedder.image_features(images), embedder.text_features(list(COLOURS))
    assert image_embeds.shape == (8, TINY["projection_dim"]) == text_embeds.shape
    assert torch.allclose(image_embeds.norm(dim=-1), torch.ones(8), atol=1e-5)
    found = paired_retrieval_accuracy(image_embeds @ text_embeds.t())
    assert found["image_to_text_top1"] == pytest.approx(metrics["image_to_text_top1"])
    scores = embedder.score(images, list(COLOURS))
    assert torch.allclose(scores, 100 * (image_embeds * text_embeds).sum(-1).clamp(min=0), atol=1e-4)


def test_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer, CLIPTokenizer

    train_tokenizer(CAPTIONS, vocab_size=600, model_max_length=16, out_dir=str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(tokenizer, CLIPTokenizer) and tokenizer.model_max_length == 16
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|startoftext|>",
        "<|endoftext|>",
        "<|endoftext|>",
    )
    vocab = tokenizer.get_vocab()
    assert vocab["!"] == 0 and vocab["<|endoftext|>"] == len(vocab) - 1 == tokenizer.eos_token_id  # openai's layout

    ids = tokenizer("Red HEART")["input_ids"]  # lower-cased like CLIP
    assert tokenizer.convert_ids_to_tokens(ids) == ["<|startoftext|>", "red</w>", "heart</w>", "<|endoftext|>"]
    assert len(tokenizer("waving hand: medium skin tone")["input_ids"]) == 2 + 6
    # Unseen text falls back to byte pieces, never to an unknown token (which is the end token in CLIP).
    for text in ["zebra crossing", "café ☕ 🎉", ""]:
        inner = tokenizer(text)["input_ids"][1:-1]
        assert tokenizer.eos_token_id not in inner and tokenizer.bos_token_id not in inner
        assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    padded = tokenizer(
        ["red heart", " ".join(["flag"] * 30)], padding="max_length", truncation=True, return_tensors="pt"
    )
    assert padded["input_ids"].shape == (2, 16)
    assert (
        padded["input_ids"][0, 3:].eq(tokenizer.eos_token_id).all()
        and padded["attention_mask"][0].tolist() == [1] * 4 + [0] * 12
    )
    assert padded["input_ids"][1, -1] == tokenizer.eos_token_id and padded["attention_mask"][1].all()

    # CLIP's own files alone (vocab.json + merges.txt) tokenize the same as the full folder.
    assert (tmp_path / "merges.txt").read_text().startswith("#version: 0.2\n")
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tmp_path / name, bare / name)
    bare_tokenizer = AutoTokenizer.from_pretrained(bare)
    for text in CAPTIONS + ["zebra crossing", "café ☕ 🎉"]:
        assert bare_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_text_encoder_round_trip(untrained):
    out, model, tokenizer = untrained
    encoder = TextEncoder.from_pretrained(str(out))
    long_prompt = "red heart with " + " and ".join(["blue flag"] * 10)
    prompts = ["red heart", "flag: Japan", long_prompt]
    embeddings = encoder.encode(prompts)
    tokens = tokenizer(prompts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        expected = model.text_model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).last_hidden_state
    assert embeddings.hidden_states.shape == (3, 16, TINY["text_hidden_size"])
    assert torch.equal(embeddings.hidden_states, expected)
    assert embeddings.attention_mask.sum(1).tolist() == [4, 5, 16]  # start, words, end
    assert embeddings.truncated == [False, False, True]


def test_paired_retrieval_accuracy_known_answers():
    oracle = paired_retrieval_accuracy(torch.eye(10))
    assert all(oracle[f"{d}_top{k}"] == 1.0 for d in ("image_to_text", "text_to_image") for k in (1, 5))
    reversed_ = paired_retrieval_accuracy(-torch.eye(10))  # every true partner ranks last
    assert all(reversed_[f"{d}_top{k}"] == 0.0 for d in ("image_to_text", "text_to_image") for k in (1, 5))
    assert (
        paired_retrieval_accuracy(torch.ones(10, 10))["image_to_text_top5"] == 0.0
    )  # ties count against the true partner
    assert oracle["chance_top1"] == 0.1 and oracle["chance_top5"] == 0.5
    # rows are images, columns texts: image 0 ranks its text third; texts 1 and 2 rank their images second
    similarity = torch.tensor([[0.9, 0.95, 0.99], [0.1, 0.8, 0.0], [0.0, 0.0, 0.5]])
    found = paired_retrieval_accuracy(similarity, ks=(1, 2))
    assert found["image_to_text_top1"] == found["image_to_text_top2"] == pytest.approx(2 / 3)
    assert found["text_to_image_top1"] == pytest.approx(1 / 3) and found["text_to_image_top2"] == 1.0
    with pytest.raises(ValueError, match="similarity"):
        paired_retrieval_accuracy(torch.zeros(3, 4))


def test_caption_retrieval_accuracy_with_repeated_captions():
    # distinct captions, one per image: the paired metric
    similarity = torch.tensor([[0.9, 0.95, 0.99], [0.1, 0.8, 0.0], [0.0, 0.0, 0.5]])
    assert caption_retrieval_accuracy(similarity, [0, 1, 2], ks=(1, 2)) == paired_retrieval_accuracy(
        similarity, ks=(1, 2)
    )
    # images 0 and 1 are one emoji in two styles (caption 0), image 2 is caption 1
    similarity = torch.tensor([[0.9, 0.1], [0.2, 0.3], [0.95, 0.5]])  # (3 images, 2 captions)
    found = caption_retrieval_accuracy(similarity, [0, 0, 1], ks=(1, 2))
    assert found["image_to_text_top1"] == pytest.approx(1 / 3)  # only image 0 ranks its caption first
    assert found["image_to_text_top2"] == 1.0
    # caption 0's best image (0.9) is beaten by image 2 (0.95): second; caption 1 finds image 2 first
    assert found["text_to_image_top1"] == 0.5 and found["text_to_image_top2"] == 1.0
    assert found["chance_top1"] == 0.5
    assert caption_retrieval_accuracy(torch.ones(3, 2), [0, 0, 1], ks=(1,))["text_to_image_top1"] == 0.0  # ties
    with pytest.raises(ValueError, match="one caption index per image"):
        caption_retrieval_accuracy(similarity, [0, 1])
    with pytest.raises(ValueError, match="every caption column"):
        caption_retrieval_accuracy(similarity, [0, 0, 0])


def test_clip_loss():
    assert clip_loss(torch.zeros(8, 8)).item() == pytest.approx(math.log(8))
    assert clip_loss(100 * torch.eye(8)).item() < 1e-6
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    assert clip_loss(logits).item() == pytest.approx(clip_loss(logits.t()).item())  # symmetric in its two directions
    # on known numbers: (CE over rows + CE over columns) / 2
    logits = torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    rows = -(2 - math.log(math.exp(2) + 1)) - (3 - math.log(math.exp(1) + math.exp(3)))
    columns = -(2 - math.log(math.exp(2) + math.exp(1))) - (3 - math.log(1 + math.exp(3)))
    assert clip_loss(logits).item() == pytest.approx((rows / 2 + columns / 2) / 2)


def test_clip_loss_masks_false_negatives():
    # text 0 ("car") also describes image 1: that pair is neither a positive nor a negative
    logits = torch.tensor([[2.0, 5.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    matches = caption_matches(["car", "taxi", "sun"], [{"car", "automobile"}, {"taxi", "car"}, {"sun"}])
    assert matches.tolist() == [[True, True, False], [False, True, False], [False, False, True]]
    masked = torch.tensor([[2.0, -math.inf, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 4.0]])
    assert clip_loss(logits, matches).item() == pytest.approx(clip_loss(masked).item())
    assert clip_loss(logits, matches).item() < clip_loss(logits).item()
    # a batch of one caption for all: each row and column keeps only its diagonal, nothing to tell apart
    assert clip_loss(torch.randn(4, 4), torch.ones(4, 4, dtype=torch.bool)).item() == 0.0


def test_batch_draws_a_caption_per_image_and_marks_which_describe_which(tmp_path):
    dataset = ColourPairs()
    dataset.caption_lists = [[name, "colour"] for name in COLOURS]  # "colour" describes every image
    tokenizer = train_tokenizer(list(COLOURS) + ["colour"], vocab_size=600, model_max_length=16)
    task = CLIPTask(dataset, tokenizer, CLIPTrainConfig(**TINY), str(tmp_path), log=lambda *_: None)
    batch = task.batch(3, slice(0, 8), "cpu")
    texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    assert {t.strip() for t in texts} <= set(COLOURS) | {"colour"}
    generic = torch.tensor([t.strip() == "colour" for t in texts])
    assert 0 < generic.sum() < 8  # with 8 images, both kinds of caption were drawn
    assert torch.equal(batch["matches"][generic], torch.ones(int(generic.sum()), 8, dtype=torch.bool))
    assert torch.equal(batch["matches"][~generic], torch.eye(8, dtype=torch.bool)[~generic])
    again = task.batch(3, slice(0, 8), "cpu")
    assert torch.equal(again["input_ids"], batch["input_ids"]) and torch.equal(
        again["pixel_values"], batch["pixel_values"]
    )
    with pytest.raises(ValueError, match="one process"):
        task.batch(3, slice(0, 4), "cpu")


def test_optimizer_and_temperature_as_clip(tmp_path):
    config = CLIPTrainConfig(**TINY)
    tokenizer = train_tokenizer(list(COLOURS), vocab_size=600, model_max_length=16)
    task = CLIPTask(ColourPairs(), tokenizer, config, str(tmp_path), log=lambda *_: None)
    model = task.build_model(config)
    decayed, plain = task.build_optimizer(model, config).param_groups
    assert decayed["weight_decay"] == 0.0 and plain["weight_decay"] == 0.0  # TINY has no weight decay
    decayed, plain = task.build_optimizer(model, CLIPTrainConfig(**(TINY | {"weight_decay": 0.1}))).param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim >= 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and any(p is model.logit_scale for p in plain["params"])
    assert decayed["betas"] == (0.9, 0.98) and decayed["eps"] == 1e-6
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    task.after_step(model)
    assert model.logit_scale.exp().item() == pytest.approx(100.0)  # exp(s) capped at 100
    assert task.log_row(model) == {"logit_scale": pytest.approx(100.0)}


MULTILINGUAL = [
    "赤いハート",
    "红心",
    "빨간 하트",
    "красное сердце",
    "corazón rojo",
    "coração vermelho",
    "علم فيجي",
    "kırmızı kalp",
]


def test_tokenizer_covers_many_scripts(tmp_path):
    from transformers import AutoTokenizer

    train_tokenizer(CAPTIONS + MULTILINGUAL * 3, vocab_size=700, model_max_length=32, out_dir=str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tokenizer) <= 700  # fewer when the captions run out of merges; else the size asked for:
    assert len(train_tokenizer(CAPTIONS + MULTILINGUAL, vocab_size=600, model_max_length=32)) == 600
    for text in MULTILINGUAL + ["犬", "собака", "개", "Ελληνικά"]:  # seen, and unseen (byte pieces)
        ids = tokenizer(text)["input_ids"]
        inner = ids[1:-1]
        assert inner and tokenizer.eos_token_id not in inner and tokenizer.bos_token_id not in inner  # no unknowns
        assert tokenizer.decode(ids, skip_special_tokens=True) == text.lower()
    # captions seen often get merges: a whole word per token
    assert len(tokenizer("赤いハート")["input_ids"]) == 3 and len(tokenizer("красное сердце")["input_ids"]) == 4
    # a combining mark is a word of its own in CLIP's regex: tokenized, no unknown, decoded with a space before it
    ids = tokenizer("جزیرهٔ")["input_ids"]
    assert tokenizer.eos_token_id not in ids[1:-1] and tokenizer.decode(ids, skip_special_tokens=True) == "جزیره ٔ"


class ColourPairs:
    """The eight colours in memory: uint8 images (8, 3, 8, 8) and their names as captions."""

    def __init__(self):
        self.images = torch.tensor(list(COLOURS.values()), dtype=torch.uint8).view(8, 3, 1, 1).expand(8, 3, 8, 8)
        self.captions = list(COLOURS)

    def __len__(self):
        return len(self.images)


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    config = CLIPTrainConfig(**(TINY | {"max_steps": 6, "checkpoint_every": 2, "eval_every": 3}))
    train_clip(ColourPairs(), str(tmp_path / "straight"), config, log=lambda *_: None)
    save_model = CLIPTask.save_model

    def killed_at_4(self, out_dir, model, config):
        save_model(self, out_dir, model, config)
        if json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["step"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(txt2img.train_clip.CLIPTask, "save_model", killed_at_4)
    with pytest.raises(KeyboardInterrupt):
        train_clip(ColourPairs(), str(tmp_path / "resumed"), config, log=lambda *_: None)
    monkeypatch.setattr(txt2img.train_clip.CLIPTask, "save_model", save_model)
    metrics = train_clip(ColourPairs(), str(tmp_path / "resumed"), config, resume=True, log=lambda *_: None)
    for name in ("model.safetensors", "optimizer.safetensors"):
        straight = load_file(tmp_path / "straight" / "checkpoint" / name)
        resumed = load_file(tmp_path / "resumed" / "checkpoint" / name)
        assert straight.keys() == resumed.keys()
        assert all(torch.equal(straight[k], resumed[k]) for k in straight), name
    assert metrics == json.loads((tmp_path / "straight" / "retrieval.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "step" in row] == [1, 2, 3, 4, 5, 6]
    assert [row["eval"]["step"] for row in rows if "eval" in row] == [3, 6]


@pytest.mark.slow
def test_cli_bf16(tmp_path):
    import os
    import subprocess
    import sys

    # a process of its own, as from a shell: accelerate fixes a process's mixed precision when first asked
    data = write_colours(tmp_path / "colours")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k not in ("max_steps", "eval_every")]
    command = ["-m", "txt2img.train_clip", "--data", str(data), "--out", str(tmp_path / "clip"), *flags]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, *command, "--max-steps", "3", "--mixed-precision", "bf16"], cwd=root, check=True)
    assert json.loads((tmp_path / "clip" / "retrieval.json").read_text())["step"] == 3
    saved = json.loads((tmp_path / "clip" / "train_config.json").read_text())
    assert saved["mixed_precision"] == "bf16" and saved["max_steps"] == 3
    encoder = TextEncoder.from_pretrained(str(tmp_path / "clip"))
    assert torch.isfinite(encoder.encode(["red"]).hidden_states).all()


@pytest.mark.parametrize(
    "bad, name",
    [
        (dict(patch_size=3), "patch_size"),
        (dict(vocab_size=100), "vocab_size"),
        (dict(mixed_precision="fp16"), "mixed_precision"),
        (dict(batch_size=0), "batch_size"),
        (dict(text_heads=3), "text_heads"),
        (dict(max_text_length=2), "max_text_length"),
    ],
)
def test_bad_config(bad, name):
    with pytest.raises(ValueError, match=name):
        CLIPTrainConfig(**(TINY | bad))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="captions"):
        train_tokenizer("red heart")
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(CAPTIONS, vocab_size=10)
    data = write_colours(tmp_path / "colours")
    with pytest.raises(ValueError, match="batch_size"):
        train_clip(str(data), str(tmp_path / "out"), CLIPTrainConfig(**(TINY | {"batch_size": 9})), log=lambda *_: None)
    with pytest.raises(ValueError, match="path_or_name"):
        train_clip(str(tmp_path / "missing"), str(tmp_path / "out"), CLIPTrainConfig(**TINY), log=lambda *_: None)
    with pytest.raises(ValueError, match="could not load"):
        CLIPEmbedder.from_pretrained(str(tmp_path / "missing"))


def test_the_encoder_tokenizes_from_several_threads_at_once():
    """The app tokenizes live pictures' prompts beside its generations' (without the lock: 'Unable to create tensor')."""
    import threading

    encoder = TextEncoder.from_pretrained(os.path.join(os.path.dirname(os.path.dirname(__file__)), "weights", "clip"))
    expected = encoder.tokenize(["red heart 0", "x"])[0]
    errors = []

    def tokenize(i):
        for _ in range(300):
            try:
                ids = encoder.tokenize([f"red heart {i}", "x"])[0]
                assert ids.shape == expected.shape
            except Exception as error:  # counted below: any failure of any thread
                errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=tokenize, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:2]
