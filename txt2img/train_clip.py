"""Train the project's own small CLIP (Radford et al. 2021) from scratch on image-caption pairs.

    python -m txt2img.train_clip --data data/emoji --out runs/clip [--config FILE] [--mixed-precision bf16]

1. A byte-level BPE is trained on the captions with `tokenizers` and saved in CLIP's format
   (vocab.json + merges.txt; lower-cased, word ends marked "</w>", `<|startoftext|> ... <|endoftext|>`,
   padded with `<|endoftext|>`), so `AutoTokenizer.from_pretrained(OUT)` gives a `CLIPTokenizer`.
2. A small `transformers.CLIPModel` learns with CLIP's symmetric contrastive loss. Notation: for a
   batch of B pairs with unit-norm embeddings t_i (text) and v_j (image), logits_ij = exp(s) <t_i, v_j>
   and loss = (CE(logits, diag) + CE(logits^T, diag)) / 2, where the temperature s is learned and
   exp(s) is capped at 100 as in CLIP.
3. Retrieval accuracy over the whole data set (image -> text, text -> image; top-1, top-5) is
   printed and written to OUT/retrieval.json.

OUT is a `from_pretrained` folder: config.json + model.safetensors, the tokenizer files,
preprocessor_config.json (pixels in [-1, 1]) and train_config.json. `txt2img.clip.TextEncoder`
and `CLIPTextModel.from_pretrained(OUT)` read its text tower; `txt2img.clip.CLIPEmbedder` both.
"""

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from txt2img.clip import image_features, text_features
from uncond.train import batch_indices, learning_rate_factor

BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
MIN_VOCAB_SIZE = 2 * 256 + 2  # every byte, alone and word-final, and the two special tokens
TRAIN_CONFIG_NAME = "train_config.json"
METRICS_NAME = "retrieval.json"
LOG_NAME = "log.jsonl"


@dataclass
class CLIPTrainConfig:
    """Architecture and optimisation settings of a CLIP run; saved as train_config.json beside the weights."""

    # The defaults (1.9M parameters) train on the 3789 emoji in about 9 minutes on one CPU core, to
    # top-1 retrieval 96% image -> text, 98% text -> image. bf16 pays off from hidden size ~256 on.
    image_size: int = 32  # the vision tower's input side; images are resized to it
    patch_size: int = 8  # 4 sees finer detail at 4x the vision tower's cost
    vocab_size: int = 2048  # BPE size, special tokens included (fewer when the captions run out of merges)
    max_text_length: int = 32  # tokens, start and end included: the text tower's max_position_embeddings
    text_hidden_size: int = 128
    text_layers: int = 4
    text_heads: int = 4
    vision_hidden_size: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    mlp_ratio: int = 4
    projection_dim: int = 128
    batch_size: int = 256
    max_steps: int = 500
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    grad_clip: float = 1.0
    mixed_precision: str = "no"  # "no" or "bf16" (autocast)
    eval_every: int = 100
    log_every: int = 25
    seed: int = 0

    def __post_init__(self):
        positive = (
            "image_size",
            "patch_size",
            "text_hidden_size",
            "text_layers",
            "text_heads",
            "vision_hidden_size",
            "vision_layers",
            "vision_heads",
            "mlp_ratio",
            "projection_dim",
            "batch_size",
            "max_steps",
            "eval_every",
            "log_every",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} must divide image_size {self.image_size}")
        for tower in ("text", "vision"):
            if getattr(self, f"{tower}_hidden_size") % getattr(self, f"{tower}_heads"):
                raise ValueError(f"{tower}_heads must divide {tower}_hidden_size")
        if self.vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size must be >= {MIN_VOCAB_SIZE} (bytes, word-final bytes, 2 special tokens), "
                f"got {self.vocab_size}"
            )
        if self.max_text_length < 3:
            raise ValueError(f"max_text_length must be >= 3 (start, one token, end), got {self.max_text_length}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError(
                "learning_rate must be > 0 and weight_decay, warmup_steps, grad_clip >= 0, got "
                f"{self.learning_rate}, {self.weight_decay}, {self.warmup_steps}, {self.grad_clip}"
            )


# ---- tokenizer: a byte-level BPE in CLIP's format ----


