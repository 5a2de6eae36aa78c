"""Train the text-conditional UNet: uncond's DDPM task, with CLIP embeddings of a caption per image.

    python -m txt2img.train --data data/emoji --clip weights/clip --out runs/txt2img [--config FILE] [--resume]
    accelerate launch -m txt2img.train ...   (mixed precision, several GPUs; same flags)

Everything of `uncond.train` carries over (the shared loop: EMA, warm-up + cosine, atomic checkpoints,
exact resume); `TextToImageTask` adds the text. Each step draws one caption per image from the image's
list (`caption_lists`: names, keywords, styles, other languages), swaps each for the empty prompt with
probability `p_uncond`, which trains the unconditional model classifier-free guidance needs (Ho &
Salimans 2022, Algorithm 1), and encodes the batch's captions with the frozen CLIP text encoder.

The batch is encoded every step rather than cached: with many captions per image a cache of all of them
would not fit, and a cache filled as training goes would make a caption's hidden states depend on the
batch that first encoded it (float sums differ with the batch), so a resumed run would not repeat an
uninterrupted one. The text tower is small next to the UNet (a few % of a step).

`OUT/` always holds the latest EMA model as a `TextToImagePipeline` folder: `unet/`, `text_encoder/`
(a copy of a local CLIP folder's tokenizer and text tower) or a reference to a hub id in
`pipeline.json`, `scheduler_config.json`, `train_config.json`, `captions.json`.
"""

import json
import os
from dataclasses import dataclass, field

import torch

from txt2img.clip import TextEmbeddings, TextEncoder
from txt2img.folder import (
    CAPTIONS_NAME,
    NAMES_NAME,
    TEXT_ENCODER_FOLDER,
    UNET_FOLDER,
    save_text_encoder,
    write_pipeline_config,
)
from txt2img.pipeline import sample_images
from txt2img.unet import TextUNet, TextUNetConfig
from uncond import train_loop
from uncond.images import save_grid
from uncond.sources import STYLES
from uncond.train import TrainConfig, UnconditionalTask, samples_path, scheduler_config, write_configs
from uncond.train_config import config_from_args, training_parser
from uncond.train_loop import CAPTION_STREAM, caption_lists, draw_captions, step_generator

NAME_STREAM = 2  # step_generator stream of the name-or-list draws (p_name)
VALIDATION_PROMPTS = ("red heart", "blue heart", "cat face", "pizza", "flag: Japan", "grinning face", "rocket", "sun")


@dataclass
class TextToImageTrainConfig(TrainConfig):
    """`TrainConfig` plus the text: the CLIP to condition on, caption dropout, the prompts of the sample grids."""

    clip: str = ""  # CLIP folder or hub id (tokenizer + text model); a folder is copied into OUT/text_encoder
    p_uncond: float = 0.1  # probability of training a caption as the empty prompt (classifier-free guidance)
    validation_prompts: list = field(default_factory=lambda: list(VALIDATION_PROMPTS))
    validation_guidance_scale: float = 4.0  # guidance of the sample grids
    hold_out: bool = True  # leave out uncond.splits.held_out (emoji-tone and emoji-style pairs, keywords, a template)
    p_name: float = 0.0  # probability of training an image's CLDR name instead of a caption drawn from its list
    always_styled: list = field(default_factory=list)  # styles whose captions always carry the style ("owl, line art")

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.p_uncond, (int, float)) or not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {self.p_uncond!r}")
        if not self.validation_prompts or not all(isinstance(p, str) for p in self.validation_prompts):
            raise ValueError(f"validation_prompts must be a non-empty list of strings, got {self.validation_prompts!r}")
        self.validation_prompts = list(self.validation_prompts)
        if isinstance(self.p_name, bool) or not isinstance(self.p_name, (int, float)) or not 0.0 <= self.p_name <= 1.0:
            raise ValueError(f"p_name must be in [0, 1], got {self.p_name!r}")
        unknown = [s for s in self.always_styled if s not in STYLES]
        if unknown:
            raise ValueError(f"always_styled: unknown styles {unknown}; the styles are {', '.join(STYLES)}")
        self.always_styled = list(self.always_styled)


