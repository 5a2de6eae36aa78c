"""The conditional UNet: uncond's UNet with transformer blocks that read the text (Rombach et al. 2022, sec. 3.3).

Everything but the attention layers is `uncond.unet.UNet`. At the resolutions the config names
(and in the mid block) each resnet is followed by a `Transformer2D` instead of plain self-attention:

    x (B, C, H, W) -> GroupNorm -> proj_in -> tokens (B, HW, C)
        per layer:  h = h + SelfAttention(LayerNorm(h))
                    h = h + CrossAttention(LayerNorm(h), encoder_hidden_states)   K, V from the text (B, L, D)
                    h = h + FeedForward(LayerNorm(h))                               GEGLU or GELU
    -> proj_out -> back to (B, C, H, W) -> + x

`encoder_hidden_states` are the text encoder's last hidden states (B, L, cross_attention_dim);
`encoder_attention_mask` (B, L) bool marks the real tokens, so padding never changes the output.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uncond.unet import AttentionFactory, UNet, UNetConfig

FF_ACTIVATIONS = ("geglu", "gelu")


@dataclass
class TextUNetConfig(UNetConfig):
    """`UNetConfig` plus what the text brings; `attention_resolutions` now names where transformer blocks go."""

    cross_attention_dim: int = 512  # width D of the text encoder's hidden states (K/V are projected from it)
    transformer_layers_per_block: int = 1  # (self-attn, cross-attn, feed-forward) layers in each transformer block
    ff_mult: int = 4  # the feed-forward's inner width is ff_mult * channels
    ff_activation: str = "geglu"  # "geglu" (Shazeer 2020) or "gelu"

    def __post_init__(self):
        super().__post_init__()
        if (
            isinstance(self.cross_attention_dim, bool)
            or not isinstance(self.cross_attention_dim, int)
            or self.cross_attention_dim < 1
        ):
            raise ValueError(f"cross_attention_dim must be a positive integer, got {self.cross_attention_dim!r}")
        if self.transformer_layers_per_block < 1:
            raise ValueError(f"transformer_layers_per_block must be >= 1, got {self.transformer_layers_per_block}")
        if self.ff_mult < 1:
            raise ValueError(f"ff_mult must be >= 1, got {self.ff_mult}")
        if self.ff_activation not in FF_ACTIVATIONS:
            raise ValueError(f"ff_activation must be one of {FF_ACTIVATIONS}, got {self.ff_activation!r}")


class Attention(nn.Module):
    """Multi-head attention of `x` over `context` (itself when None), through scaled_dot_product_attention."""

    def __init__(self, query_dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k = nn.Linear(context_dim, query_dim, bias=False)  # the projection that lets any text width in
        self.to_v = nn.Linear(context_dim, query_dim, bias=False)
        self.to_out = nn.Linear(query_dim, query_dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        context = x if context is None else context  # (B, N, C) or the text (B, L, D)
        q = self.to_q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, N, C / heads)
        k = self.to_k(context).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, heads, L, C / heads)
        v = self.to_v(context).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        # mask (B, 1, 1, L) bool: True where a key may be attended to; broadcast over heads and queries
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, N, C / heads)
        return self.to_out(h.transpose(1, 2).flatten(2))  # (B, N, C)


class FeedForward(nn.Module):
    """Linear, GEGLU (x * GELU(gate), Shazeer 2020) or GELU, dropout, Linear."""

    def __init__(self, dim: int, mult: int, activation: str, dropout: float):
        super().__init__()
        inner = dim * mult
        self.geglu = activation == "geglu"
        self.proj_in = nn.Linear(dim, inner * 2 if self.geglu else inner)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj_in(x)  # (B, N, inner) or (B, N, 2 inner)
        if self.geglu:
            h, gate = h.chunk(2, dim=-1)
            h = h * F.gelu(gate)
        else:
            h = F.gelu(h)
        return self.proj_out(self.dropout(h))


class TransformerLayer(nn.Module):
    """Pre-LayerNorm self-attention, cross-attention over the text, feed-forward; each with a residual."""

    def __init__(
        self, dim: int, heads: int, cross_attention_dim: int, ff_mult: int, ff_activation: str, dropout: float
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim=cross_attention_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult, ff_activation, dropout)

    def forward(
        self, h: torch.Tensor, encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        h = h + self.attn1(self.norm1(h))  # (B, HW, C)
        h = h + self.attn2(self.norm2(h), encoder_hidden_states, encoder_attention_mask)
        return h + self.ff(self.norm3(h))


class Transformer2D(nn.Module):
    """GroupNorm and proj_in to tokens, `layers` transformer layers, proj_out back to a feature map, plus a residual."""

    def __init__(self, channels: int, config: TextUNetConfig):
        super().__init__()
        heads = channels // config.attention_head_dim if config.attention_head_dim else 1
        self.norm = nn.GroupNorm(config.norm_num_groups, channels, eps=config.norm_eps)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            TransformerLayer(
                channels, heads, config.cross_attention_dim, config.ff_mult, config.ff_activation, config.dropout
            )
            for _ in range(config.transformer_layers_per_block)
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(
        self, x: torch.Tensor, encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))  # (B, HW, C)
        for block in self.transformer_blocks:
            h = block(h, encoder_hidden_states, encoder_attention_mask)
        h = self.proj_out(h)  # (B, HW, C)
        return x + h.transpose(1, 2).reshape(b, c, height, width)


class TextUNet(UNet):
    """UNet eps-model conditioned on text: (x_t, t, encoder_hidden_states, mask) -> model output of x_t's shape."""

    config_class = TextUNetConfig

    def attention_factory(self, level: int | None) -> AttentionFactory | None:
        """Transformer blocks wherever the unconditional UNet would put self-attention."""
        if super().attention_factory(level) is None:
            return None
        return lambda channels: Transformer2D(channels, self.config)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the model output for x_t = `sample` (B, C, H, W) given the text (B, L, D) and its mask (B, L), True = real token.

        Every row of the mask needs at least one True (CLIP's start token always is): a row with none has
        nothing to attend to and gives NaN.
        """
        batch = sample.shape[0]
        if (
            encoder_hidden_states.ndim != 3
            or encoder_hidden_states.shape[0] != batch
            or encoder_hidden_states.shape[2] != self.config.cross_attention_dim
        ):
            raise ValueError(
                f"encoder_hidden_states must be (B={batch}, L, {self.config.cross_attention_dim}), got {tuple(encoder_hidden_states.shape)}"
            )
        encoder_hidden_states = encoder_hidden_states.to(sample.dtype)
        if encoder_attention_mask is not None:
            if encoder_attention_mask.shape != encoder_hidden_states.shape[:2]:
                raise ValueError(
                    f"encoder_attention_mask must be (B, L) = {tuple(encoder_hidden_states.shape[:2])}, got {tuple(encoder_attention_mask.shape)}"
                )
            # (B, L) -> (B, 1, 1, L): one row of keys, broadcast over heads and query positions
            encoder_attention_mask = encoder_attention_mask.to(device=sample.device, dtype=torch.bool)[:, None, None, :]
        attn_kwargs = {"encoder_hidden_states": encoder_hidden_states, "encoder_attention_mask": encoder_attention_mask}
        return self._forward(sample, timestep, attn_kwargs)