def train_tokenizer(captions: list, vocab_size: int = 2048, model_max_length: int = 32, out_dir: str | None = None):
    """Train CLIP's kind of BPE on `captions`; returns a `CLIPTokenizer` (saved to `out_dir` if given).

    The vocabulary is laid out as openai's: the 256 byte symbols, the same with "</w>", one token
    per merge in merge order, then `<|startoftext|>` and `<|endoftext|>`. Every byte being there,
    any text tokenizes without an unknown token.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    if isinstance(captions, str) or not captions or not all(isinstance(c, str) for c in captions):
        raise ValueError("captions must be a non-empty list of strings")
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be an int >= {MIN_VOCAB_SIZE}, got {vocab_size!r}")
    if not isinstance(model_max_length, int) or model_max_length < 3:
        raise ValueError(f"model_max_length must be an int >= 3, got {model_max_length!r}")
    # Train with the very normaliser (NFC, one space, lower case) and pre-tokeniser (CLIP's word
    # regex, then bytes to symbols) that CLIPTokenizer applies when it loads the files.
    reference = CLIPTokenizer().backend_tokenizer
    bpe = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix=END_OF_WORD))
    bpe.normalizer, bpe.pre_tokenizer = reference.normalizer, reference.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix=END_OF_WORD,
        show_progress=False,
    )
    bpe.train_from_iterator(captions, trainer)
    merges = [tuple(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]][: vocab_size - MIN_VOCAB_SIZE]

    # Sorted by code point, the byte symbols come in openai's order: printable bytes, then the others.
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {}
    for token in symbols + [s + END_OF_WORD for s in symbols] + [a + b for a, b in merges] + [BOS_TOKEN, EOS_TOKEN]:
        vocab.setdefault(token, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    if out_dir is not None:
        save_tokenizer(tokenizer, vocab, merges, out_dir)
    return tokenizer


def save_tokenizer(tokenizer, vocab: dict, merges: list, out_dir: str) -> None:
    """tokenizer_config.json and tokenizer.json from transformers, and CLIP's own vocab.json + merges.txt."""
    os.makedirs(out_dir, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


# ---- model, loss, metric ----


def build_model(config: CLIPTrainConfig, tokenizer):
    """A freshly initialised `CLIPModel` of the configured size, its text tower matching `tokenizer`."""
    from transformers import CLIPConfig, CLIPModel

    text_config = dict(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=config.text_hidden_size,
        intermediate_size=config.mlp_ratio * config.text_hidden_size,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        max_position_embeddings=config.max_text_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = dict(
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_size=config.vision_hidden_size,
        intermediate_size=config.mlp_ratio * config.vision_hidden_size,
        num_hidden_layers=config.vision_layers,
        num_attention_heads=config.vision_heads,
    )
    clip_config = CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=config.projection_dim,
        logit_scale_init_value=math.log(1 / 0.07),
    )
    return CLIPModel(clip_config)


def clip_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over a (B, B) logit matrix whose diagonal holds the true pairs."""
    labels = torch.arange(len(logits_per_text), device=logits_per_text.device)
    logits = logits_per_text.float()
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def retrieval_accuracy(similarity: torch.Tensor, ks: tuple = (1, 5)) -> dict:
    """Top-k retrieval accuracy both ways from an (N images, N texts) similarity whose diagonal pairs up.

    A true partner ranks below every item scoring at least as high (ties count against it), so a
    constant matrix scores 0, not 100%.
    """
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (N images, N texts), got shape {tuple(similarity.shape)}")
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive ints, got {ks!r}")
    similarity = similarity.float()
    true = similarity.diagonal()
    # rank of the true partner: how many others score >= it (0 = retrieved first)
    image_to_text = (similarity >= true[:, None]).sum(1) - 1  # (N,) over each image's row of texts
    text_to_image = (similarity >= true[None, :]).sum(0) - 1  # (N,) over each text's column of images
    metrics = {}
    for k in ks:
        metrics[f"image_to_text_top{k}"] = (image_to_text < k).float().mean().item()
        metrics[f"text_to_image_top{k}"] = (text_to_image < k).float().mean().item()
        metrics[f"chance_top{k}"] = min(1.0, k / len(similarity))
    return metrics


def to_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images (B, C, H, W) -> float in [-1, 1] at `size` x `size`, RGB."""
    x = images.float() / 127.5 - 1.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
    return x


@torch.no_grad()
def evaluate_retrieval(model, tokenizer, images: torch.Tensor, captions: list, batch_size: int = 256) -> dict:
    """Retrieval accuracy of `model` over all pairs: uint8 `images` (N, C, H, W) against `captions`."""
    was_training = model.training
    model.eval()
    image_embeds = torch.cat(
        [
            image_features(model, to_pixels(images[i : i + batch_size], model.config.vision_config.image_size))
            for i in range(0, len(images), batch_size)
        ]
    )  # (N, P)
    text_embeds = torch.cat(
        [text_features(model, tokenizer, captions[i : i + batch_size]) for i in range(0, len(captions), batch_size)]
    )  # (N, P)
    model.train(was_training)
    return retrieval_accuracy(image_embeds @ text_embeds.t())


def count_parameters(model) -> dict:
    """Parameters of each tower (with its projection) and in all."""
    text = sum(p.numel() for p in model.text_model.parameters()) + model.text_projection.weight.numel()
    vision = sum(p.numel() for p in model.vision_model.parameters()) + model.visual_projection.weight.numel()
    return {"text": text, "vision": vision, "total": sum(p.numel() for p in model.parameters())}


def save_clip(out_dir: str, model, config: CLIPTrainConfig, metrics: dict | None = None) -> None:
    """The model in `from_pretrained` form (safetensors), its pixel convention, training config and metrics."""
    model.save_pretrained(out_dir)
    size = config.image_size
    # What CLIPImageProcessor needs to feed this model from PIL images: Lanczos resize (PIL's 1),
    # as the data set resizes, then pixels in [-1, 1] = ([0, 1] - 0.5) / 0.5.
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": size},
        "resample": 1,
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
    }
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
        json.dump(preprocessor, f, indent=2)
    with open(os.path.join(out_dir, TRAIN_CONFIG_NAME), "w") as f:
        json.dump(asdict(config), f, indent=2)
    if metrics is not None:
        with open(os.path.join(out_dir, METRICS_NAME), "w") as f:
            json.dump(metrics, f, indent=2)


