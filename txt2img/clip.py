"""The text encoder: transformers' CLIP text tower and its tokenizer (Radford et al. 2021).

The UNet attends to CLIP's last hidden states, one vector per token, with the attention mask
of the padded positions. Works for any CLIP folder or hub id, e.g. the project's own small
CLIP in `weights/clip` (trained by `python -m txt2img.train_clip`) or
`openai/clip-vit-base-patch32` where a network is there.

`CLIPEmbedder` (and the functions `image_features`, `text_features` under it) gives both towers'
unit-norm embeddings in the shared space, for retrieval, CLIP score and FID in CLIP space.
"""

import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The project's convention for its own CLIP: pixels in [-1, 1], i.e. ([0, 1] - 0.5) / 0.5.
DEFAULT_IMAGE_MEAN = (0.5, 0.5, 0.5)
DEFAULT_IMAGE_STD = (0.5, 0.5, 0.5)


@contextmanager
def quiet_transformers():
    """Silence transformers' informational logging for the duration (its verbosity is restored after)."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


@dataclass
class TextEmbeddings:
    """Encoded prompts: what the UNet's cross-attention reads."""

    hidden_states: torch.Tensor  # (B, L, D) CLIP's last hidden states
    attention_mask: torch.Tensor  # (B, L) bool, True at real tokens (start and end tokens included)
    truncated: list  # per prompt: whether it was cut to the tokenizer's limit


class TextEncoder:
    """A CLIP tokenizer and text model, frozen, turning prompts into `TextEmbeddings`."""

    def __init__(self, tokenizer, text_model, device=None, dtype: torch.dtype | None = None):
        self.tokenizer = tokenizer
        # a fast tokenizer keeps its truncation and padding settings between calls: two threads (the app's live
        # pictures beside its generations) calling it with different settings break each other's batches
        self.tokenizer_lock = threading.Lock()
        self.text_model = text_model.eval().requires_grad_(False)
        self.text_model.to(device=device or "cpu", dtype=dtype or torch.float32)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str, device=None, dtype: torch.dtype | None = None) -> "TextEncoder":
        """Load tokenizer and text tower from a CLIP folder or hub id (a full CLIPModel folder works: the vision tower is skipped)."""
        from transformers import AutoTokenizer, CLIPTextModel

        try:
            tokenizer = AutoTokenizer.from_pretrained(path_or_hub_id)
            with quiet_transformers():  # a CLIPModel folder's vision weights are skipped on purpose: no load report
                text_model = CLIPTextModel.from_pretrained(path_or_hub_id, use_safetensors=True)
        except (OSError, ValueError) as error:
            raise ValueError(f"could not load a CLIP text encoder from {path_or_hub_id!r}: {error}") from error
        return cls(tokenizer, text_model, device, dtype)

    @property
    def hidden_size(self) -> int:
        return self.text_model.config.hidden_size

    @property
    def max_length(self) -> int:
        return min(self.tokenizer.model_max_length, self.text_model.config.max_position_embeddings)

    @property
    def device(self) -> torch.device:
        return next(self.text_model.parameters()).device

    def tokenize(self, prompts: list) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Token ids and attention mask, padded to the model's length (B, L); and which prompts were truncated."""
        if isinstance(prompts, str):
            raise ValueError("prompts must be a list of strings, not one string")
        with self.tokenizer_lock:
            # one token past the limit is enough to tell a truncated prompt (and keeps 100,000-character prompts cheap)
            longer = self.tokenizer(list(prompts), truncation=True, max_length=self.max_length + 1)["input_ids"]
            tokens = self.tokenizer(
                list(prompts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
            )
        truncated = [len(ids) > self.max_length for ids in longer]
        return tokens["input_ids"], tokens["attention_mask"], truncated

    @torch.inference_mode()
    def encode(self, prompts: list) -> TextEmbeddings:
        """CLIP's last hidden states for `prompts` (an empty prompt is just the start and end tokens)."""
        input_ids, attention_mask, truncated = self.tokenize(prompts)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        hidden_states = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return TextEmbeddings(hidden_states, attention_mask.bool(), truncated)

    @torch.inference_mode()
    def pooled(self, prompts: list) -> torch.Tensor:
        """Unit-norm pooled text states (B, D): CLIP's end-token state, one vector per prompt, for comparing prompts."""
        input_ids, attention_mask, _ = self.tokenize(prompts)
        output = self.text_model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device))
        return F.normalize(output.pooler_output.float(), dim=-1)


