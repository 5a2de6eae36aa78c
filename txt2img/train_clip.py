"""Train the project's own small CLIP (Radford et al. 2021) from scratch on image-caption pairs.

    python -m txt2img.train_clip --data data/emoji --out runs/clip [--config FILE] [--resume]
    accelerate launch -m txt2img.train_clip ...   (a GPU, mixed precision; one process)

1. A byte-level BPE is trained on all the captions (`txt2img.clip_tokenizer`) and saved in CLIP's format.
2. A small `transformers.CLIPModel` learns with CLIP's symmetric contrastive loss in the shared training
   loop (`uncond.train_loop`: accelerate, checkpoints that resume exactly, progress bar, OUT/log.jsonl).
   Notation: for a batch of B pairs with unit-norm embeddings t_i (text) and v_j (image),
   logits_ij = exp(s) <t_i, v_j> and loss = (CE(logits, diag) + CE(logits^T, diag)) / 2, where the
   temperature s is learned and exp(s) is capped at 100 as in CLIP. Each step draws one caption per
   image from its list (`caption_lists`); a caption that also describes another image of the batch
   ("car" for a taxi and a police car) is masked out of that pair's logits (`clip_loss`).
3. Retrieval accuracy over the whole data set with each image's primary caption (image -> distinct caption,
   caption -> any of its images; top-1, top-5) is logged every `eval_every` steps and written to OUT/retrieval.json.

OUT is a `from_pretrained` folder: config.json + model.safetensors, the tokenizer files,
preprocessor_config.json (pixels in [-1, 1]) and train_config.json. `txt2img.clip.TextEncoder`
and `CLIPTextModel.from_pretrained(OUT)` read its text tower; `txt2img.clip.CLIPEmbedder` both.

One process only: the contrastive loss of a batch needs every embedding of it, so processes would have
to gather them (open_clip's `gather_with_grad`); for the same reason there is no gradient accumulation.
"""

import json
import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from txt2img.clip import image_features, text_features
from txt2img.clip_tokenizer import MIN_VOCAB_SIZE, train_tokenizer
from txt2img.metrics import retrieval_accuracy
from uncond import train_loop
from uncond.train_config import LoopConfig, config_from_args, training_parser
from uncond.train_loop import CAPTION_STREAM, TrainingTask, batch_indices, caption_lists, draw_captions, step_generator

TRAIN_CONFIG_NAME = "train_config.json"
METRICS_NAME = "retrieval.json"
MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class CLIPTrainConfig(LoopConfig):
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
    mask_false_negatives: bool = True  # mask a batch's other images that the caption also describes
    hold_out: bool = True  # leave out uncond.splits.held_out, so the evaluation's judge has not seen it either
    eval_every: int = 100
    # the loop's settings, with CLIP's defaults
    batch_size: int = 256
    max_steps: int = 500
    learning_rate: float = 1e-3
    weight_decay: float = 0.1  # on weight matrices only
    warmup_steps: int = 50
    checkpoint_every: int = 100

    def __post_init__(self):
        super().__post_init__()
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
            "eval_every",
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
        if self.gradient_accumulation_steps != 1:
            raise ValueError("gradient_accumulation_steps must be 1: the contrastive loss needs the whole batch")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(
                "learning_rate must be > 0 and weight_decay, grad_clip >= 0, got "
                f"{self.learning_rate}, {self.weight_decay}, {self.grad_clip}"
            )


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