# ---- training ----


def train_clip(data, out_dir: str, config: CLIPTrainConfig, log=print) -> dict:
    """Train tokenizer and CLIP on `data` (a data set folder or name, or an object with uint8 `.images`
    (N, C, H, W) and `.captions`), save them to `out_dir`; returns the final retrieval metrics."""
    from uncond.data import ImageCaptionDataset

    in_memory = hasattr(data, "images") and hasattr(data, "captions")
    dataset = data if in_memory else ImageCaptionDataset(data, image_size=config.image_size)
    images, captions = dataset.images, list(dataset.captions)
    if config.batch_size > len(captions):
        raise ValueError(
            f"batch_size {config.batch_size} exceeds the {len(captions)} pairs: a batch may not repeat a pair"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    os.makedirs(out_dir, exist_ok=True)
    started = time.time()

    tokenizer = train_tokenizer(captions, config.vocab_size, config.max_text_length, out_dir=out_dir)
    token_ids = tokenizer(captions, truncation=True, max_length=config.max_text_length)["input_ids"]
    torch.manual_seed(config.seed)
    model = build_model(config, tokenizer).to(device).train()
    counts = count_parameters(model)
    log(
        f"CLIP {counts['total'] / 1e6:.2f}M parameters (text {counts['text'] / 1e6:.2f}M, vision {counts['vision'] / 1e6:.2f}M), "
        f"vocab {len(tokenizer.get_vocab())}, {len(captions)} pairs, {config.max_steps} steps of {config.batch_size}, "
        f"device {device}, mixed precision {config.mixed_precision}"
    )

    # CLIP decays weight matrices only, not gains, biases or the temperature
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    others = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": config.weight_decay}, {"params": others, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, config.warmup_steps, config.max_steps)
    )
    max_logit_scale = math.log(100.0)

    metrics = {}
    with open(os.path.join(out_dir, LOG_NAME), "w") as log_file:
        for step in range(config.max_steps):
            indices = batch_indices(step, len(captions), config.batch_size, config.seed)
            pixel_values = to_pixels(images[indices], config.image_size).to(device)  # (B, 3, S, S)
            text = tokenizer.pad({"input_ids": [token_ids[i] for i in indices]}, return_tensors="pt")  # (B, L) longest
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16"):
                output = model(
                    input_ids=text["input_ids"].to(device),
                    attention_mask=text["attention_mask"].to(device),
                    pixel_values=pixel_values,
                )
            loss = clip_loss(output.logits_per_text)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            lr_schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, max_logit_scale)

            done = step + 1
            if done % config.log_every == 0 or done == config.max_steps:
                row = {
                    "step": done,
                    "loss": loss.item(),
                    "logit_scale": model.logit_scale.exp().item(),
                    "lr": lr_schedule.get_last_lr()[0],
                    "seconds": time.time() - started,
                }
                log(
                    f"step {done}/{config.max_steps} loss {row['loss']:.4f} scale {row['logit_scale']:.1f} "
                    f"lr {row['lr']:.2e} {done * config.batch_size / row['seconds']:.0f} pairs/s"
                )
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()
            if done % config.eval_every == 0 or done == config.max_steps:
                metrics = {
                    "step": done,
                    "num_pairs": len(captions),
                    "loss": loss.item(),
                    **evaluate_retrieval(model, tokenizer, images, captions),
                    "logit_scale": model.logit_scale.exp().item(),
                    "seconds": time.time() - started,
                    "parameters": counts,
                }
                log(f"retrieval at step {done}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "top" in k))
                log_file.write(json.dumps({"eval": metrics}) + "\n")
                log_file.flush()
                save_clip(out_dir, model, config, metrics)
    return metrics


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a small CLIP (tokenizer, text and vision towers) from scratch.")
    parser.add_argument(
        "--data", required=True, help="image-caption folder (imagefolder layout) or a Hugging Face dataset name"
    )
    parser.add_argument(
        "--out", required=True, help="output folder: the CLIP in from_pretrained form, tokenizer, metrics"
    )
    parser.add_argument("--config", help="JSON file with CLIPTrainConfig fields")
    for name, field in CLIPTrainConfig.__dataclass_fields__.items():
        parser.add_argument(
            "--" + name.replace("_", "-"), type=field.type if field.type in (int, float) else str, dest=name
        )
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    values = {}
    if args.config:
        with open(args.config) as f:
            values = json.load(f)
        unknown = set(values) - set(CLIPTrainConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"config: unknown fields {sorted(unknown)}")
    for name in CLIPTrainConfig.__dataclass_fields__:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    metrics = train_clip(args.data, args.out, CLIPTrainConfig(**values))
    print(json.dumps({k: v for k, v in metrics.items() if k != "parameters"}, indent=2))
    return metrics


if __name__ == "__main__":
    main()