def encode_batch(text_encoder: TextEncoder, captions: list) -> TextEmbeddings:
    """Hidden states (B, L, D) and masks (B, L) of `captions`, cut after the longest one's last token.

    CLIP's causal attention means a token's hidden state never depends on the padding after it, and the
    UNet masks the padding out, so the cut changes nothing but the work."""
    encoded = text_encoder.encode(captions)
    length = int(encoded.attention_mask.sum(dim=1).max())
    # a clone: `encode` runs in inference mode, and autograd may not save inference tensors for backward
    hidden_states = encoded.hidden_states[:, :length].float().clone()
    return TextEmbeddings(hidden_states, encoded.attention_mask[:, :length].clone(), encoded.truncated)


def with_style(caption: str, style: str, always_styled: list) -> str:
    """`caption` with its style's first words after it ("owl" -> "owl, line art") when `style` is one of
    `always_styled` and the caption names none of the style's words, so that a prompt without a style never
    asks for those styles (colour unless asked)."""
    if style not in always_styled:
        return caption
    words = STYLES[style].words
    if any(w.casefold() in caption.casefold() for w in words):
        return caption
    return f"{caption}, {words[0]}"


def is_local(clip: str) -> bool:
    """Whether `clip` names a folder here (copied into the model folder) rather than a hub id (referenced)."""
    return os.path.isdir(clip)