# ---- both towers: embeddings in the shared space ----


def image_features(
    model, images: torch.Tensor, image_mean=DEFAULT_IMAGE_MEAN, image_std=DEFAULT_IMAGE_STD
) -> torch.Tensor:
    """Unit-norm projected image embeddings (B, P) of `images` (B, 3, H, W) in [-1, 1], resized to the vision tower's size."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    parameter = next(model.vision_model.parameters())
    size = model.config.vision_config.image_size
    x = images.to(device=parameter.device, dtype=torch.float32)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    mean = torch.tensor(image_mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(image_std, device=x.device).view(1, 3, 1, 1)
    x = ((x + 1) / 2 - mean) / std  # [-1, 1] -> [0, 1] -> the tower's normalisation
    embeds = model.get_image_features(pixel_values=x.to(parameter.dtype)).pooler_output  # (B, P)
    return F.normalize(embeds.float(), dim=-1)


def text_features(model, tokenizer, prompts: list) -> torch.Tensor:
    """Unit-norm projected text embeddings (B, P) of `prompts`, cut to the text tower's length."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, not one string")
    max_length = min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings)
    tokens = tokenizer(list(prompts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    device = next(model.text_model.parameters()).device
    embeds = model.get_text_features(
        input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
    ).pooler_output  # (B, P)
    return F.normalize(embeds.float(), dim=-1)


class CLIPEmbedder:
    """A full CLIP (both towers) and its tokenizer, frozen: image and text embeddings, CLIP score."""

    def __init__(
        self,
        model,
        tokenizer,
        image_mean=DEFAULT_IMAGE_MEAN,
        image_std=DEFAULT_IMAGE_STD,
        device=None,
        dtype: torch.dtype | None = None,
    ):
        self.model = model.eval().requires_grad_(False)
        self.model.to(device=device or "cpu", dtype=dtype or torch.float32)
        self.tokenizer = tokenizer
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str, device=None, dtype: torch.dtype | None = None) -> "CLIPEmbedder":
        """Load a CLIPModel folder or hub id; pixel normalisation from its preprocessor_config.json if it has one."""
        from transformers import AutoTokenizer, CLIPModel

        try:
            tokenizer = AutoTokenizer.from_pretrained(path_or_hub_id)
            model = CLIPModel.from_pretrained(path_or_hub_id, use_safetensors=True)
            preprocessor = {}
            if os.path.isfile(os.path.join(path_or_hub_id, "preprocessor_config.json")):
                with open(os.path.join(path_or_hub_id, "preprocessor_config.json")) as f:
                    preprocessor = json.load(f)
            elif not os.path.isdir(path_or_hub_id):
                from transformers import AutoImageProcessor

                preprocessor = AutoImageProcessor.from_pretrained(path_or_hub_id).to_dict()
        except (OSError, ValueError) as error:
            raise ValueError(f"could not load a CLIP model from {path_or_hub_id!r}: {error}") from error
        mean = preprocessor.get("image_mean", DEFAULT_IMAGE_MEAN)
        std = preprocessor.get("image_std", DEFAULT_IMAGE_STD)
        return cls(model, tokenizer, mean, std, device, dtype)

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size

    @torch.inference_mode()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings (B, P) of images (B, 3, H, W) in [-1, 1]."""
        return image_features(self.model, images, self.image_mean, self.image_std)

    @torch.inference_mode()
    def text_features(self, prompts: list) -> torch.Tensor:
        """Unit-norm text embeddings (B, P) of a list of prompts."""
        return text_features(self.model, self.tokenizer, prompts)

    def score(self, images: torch.Tensor, prompts: list) -> torch.Tensor:
        """CLIP score per pair (Hessel et al. 2021; w = 100 as torchmetrics has it): 100 * max(cos(image, prompt), 0), (B,)."""
        if len(images) != len(prompts):
            raise ValueError(f"images and prompts must pair up, got {len(images)} images and {len(prompts)} prompts")
        cosine = (self.image_features(images) * self.text_features(prompts)).sum(-1)
        return 100 * cosine.clamp(min=0)