def clip_loss(logits_per_text: torch.Tensor, matches: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over (B texts, B images) logits whose diagonal holds the true pairs.

    `matches` (B, B) bool: text i also describes image j (a shared keyword, two styles of one emoji).
    Such off-diagonal pairs are false negatives; they are masked out of both softmaxes (neither
    pulled together nor pushed apart), so each row and column keeps one positive, its diagonal."""
    logits = logits_per_text.float()
    labels = torch.arange(len(logits), device=logits.device)
    if matches is not None:
        false_negatives = matches.to(logits.device) & (labels[:, None] != labels[None, :])
        logits = logits.masked_fill(false_negatives, float("-inf"))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def caption_matches(captions: list, image_captions: list) -> torch.Tensor:
    """(B, B) bool: captions[i] is among image j's captions (`image_captions[j]`, a set)."""
    return torch.tensor([[caption in allowed for allowed in image_captions] for caption in captions])


def paired_retrieval_accuracy(similarity: torch.Tensor, ks: tuple = (1, 5)) -> dict:
    """Top-k retrieval accuracy both ways from an (N images, N texts) similarity whose diagonal pairs up.

    `caption_retrieval_accuracy` with one distinct caption per image; ties count against the true partner, so a
    constant matrix scores 0, not 100%.
    """
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (N images, N texts), got shape {tuple(similarity.shape)}")
    return caption_retrieval_accuracy(similarity, range(len(similarity)), ks)


def caption_retrieval_accuracy(similarity: torch.Tensor, caption_of_image, ks: tuple = (1, 5)) -> dict:
    """Top-k retrieval both ways when captions repeat: similarity (N images, D distinct captions), image i's caption
    is `caption_of_image[i]`. Image to text ranks the D captions; text to image counts a caption right when its best
    image among those it describes (one emoji in several styles) ranks in the top k of all N. Ties count against
    the right answer. With N distinct captions, one per image, this is `paired_retrieval_accuracy`."""
    targets = torch.as_tensor(caption_of_image, dtype=torch.long)
    if similarity.ndim != 2 or targets.shape != (similarity.shape[0],):
        raise ValueError(
            f"caption_of_image must hold one caption index per image row, got {tuple(targets.shape)} for {tuple(similarity.shape)}"
        )
    if set(targets.tolist()) != set(range(similarity.shape[1])):
        raise ValueError("every caption column must describe at least one image (caption_of_image covers 0..D-1)")
    image_to_text = retrieval_accuracy(similarity, targets, ks)
    per_text = similarity.t().double()  # (D, N)
    right = targets[None, :] == torch.arange(per_text.shape[0])[:, None]  # (D, N): caption d describes image n
    best_right = per_text.masked_fill(~right, float("-inf")).max(dim=1, keepdim=True).values  # (D, 1)
    rank = ((per_text >= best_right) & ~right).sum(dim=1)  # wrong images scoring at least as high
    metrics = {}
    for k in ks:
        metrics[f"image_to_text_top{k}"] = image_to_text[f"top{k}"]
        metrics[f"text_to_image_top{k}"] = (rank < k).double().mean().item()
        metrics[f"chance_top{k}"] = min(1.0, k / per_text.shape[0])
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
    """Retrieval accuracy of `model`: uint8 `images` (N, C, H, W) against their `captions`, each distinct one once."""
    was_training = model.training
    model.eval()
    image_embeds = torch.cat(
        [
            image_features(model, to_pixels(images[i : i + batch_size], model.config.vision_config.image_size))
            for i in range(0, len(images), batch_size)
        ]
    )  # (N, P)
    distinct = list(dict.fromkeys(captions))
    text_embeds = torch.cat(
        [text_features(model, tokenizer, distinct[i : i + batch_size]) for i in range(0, len(distinct), batch_size)]
    )  # (D, P)
    model.train(was_training)
    index = {caption: d for d, caption in enumerate(distinct)}
    return caption_retrieval_accuracy(image_embeds @ text_embeds.t(), [index[c] for c in captions])


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


class CLIPTask(TrainingTask):
    """The training loop's view of CLIP: a caption drawn per image, the contrastive loss, retrieval."""

    def __init__(self, dataset, tokenizer, config: CLIPTrainConfig, out_dir: str, log=print):
        self.dataset, self.tokenizer, self.config, self.log = dataset, tokenizer, config, log
        self.eval_every = config.eval_every
        self.images = dataset.images  # (N, C, H, W) uint8
        self.captions = list(dataset.captions)  # the primary caption of each image: retrieval's texts
        self.caption_lists = caption_lists(dataset)
        self.caption_sets = [set(captions) for captions in self.caption_lists]
        distinct = sorted({c for captions in self.caption_lists for c in captions})
        longer = tokenizer(distinct, truncation=True, max_length=config.max_text_length + 1)["input_ids"]
        truncated = sum(len(ids) > config.max_text_length for ids in longer)
        if truncated:
            log(f"{truncated} of {len(distinct)} captions are longer than {config.max_text_length} tokens: truncated")
        ids = tokenizer(distinct, truncation=True, max_length=config.max_text_length)["input_ids"]
        self.token_ids = dict(zip(distinct, ids))  # caption -> token ids, start and end included
        self.metrics = read_metrics(out_dir)

    def build_model(self, config: CLIPTrainConfig):
        return build_model(config, self.tokenizer)

    def build_optimizer(self, model, config: CLIPTrainConfig) -> torch.optim.Optimizer:
        """AdamW as CLIP: betas (0.9, 0.98), eps 1e-6, weight decay on weight matrices only (not gains, biases, temperature)."""
        matrices = [p for p in model.parameters() if p.ndim >= 2]
        others = [p for p in model.parameters() if p.ndim < 2]
        return torch.optim.AdamW(
            [{"params": matrices, "weight_decay": config.weight_decay}, {"params": others, "weight_decay": 0.0}],
            lr=config.learning_rate,
            betas=(0.9, 0.98),
            eps=1e-6,
        )

    def batch(self, step: int, part: slice, device) -> dict:
        """Pixels, a drawn caption's tokens per image, and which captions describe which images."""
        c = self.config
        if (part.start, part.stop) != (0, c.batch_size):
            raise ValueError("the CLIP trainer runs on one process (its loss needs every embedding of the batch)")
        indices = batch_indices(step, len(self.images), c.batch_size, c.seed)
        captions = draw_captions(self.caption_lists, indices, step_generator(c.seed, step, CAPTION_STREAM))
        text = self.tokenizer.pad({"input_ids": [self.token_ids[t] for t in captions]}, return_tensors="pt")
        matches = caption_matches(captions, [self.caption_sets[i] for i in indices.tolist()])
        return {
            "pixel_values": to_pixels(self.images[indices], c.image_size).to(device),  # (B, 3, S, S)
            "input_ids": text["input_ids"].to(device),  # (B, L) padded to the longest
            "attention_mask": text["attention_mask"].to(device),
            "matches": matches.to(device) if c.mask_false_negatives else None,  # (B texts, B images)
        }

    def loss(self, model, batch: dict) -> torch.Tensor:
        output = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"]
        )
        return clip_loss(output.logits_per_text, batch["matches"])

    def after_step(self, model) -> None:
        """exp(s) capped at 100, as in CLIP."""
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def log_row(self, model) -> dict:
        return {"logit_scale": model.logit_scale.exp().item()}

    def save_model(self, out_dir: str, model, config: CLIPTrainConfig) -> None:
        save_clip(out_dir, model, config, self.metrics or None)

    def evaluate(self, model, config: CLIPTrainConfig, out_dir: str, step: int) -> dict:
        """Retrieval over the whole data set (primary captions), written to OUT/retrieval.json."""
        self.metrics = {
            "step": step,
            "num_pairs": len(self.captions),
            "num_captions": len(set(self.captions)),
            **evaluate_retrieval(model, self.tokenizer, self.images, self.captions),
            "logit_scale": model.logit_scale.exp().item(),
            "parameters": count_parameters(model),
        }
        self.log(
            f"retrieval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items() if "top" in k)
        )
        with open(os.path.join(out_dir, METRICS_NAME), "w") as f:
            json.dump(self.metrics, f, indent=2)
        return self.metrics