class TextToImageTask(UnconditionalTask):
    """The training loop's view of text-to-image: a TextUNet, a caption drawn per image, caption dropout."""

    def __init__(self, dataset, text_encoder: TextEncoder, config: TextToImageTrainConfig, log=print):
        super().__init__(dataset, config, log)
        self.text_encoder = text_encoder
        text_encoder.text_model.eval().requires_grad_(False)  # frozen
        self.caption_lists = caption_lists(dataset)
        self.log = log
        self.truncated = set()  # captions already reported as truncated

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

    def batch_captions(self, indices: torch.Tensor, generator: torch.Generator, step: int) -> list:
        """The global batch's captions: one drawn per image (its name with probability p_name), the style added for
        `always_styled` styles, each replaced by "" with probability p_uncond."""
        c = self.config
        captions = draw_captions(self.caption_lists, indices, step_generator(c.seed, step, CAPTION_STREAM))
        if c.p_name:
            take_name = torch.rand(len(indices), generator=step_generator(c.seed, step, NAME_STREAM)) < c.p_name
            names = [self.dataset.captions[i] for i in indices.tolist()]
            captions = [name if take else caption for caption, name, take in zip(captions, names, take_name.tolist())]
        if c.always_styled:
            styles = [self.dataset.styles[i] for i in indices.tolist()]
            captions = [with_style(caption, style, c.always_styled) for caption, style in zip(captions, styles)]
        # the drops come from the step's own stream, drawn whatever p_uncond, where the trainer of one cached
        # embedding per caption drew them: with one caption per image, the same drops and noise as it
        drop = torch.rand(len(indices), generator=generator) < self.config.p_uncond
        return ["" if dropped else caption for caption, dropped in zip(captions, drop.tolist())]

    def model_kwargs(self, step: int, indices: torch.Tensor, generator: torch.Generator, part: slice, device) -> dict:
        """The CLIP hidden states and mask of this process's part of the batch's captions."""
        captions = self.batch_captions(indices, generator, step)[part]
        self.text_encoder.text_model.to(device)
        with torch.autocast(torch.device(device).type, enabled=False):  # the encoder runs as at sampling time
            text = encode_batch(self.text_encoder, captions)
        self._report_truncated(captions, text.truncated)
        return {
            "encoder_hidden_states": text.hidden_states.to(device),  # (B, L, D)
            "encoder_attention_mask": text.attention_mask.to(device),  # (B, L)
        }

    def _report_truncated(self, captions: list, truncated: list) -> None:
        for caption, cut in zip(captions, truncated):
            if cut and caption not in self.truncated:
                self.truncated.add(caption)
                self.log(f"caption longer than {self.text_encoder.max_length} tokens, truncated: {caption!r}")

    def evaluate(self, model, config: TextToImageTrainConfig, out_dir: str, step: int) -> None:
        """A grid of DDIM-50 guided samples, one column per validation prompt, fixed seed."""
        prompts = list(config.validation_prompts)
        per_prompt = max(1, config.num_sample_images // len(prompts))
        order = prompts * per_prompt  # image-major: row r holds sample r of every prompt
        self.text_encoder.text_model.to(next(model.parameters()).device)
        cond, uncond = self.text_encoder.encode(order), self.text_encoder.encode([""] * len(order))
        images = sample_images(
            model, scheduler_config(config), cond, uncond, config.validation_guidance_scale, 50, "ddim", seed=0
        )
        save_grid(images, samples_path(out_dir, step), columns=len(prompts))

    def save_model(self, out_dir: str, model, config: TextToImageTrainConfig) -> None:
        """The EMA UNet as a pipeline folder; the text encoder is copied once (a local CLIP) or referenced (a hub id)."""
        model.save_pretrained(os.path.join(out_dir, UNET_FOLDER))
        write_configs(out_dir, config)
        with open(os.path.join(out_dir, CAPTIONS_NAME), "w") as f:  # the vocabulary the app suggests from
            json.dump(sorted({c for captions in self.caption_lists for c in captions}), f, ensure_ascii=False, indent=0)
        with open(os.path.join(out_dir, NAMES_NAME), "w") as f:  # the suggestions' text-space neighbours
            json.dump(sorted(set(self.dataset.captions)), f, ensure_ascii=False, indent=0)
        if is_local(config.clip):
            if not os.path.isfile(os.path.join(out_dir, TEXT_ENCODER_FOLDER, "config.json")):  # frozen: one copy
                save_text_encoder(self.text_encoder, os.path.join(out_dir, TEXT_ENCODER_FOLDER))
            write_pipeline_config(out_dir)
        else:
            write_pipeline_config(out_dir, config.clip)


def make_text_to_image_task(data: str, dataset=None, log=print):
    """The `make_task` of the shared loop: CLIP, data set (held-out captions left out) and task for a config."""

    def make_task(config: TextToImageTrainConfig) -> TextToImageTask:
        from uncond.data import ImageCaptionDataset

        if not config.clip:
            raise ValueError("clip must name a CLIP folder or hub id")
        text_encoder = TextEncoder.from_pretrained(config.clip)
        data_set = dataset if dataset is not None else ImageCaptionDataset(data, image_size=config.image_size)
        if config.hold_out:
            from uncond.splits import training_subset

            kept = training_subset(data_set)
            log(f"holding out {len(data_set.captions) - len(kept.captions)} images (uncond.splits) for the evaluation")
            data_set = kept
        return TextToImageTask(data_set, text_encoder, config, log=log)

    return make_task


def train_text_to_image(
    data: str, out_dir: str, config: TextToImageTrainConfig, resume: bool = False, dataset=None, log=print
) -> str:
    """Run (or continue) a text-to-image training run; returns `out_dir`, which then holds the pipeline."""
    return train_loop.train(out_dir, config, make_text_to_image_task(data, dataset, log), resume=resume, log=log)


def main(argv=None):
    parser = training_parser(
        "Train the text-conditional DDPM UNet on image-caption pairs.",
        TextToImageTrainConfig,
        "JSON file with TrainConfig fields, clip, p_uncond, validation_prompts (and 'unet': TextUNetConfig fields)",
    )
    args = parser.parse_args(argv)
    train_text_to_image(args.data, args.out, config_from_args(args, TextToImageTrainConfig), resume=args.resume)


if __name__ == "__main__":
    main()
