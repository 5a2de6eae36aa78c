"""The UNet's building blocks: the timestep embedding, residual and attention blocks, and the down, middle and up
stages (Ho et al. 2020, appendix B, module for module as diffusers' UNet2DModel names them; `uncond/unet.py` stacks them).
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from uncond.conv import Conv2d


def timestep_embedding(
    timesteps: torch.Tensor,
    dim: int,
    flip_sin_to_cos: bool = True,
    freq_shift: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps to (B, dim) (Vaswani et al. 2017, sec. 3.5), computed in `dtype`.

    float32, as diffusers computes it whatever the UNet's dtype; a float64 UNet passes float64, since float32's exp,
    sin and cos differ in the last bit between CPU kernels (vectorised or not) and float64 runs are the CPU-proof ones.
    """
    half = dim // 2
    # frequencies 10000^(-i / (half - freq_shift)), i = 0..half-1
    exponent = -math.log(10000.0) * torch.arange(half, dtype=dtype, device=timesteps.device) / (half - freq_shift)
    args = timesteps[:, None].to(dtype) * torch.exp(exponent)[None, :]  # (B, half)
    if flip_sin_to_cos:
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    else:
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """MLP on the sinusoidal embedding: Linear, SiLU, Linear."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock(nn.Module):
    """GroupNorm, SiLU, conv; add the projected time embedding; GroupNorm, SiLU, dropout, conv; plus a shortcut."""

    def __init__(
        self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float, dropout: float
    ):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1)
        # a 1x1 conv matches channel counts on the residual path when they differ
        self.conv_shortcut = Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb_act: torch.Tensor) -> torch.Tensor:
        """`temb_act` = SiLU(time embedding) (B, T), which every block projects: the UNet computes it once."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(temb_act)[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, with a GroupNorm in front and a residual."""

    def __init__(self, channels: int, head_dim: int | None, groups: int, eps: float):
        super().__init__()
        self.heads = channels // head_dim if head_dim else 1
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        # (B, HW, C) -> (B, heads, HW, C / heads)
        q, k, v = (
            proj(h).unflatten(-1, (self.heads, -1)).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v)
        )
        h = F.scaled_dot_product_attention(q, k, v)
        h = self.to_out(h.transpose(1, 2).flatten(2))  # (B, HW, C)
        return x + h.transpose(1, 2).reshape(b, c, height, width)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 conv."""

    def __init__(self, channels: int, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))  # asymmetric "SAME" padding of the TensorFlow original
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour 2x, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# A factory for the attention layer of a level: channels -> module, or None for no attention.
# The unconditional UNet makes `AttentionBlock`s; txt2img's UNet makes transformer blocks
# with cross-attention, and passes their extra inputs through `attn_kwargs`.
AttentionFactory = Callable[[int], nn.Module]


class DownBlock(nn.Module):
    """One level of the down path: `num_layers` resnets (each followed by attention if any), then a downsample."""

    def __init__(
        self,
        in_channels,
        out_channels,
        temb_channels,
        num_layers,
        make_attention,
        add_downsample,
        groups,
        eps,
        dropout,
        padding=1,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, temb_channels, groups, eps, dropout)
            for i in range(num_layers)
        )
        self.attentions = (
            nn.ModuleList(make_attention(out_channels) for _ in range(num_layers)) if make_attention else None
        )
        self.downsample = Downsample(out_channels, padding) if add_downsample else None

    def forward(self, x, temb, attn_kwargs):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, **attn_kwargs)
            skips.append(x)
        if self.downsample is not None:
            x = self.downsample(x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """The bottleneck: resnet, attention, resnet at the lowest resolution."""

    def __init__(self, channels, temb_channels, make_attention, groups, eps, dropout):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(channels, channels, temb_channels, groups, eps, dropout) for _ in range(2)
        )
        self.attentions = nn.ModuleList([make_attention(channels)]) if make_attention else None

    def forward(self, x, temb, attn_kwargs):
        x = self.resnets[0](x, temb)
        if self.attentions is not None:
            x = self.attentions[0](x, **attn_kwargs)
        return self.resnets[1](x, temb)


class UpBlock(nn.Module):
    """One level of the up path: resnets over [x, skip] (each followed by attention if any), then an upsample."""

    def __init__(
        self,
        in_channels,
        skip_channels,
        out_channels,
        temb_channels,
        num_layers,
        make_attention,
        add_upsample,
        groups,
        eps,
        dropout,
    ):
        super().__init__()
        resnets = []
        for i in range(num_layers):
            # the last resnet of a level eats the skip from the level above's downsample
            res_skip = skip_channels if i == num_layers - 1 else out_channels
            res_in = in_channels if i == 0 else out_channels
            resnets.append(ResnetBlock(res_in + res_skip, out_channels, temb_channels, groups, eps, dropout))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = (
            nn.ModuleList(make_attention(out_channels) for _ in range(num_layers)) if make_attention else None
        )
        self.upsample = Upsample(out_channels) if add_upsample else None

    def forward(self, x, skips, temb, attn_kwargs):
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x, **attn_kwargs)
        if self.upsample is not None:
            x = self.upsample(x)
        return x