def read_metrics(out_dir: str) -> dict:
    """OUT/retrieval.json, or {} before the first evaluation."""
    path = os.path.join(out_dir, METRICS_NAME)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load_tokenizer_or_train(out_dir: str, dataset, config: CLIPTrainConfig, resume: bool):
    """The run's tokenizer: the one saved in OUT when resuming, else trained on every caption and saved there."""
    from transformers import CLIPTokenizer

    if resume and os.path.isfile(os.path.join(out_dir, "vocab.json")):
        return CLIPTokenizer.from_pretrained(out_dir)
    captions = [c for captions in caption_lists(dataset) for c in captions]
    return train_tokenizer(captions, config.vocab_size, config.max_text_length, out_dir=out_dir)


def train_clip(data, out_dir: str, config: CLIPTrainConfig, resume: bool = False, log=print) -> dict:
    """Train tokenizer and CLIP on `data` (a data set folder or name, or an object with uint8 `.images`
    (N, C, H, W) and `.captions`), save them to `out_dir`; returns the last retrieval metrics."""
    from uncond.data import ImageCaptionDataset

    tasks = []

    def make_task(config: CLIPTrainConfig) -> CLIPTask:
        in_memory = hasattr(data, "images") and hasattr(data, "captions")
        dataset = data if in_memory else ImageCaptionDataset(data, image_size=config.image_size)
        if config.hold_out and not in_memory:
            from uncond.splits import training_subset

            dataset = training_subset(dataset)  # the evaluation's held-out images, keywords and template stay unseen
        if config.batch_size > len(dataset.captions):
            raise ValueError(
                f"batch_size {config.batch_size} exceeds the {len(dataset.captions)} pairs: a batch may not repeat a pair"
            )
        os.makedirs(out_dir, exist_ok=True)
        tokenizer = load_tokenizer_or_train(out_dir, dataset, config, resume)
        tasks.append(CLIPTask(dataset, tokenizer, config, out_dir, log))
        return tasks[-1]

    train_loop.train(out_dir, config, make_task, resume=resume, log=log)
    return tasks[-1].metrics


def main(argv=None) -> dict:
    parser = training_parser(
        "Train a small CLIP (tokenizer, text and vision towers) from scratch.",
        CLIPTrainConfig,
        "JSON file with CLIPTrainConfig fields",
    )
    args = parser.parse_args(argv)
    metrics = train_clip(args.data, args.out, config_from_args(args, CLIPTrainConfig), resume=args.resume)
    print(json.dumps({k: v for k, v in metrics.items() if k != "parameters"}, indent=2))
    return metrics


if __name__ == "__main__":
    main()
