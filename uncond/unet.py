"""The denoising network: a UNet with residual blocks, a timestep embedding and self-attention.

The network predicts eps(x_t, t) (or v, or x_0) for a noisy image x_t at timestep t; it never
sees the noise schedule. Layout follows Ho et al. 2020 (DDPM, appendix B) as diffusers'
`UNet2DModel` builds it, module for module, so that its checkpoints load onto ours with a
key rename (see `uncond/convert.py`):

    conv_in -> down_blocks[level] (resnets + attentions, then a stride-2 conv)
            -> mid_block (resnet, attention, resnet)
            -> up_blocks[level] (resnets over [h, skip] + attentions, then nearest 2x + conv)
            -> GroupNorm, SiLU, conv_out

Every output of the down path (conv_in, each resnet, each downsample) is pushed on a stack
and popped, last first, by one resnet of the up path (channel concatenation).
"""

import json
import os
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from uncond.blocks import (
    AttentionBlock,
    AttentionFactory,
    DownBlock,
    MidBlock,
    TimestepEmbedding,
    UpBlock,
    timestep_embedding,
)
from uncond.conv import Conv2d
from uncond.hub import CONFIG_NAME, resolve_model_dir

WEIGHTS_NAME = "model.safetensors"


@dataclass
class UNetConfig:
    """Architecture of `UNet`; saved as config.json next to the weights."""

    sample_size: int = 32  # image height = width
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (64, 128, 256)  # one entry per resolution level
    layers_per_block: int = 2  # resnets per level on the down path (the up path has one more)
    attention_resolutions: tuple[int, ...] = (16, 8)  # feature-map sizes that get self-attention
    mid_block_attention: bool = True
    attention_head_dim: int | None = 32  # None: one head spanning all channels
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    dropout: float = 0.0
    flip_sin_to_cos: bool = True  # embedding order [cos, sin] (diffusers' default) or [sin, cos]
    freq_shift: float = 0.0
    downsample_padding: int = 1  # 0: pad right/bottom by one, then conv (the original DDPM's downsampling)
    # a super-resolution stage (Ho et al. 2021, "Cascaded Diffusion Models"; uncond/upscale.py): the low-res image,
    # upsampled to the output size, comes in as `low_res_channels` more input channels after x_t's `in_channels`
    low_res_channels: int = 0
    # an embedding of the low-res input's augmentation level, added to the timestep embedding (Ho et al. 2021, sec. 4)
    noise_level_embedding: bool = False

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)
        self.attention_resolutions = tuple(self.attention_resolutions)
        levels = len(self.block_out_channels)
        if levels < 1:
            raise ValueError("block_out_channels must name at least one level")
        if not 1 <= self.in_channels <= 4 or not 1 <= self.out_channels <= 4:
            raise ValueError(
                f"in_channels and out_channels must be in 1..4, got {self.in_channels}, {self.out_channels}"
            )
        if isinstance(self.low_res_channels, bool) or self.low_res_channels not in range(5):
            raise ValueError(f"low_res_channels must be in 0..4, got {self.low_res_channels!r}")
        if self.sample_size % 2 ** (levels - 1) != 0:
            raise ValueError(
                f"sample_size {self.sample_size} must be divisible by 2**(levels-1) = {2 ** (levels - 1)} "
                f"for block_out_channels {self.block_out_channels}"
            )
        for channels in self.block_out_channels:
            if channels % self.norm_num_groups != 0:
                raise ValueError(
                    f"block_out_channels {self.block_out_channels} must be divisible by norm_num_groups {self.norm_num_groups}"
                )
            if self.attention_head_dim is not None and channels % self.attention_head_dim != 0:
                raise ValueError(
                    f"block_out_channels {self.block_out_channels} must be divisible by attention_head_dim {self.attention_head_dim}"
                )
        if self.layers_per_block < 1:
            raise ValueError(f"layers_per_block must be >= 1, got {self.layers_per_block}")

    def level_has_attention(self, level: int) -> bool:
        """Whether resolution level `level` (0 = full size) gets self-attention."""
        return self.sample_size // 2**level in self.attention_resolutions

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        """Build a config from a dict, ignoring keys that are not fields (e.g. `_class_name`)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class UNet(nn.Module):
    """UNet epsilon-model of DDPM (Ho et al. 2020): (x_t, t) -> model output of x_t's shape."""

    config_class = UNetConfig

    def __init__(self, config: UNetConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = self.config_class(**kwargs)
        elif kwargs:
            raise ValueError(f"pass either config or keyword arguments, not both (got {sorted(kwargs)})")
        self.config = config
        ch = config.block_out_channels
        levels = len(ch)
        temb_channels = ch[0] * 4
        groups, eps, dropout = config.norm_num_groups, config.norm_eps, config.dropout

        self.conv_in = Conv2d(config.in_channels + config.low_res_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb_channels)
        # the augmentation level s of the low-res input, embedded as the timestep is (its own MLP)
        self.noise_level_embedding = TimestepEmbedding(ch[0], temb_channels) if config.noise_level_embedding else None

        self.down_blocks = nn.ModuleList()
        for level in range(levels):
            self.down_blocks.append(
                DownBlock(
                    ch[level - 1] if level > 0 else ch[0],
                    ch[level],
                    temb_channels,
                    config.layers_per_block,
                    self.attention_factory(level),
                    level < levels - 1,
                    groups,
                    eps,
                    dropout,
                    config.downsample_padding,
                )
            )
        self.mid_block = MidBlock(ch[-1], temb_channels, self.attention_factory(None), groups, eps, dropout)

        self.up_blocks = nn.ModuleList()
        for level in reversed(range(levels)):
            self.up_blocks.append(
                UpBlock(
                    ch[min(level + 1, levels - 1)],
                    ch[max(level - 1, 0)],
                    ch[level],
                    temb_channels,
                    config.layers_per_block + 1,
                    self.attention_factory(level),
                    level > 0,
                    groups,
                    eps,
                    dropout,
                )
            )
        self.conv_norm_out = nn.GroupNorm(groups, ch[0], eps=eps)
        self.conv_out = Conv2d(ch[0], config.out_channels, 3, padding=1)
        self._pack_convolutions()  # for CPU inference (uncond/conv.py)

    def attention_factory(self, level: int | None) -> AttentionFactory | None:
        """The attention layer maker for a level (None: the mid block), or None where the level has none."""
        config = self.config
        if level is None and not config.mid_block_attention:
            return None
        if level is not None and not config.level_has_attention(level):
            return None
        return lambda channels: AttentionBlock(
            channels, config.attention_head_dim, config.norm_num_groups, config.norm_eps
        )

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int | float, noise_level: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """Predict the model output for x_t = `sample` (B, C, H, W) at `timestep` (scalar or (B,)).

        A super-resolution stage takes [x_t, low-res image] (B, in_channels + low_res_channels, H, W) and the low-res
        input's augmentation level `noise_level` (scalar or (B,)) where its config has `noise_level_embedding`.
        """
        return self._forward(sample, timestep, {}, noise_level)

    def embed(self, values, dim_like: torch.Tensor) -> torch.Tensor:
        """Sinusoidal embedding (B, C0) of a timestep or noise level (scalar or (B,)), on `dim_like`'s device."""
        batch = dim_like.shape[0]
        if not torch.is_tensor(values):
            values = torch.tensor([values], dtype=torch.float32)
        # a host tensor goes to the device without a sync; a scalar is broadcast over the batch
        values = values.to(dim_like.device, non_blocking=True).reshape(-1).expand(batch)
        dtype = torch.float64 if dim_like.dtype == torch.float64 else torch.float32
        emb = timestep_embedding(
            values, self.config.block_out_channels[0], self.config.flip_sin_to_cos, self.config.freq_shift, dtype
        )
        return emb.to(dim_like.dtype)

    def _forward(self, sample, timestep, attn_kwargs, noise_level=None):
        temb = self.time_embedding(self.embed(timestep, sample))  # (B, 4 * C0)
        if self.noise_level_embedding is not None:
            if noise_level is None:
                raise ValueError("noise_level is needed: this UNet embeds the low-res input's augmentation level")
            temb = temb + self.noise_level_embedding(self.embed(noise_level, sample))  # Ho et al. 2021, sec. 4
        elif noise_level is not None:
            raise ValueError("noise_level was given, but this UNet has no noise_level_embedding")
        temb_act = F.silu(temb)  # (B, 4 * C0), activated as each resnet reads it

        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb_act, attn_kwargs)
            skips.extend(block_skips)
        x = self.mid_block(x, temb_act, attn_kwargs)
        for block in self.up_blocks:
            x = block(x, skips, temb_act, attn_kwargs)
        return self.conv_out(
            F.silu(self.conv_norm_out(x))
        ).contiguous()  # (B, C, H, W), whatever layout the convs chose

    # ---- CPU inference: the convolutions are packed for oneDNN here, outside forward (uncond/conv.py) ----

    def train(self, mode: bool = True) -> "UNet":
        """Set train or eval mode, and pack every convolution whose pack no longer holds (an in-place update, e.g. an EMA step)."""
        super().train(mode)
        self._pack_convolutions()
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)  # each Conv2d drops its pack: .to() may give its weight new data
        self._pack_convolutions()
        return self

    def __setstate__(self, state):
        super().__setstate__(state)  # copies (deepcopy, pickle) arrive unpacked
        self._pack_convolutions()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._pack_convolutions()  # the packs were of the old weights
        return result

    def _pack_convolutions(self) -> None:
        """Pack every convolution whose pack no longer holds (forward takes the packs with autograd off, in either mode)."""
        for conv, input_size in self.conv_input_sizes().items():
            if not conv.is_packed(input_size):
                conv.pack(input_size)

    def conv_input_sizes(self) -> dict[Conv2d, tuple[int, int]]:
        """The (H, W) of every convolution's input as `forward` runs it: level l works on sample_size / 2**l maps."""
        sizes = {}

        def at(module: nn.Module, size: int) -> None:
            sizes.update((conv, (size, size)) for conv in module.modules() if isinstance(conv, Conv2d))

        top, levels = self.config.sample_size, len(self.down_blocks)
        at(self, top)  # conv_in and conv_out; the blocks' convs are set below
        for level, block in enumerate(self.down_blocks):
            at(block, top // 2**level)
            if block.downsample is not None and block.downsample.padding == 0:
                at(block.downsample, top // 2**level + 1)  # padded right and bottom before its conv
        at(self.mid_block, top // 2 ** (levels - 1))
        for level, block in zip(reversed(range(levels)), self.up_blocks):
            at(block, top // 2**level)
            if block.upsample is not None:
                at(block.upsample, top // 2 ** (level - 1))  # its conv runs after the 2x upsampling
        return sizes

    # ---- saving and loading: config.json + safetensors, never pickles ----

    def save_pretrained(self, save_directory: str, dtype: torch.dtype | None = None) -> None:
        """Write config.json and model.safetensors (optionally cast, e.g. to fp16) into `save_directory`."""
        os.makedirs(save_directory, exist_ok=True)
        config = {"_class_name": type(self).__name__, **asdict(self.config)}
        state = {
            k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
            for k, v in self.state_dict().items()
        }
        # write under temporary names, then rename, so a killed save never leaves a half file
        tmp_weights = os.path.join(save_directory, WEIGHTS_NAME + ".tmp")
        save_file(state, tmp_weights)
        tmp_config = os.path.join(save_directory, CONFIG_NAME + ".tmp")
        with open(tmp_config, "w") as f:
            json.dump(config, f, indent=2)
        os.replace(tmp_weights, os.path.join(save_directory, WEIGHTS_NAME))
        os.replace(tmp_config, os.path.join(save_directory, CONFIG_NAME))

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str, subfolder: str | None = None, dtype: torch.dtype | None = None
    ) -> "UNet":
        """Load a folder written by `save_pretrained` (or a hub id holding one); a folder of another class is refused.

        diffusers' UNet2DModel folders load through `uncond.convert.load_unet`.
        """
        directory = resolve_model_dir(path_or_hub_id, subfolder)
        with open(os.path.join(directory, CONFIG_NAME)) as f:
            config = json.load(f)
        class_name = config.get("_class_name")
        if class_name != cls.__name__:
            hint = " (a diffusers UNet: load it with uncond.convert.load_unet)" if class_name == "UNet2DModel" else ""
            raise ValueError(f"path_or_hub_id {path_or_hub_id!r} holds a {class_name}, not a {cls.__name__}{hint}")
        model = cls(cls.config_class.from_dict(config))
        weights = os.path.join(directory, WEIGHTS_NAME)
        if not os.path.isfile(weights):
            raise ValueError(f"no {WEIGHTS_NAME} in {directory}")
        # weights may be stored in fp16; load_state_dict copies them into the fp32 parameters
        model.load_state_dict(load_file(weights), strict=True)
        if dtype is not None:
            model = model.to(dtype)
        return model.eval()
