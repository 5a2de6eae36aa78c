"""Train the text-conditional UNet: uncond's training loop with a task that feeds it CLIP embeddings.

    python -m txt2img.train --data data/emoji --clip weights/clip --out runs/txt2img [--config FILE] [--resume]
    accelerate launch -m txt2img.train ...   (mixed precision, several GPUs; same flags)

Everything of `uncond.train.train` carries over (EMA, warm-up + cosine, atomic checkpoints, exact
resume); `TextToImageTask` adds the text. The CLIP text encoder is frozen, so each caption is encoded
once, before training, and its hidden states kept in memory. Each step takes the cached embeddings
of the batch's captions and swaps each for the empty prompt's with probability `p_uncond`, which
trains the unconditional model classifier-free guidance needs (Ho & Salimans 2022, Algorithm 1).

`OUT/` always holds the latest EMA model as a `TextToImagePipeline` folder: `unet/`, `text_encoder/`
(a copy of a local CLIP folder's tokenizer and text tower) or a reference to a hub id in
`pipeline.json`, `scheduler_config.json`, `train_config.json`.
"""

import json
import os
from dataclasses import asdict, dataclass, field

import torch

from txt2img.clip import TextEmbeddings, TextEncoder
from txt2img.folder import CAPTIONS_NAME, TEXT_ENCODER_FOLDER, UNET_FOLDER, save_text_encoder, write_pipeline_config
from txt2img.pipeline import sample_images
from txt2img.unet import TextUNet, TextUNetConfig
from uncond.images import save_grid
from uncond.train import (
    SCHEDULER_CONFIG_NAME,
    TRAIN_CONFIG_NAME,
    TrainConfig,
    UnconditionalTask,
    config_from_args,
    find_checkpoint,
    train,
    training_parser,
)

VALIDATION_PROMPTS = ("red heart", "blue heart", "cat face", "pizza", "flag: Japan", "grinning face", "rocket", "sun")
ENCODE_BATCH = 256  # captions per text-encoder call while filling the cache


@dataclass
class TextToImageTrainConfig(TrainConfig):
    """`TrainConfig` plus the text: the CLIP to condition on, caption dropout, the prompts of the sample grids."""

    clip: str = ""  # CLIP folder or hub id (tokenizer + text model); a folder is copied into OUT/text_encoder, a hub id referenced
    p_uncond: float = 0.1  # probability of training a caption as the empty prompt (classifier-free guidance)
    validation_prompts: list = field(default_factory=lambda: list(VALIDATION_PROMPTS))
    validation_guidance_scale: float = 4.0  # guidance of the sample grids
    hold_out: bool = (
        True  # leave out the (emoji, skin tone) pairs of evaluation.txt2img.held_out_captions (compositional test)
    )

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.p_uncond, (int, float)) or not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {self.p_uncond!r}")
        if not self.validation_prompts or not all(isinstance(p, str) for p in self.validation_prompts):
            raise ValueError(f"validation_prompts must be a non-empty list of strings, got {self.validation_prompts!r}")
        self.validation_prompts = list(self.validation_prompts)


def encode_captions(text_encoder: TextEncoder, captions: list, batch_size: int = ENCODE_BATCH) -> TextEmbeddings:
    """Hidden states (N, L, D) and masks (N, L) of all `captions`, cut after the longest one's last token.

    CLIP's causal attention means a token's hidden state never depends on the padding after it, and the
    UNet masks the padding out, so the cut changes nothing but the memory the cache takes."""
    _, mask, truncated = text_encoder.tokenize(captions)
    length = int(mask.sum(dim=1).max())
    hidden_states = []
    for start in range(0, len(captions), batch_size):
        hidden_states.append(
            text_encoder.encode(captions[start : start + batch_size]).hidden_states[:, :length].float().cpu()
        )
    return TextEmbeddings(torch.cat(hidden_states), mask[:, :length].bool(), truncated)


def is_local(clip: str) -> bool:
    """Whether `clip` names a folder here (copied into the model folder) rather than a hub id (referenced)."""
    return os.path.isdir(clip)


