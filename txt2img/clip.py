"""The text encoder: transformers' CLIP text tower and its tokenizer (Radford et al. 2021).

The UNet attends to CLIP's last hidden states, one vector per token, with the attention mask
of the padded positions. Works for any CLIP folder or hub id, e.g. the project's own small
CLIP in `weights/clip` or `openai/clip-vit-base-patch32` where a network is there.
"""

from dataclasses import dataclass

import torch


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
        self.text_model = text_model.eval().requires_grad_(False)
        self.text_model.to(device=device or "cpu", dtype=dtype or torch.float32)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str, device=None, dtype: torch.dtype | None = None) -> "TextEncoder":
        """Load tokenizer and text tower from a CLIP folder or hub id (a full CLIPModel folder works: the vision tower is skipped)."""
        from transformers import AutoTokenizer, CLIPTextModel

        try:
            tokenizer = AutoTokenizer.from_pretrained(path_or_hub_id)
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
        full = self.tokenizer(list(prompts), truncation=False)["input_ids"]
        truncated = [len(ids) > self.max_length for ids in full]
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
        return tokens["input_ids"], tokens["attention_mask"], truncated

    @torch.inference_mode()
    def encode(self, prompts: list) -> TextEmbeddings:
        """CLIP's last hidden states for `prompts` (an empty prompt is just the start and end tokens)."""
        input_ids, attention_mask, truncated = self.tokenize(prompts)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        hidden_states = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return TextEmbeddings(hidden_states, attention_mask.bool(), truncated)