class TextToImageTask(UnconditionalTask):
    """The training loop's view of text-to-image: a TextUNet, cached caption embeddings, caption dropout."""

    def __init__(self, dataset, text_encoder: TextEncoder, config: TextToImageTrainConfig, log=print):
        super().__init__(dataset)
        self.text_encoder = text_encoder
        self.clip = config.clip
        self.p_uncond = config.p_uncond
        # row 0 is the empty prompt; row 1 + i the i-th distinct caption
        captions = sorted(set(dataset.captions))
        cache = encode_captions(text_encoder, [""] + captions)
        self.hidden_states, self.attention_mask = cache.hidden_states, cache.attention_mask  # (1 + U, L, D), (1 + U, L)
        row = {caption: 1 + i for i, caption in enumerate(captions)}
        self.caption_rows = torch.tensor([row[c] for c in dataset.captions])  # (N,) data index -> cache row
        if any(cache.truncated):
            log(f"{sum(cache.truncated)} captions are longer than {text_encoder.max_length} tokens and were truncated")
        # the sample grids' prompts and the empty prompt, full length
        self.validation_prompts = list(config.validation_prompts)
        prompts = text_encoder.encode(self.validation_prompts + [""])
        n = len(self.validation_prompts)
        self.validation_cond = TextEmbeddings(
            prompts.hidden_states[:n].cpu(), prompts.attention_mask[:n].cpu(), prompts.truncated[:n]
        )
        self.validation_uncond = TextEmbeddings(
            prompts.hidden_states[n:].expand(n, -1, -1).cpu(),
            prompts.attention_mask[n:].expand(n, -1).cpu(),
            [False] * n,
        )

    def build_model(self, config: TextToImageTrainConfig) -> TextUNet:
        """A freshly initialised TextUNet whose cross-attention reads the text encoder's width."""
        width = self.text_encoder.hidden_size
        if config.unet.get("cross_attention_dim", width) != width:
            raise ValueError(
                f"unet.cross_attention_dim {config.unet['cross_attention_dim']} must equal the text encoder's width {width}"
            )
        return TextUNet(
            TextUNetConfig(**{**config.unet, "sample_size": config.image_size, "cross_attention_dim": width})
        )

    def model_kwargs(self, indices: torch.Tensor, generator: torch.Generator, device) -> dict:
        """The cached text of the batch's captions, each replaced by the empty prompt's with probability p_uncond."""
        rows = self.caption_rows[indices]  # (B,)
        drop = (
            torch.rand(len(indices), generator=generator) < self.p_uncond
        )  # drawn every step: the generator's stream never depends on p_uncond
        rows = torch.where(drop, torch.zeros_like(rows), rows)
        return {
            "encoder_hidden_states": self.hidden_states[rows].to(device, non_blocking=True),  # (B, L, D)
            "encoder_attention_mask": self.attention_mask[rows].to(device, non_blocking=True),  # (B, L)
        }

    def save_samples(self, ema_model, scheduler, config: TextToImageTrainConfig, path: str) -> None:
        """A grid of DDIM-50 guided samples, one column per validation prompt, fixed seed."""
        n = len(self.validation_prompts)
        per_prompt = max(1, config.num_sample_images // n)
        order = [i for _ in range(per_prompt) for i in range(n)]  # image-major: row r holds sample r of every prompt
        cond = TextEmbeddings(self.validation_cond.hidden_states[order], self.validation_cond.attention_mask[order], [])
        uncond = TextEmbeddings(
            self.validation_uncond.hidden_states[order], self.validation_uncond.attention_mask[order], []
        )
        images = sample_images(
            ema_model, dict(scheduler.config), cond, uncond, config.validation_guidance_scale, 50, "ddim", seed=0
        )
        save_grid(images, path, columns=n)

    def save_model(self, out_dir: str, ema_model, scheduler, config: TextToImageTrainConfig) -> None:
        """The EMA UNet as a pipeline folder; the text encoder is copied once (a local CLIP) or referenced (a hub id)."""
        ema_model.save_pretrained(os.path.join(out_dir, UNET_FOLDER))
        with open(os.path.join(out_dir, SCHEDULER_CONFIG_NAME), "w") as f:
            json.dump(dict(scheduler.config), f, indent=2)
        with open(os.path.join(out_dir, TRAIN_CONFIG_NAME), "w") as f:
            json.dump(asdict(config), f, indent=2)
        with open(os.path.join(out_dir, CAPTIONS_NAME), "w") as f:  # the vocabulary the app suggests from
            json.dump(sorted(set(self.dataset.captions)), f, ensure_ascii=False, indent=0)
        if is_local(self.clip):
            if not os.path.isfile(
                os.path.join(out_dir, TEXT_ENCODER_FOLDER, "config.json")
            ):  # frozen: one copy is enough
                save_text_encoder(self.text_encoder, os.path.join(out_dir, TEXT_ENCODER_FOLDER))
            write_pipeline_config(out_dir)
        else:
            write_pipeline_config(out_dir, self.clip)


def resumed_config(out_dir: str, config: TextToImageTrainConfig, resume: bool) -> TextToImageTrainConfig:
    """The checkpoint's config when resuming (length may be extended), as `uncond.train.train` rebuilds it."""
    checkpoint = find_checkpoint(out_dir) if resume else None
    if checkpoint is None:
        return config
    with open(os.path.join(checkpoint, "state.json")) as f:
        saved = json.load(f)["train_config"]
    return type(config)(**{**saved, "max_steps": config.max_steps})


def train_text_to_image(
    data: str, out_dir: str, config: TextToImageTrainConfig, resume: bool = False, dataset=None, log=print
) -> str:
    """Run (or continue) a text-to-image training run; returns `out_dir`, which then holds the pipeline."""
    from uncond.data import ImageCaptionDataset

    config = resumed_config(out_dir, config, resume)  # the task must see the config the run continues with
    if not config.clip:
        raise ValueError("clip must name a CLIP folder or hub id")
    text_encoder = TextEncoder.from_pretrained(config.clip)
    if dataset is None:
        dataset = ImageCaptionDataset(data, image_size=config.image_size)
    if config.hold_out:
        from evaluation.txt2img import held_out_captions

        held_out = held_out_captions(dataset.captions)
        dataset = dataset.without(held_out)
        log(f"holding out {len(held_out)} (emoji, skin tone) captions for the compositional test")
    task = TextToImageTask(dataset, text_encoder, config, log=log)
    return train(data, out_dir, config, resume=resume, task=task, log=log)


def main(argv=None):
    parser = training_parser(
        "Train the text-conditional DDPM UNet on image-caption pairs.",
        "JSON file with TrainConfig fields, clip, p_uncond, validation_prompts (and 'unet': TextUNetConfig fields)",
        extra_overrides=(("p_uncond", float), ("clip", str)),
    )
    args = parser.parse_args(argv)
    train_text_to_image(args.data, args.out, config_from_args(args, TextToImageTrainConfig), resume=args.resume)


if __name__ == "__main__":
    main()
