"""Equal-architecture model pairs for the benchmark: our UNets and diffusers' own, with the same weights.

    ours, reference = uncond_pair(UNetConfig(...))          # UNet        vs diffusers.UNet2DModel
    ours, reference = txt2img_pair(TextUNetConfig(...))     # TextUNet    vs diffusers.UNet2DConditionModel

The diffusers model is built from a config translated from ours (the inverse of `uncond/convert.py`),
initialised by diffusers, and its weights are copied onto ours with the key renames below, so both
compute the same function and every timing compares the same work.
"""

import json
import os
import re

import torch

from txt2img.unet import TextUNet, TextUNetConfig
from uncond.convert import convert_state_dict
from uncond.unet import UNet, UNetConfig

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# the shipped architectures (the configs the shipped weights were trained from)
UNCOND_TRAIN_CONFIG = os.path.join(ROOT, "configs", "uncond_cpu32.json")
TXT2IMG_TRAIN_CONFIG = os.path.join(ROOT, "configs", "txt2img_cpu32.json")
SHIPPED_CLIP = os.path.join(ROOT, "weights", "clip")
SHIPPED_UNCOND = os.path.join(ROOT, "weights", "uncond")
SHIPPED_TXT2IMG_UNET = os.path.join(ROOT, "weights", "txt2img", "unet")
SHIPPED_CLIP_WIDTH = 128  # weights/clip's text hidden size: the shipped TextUNet's cross_attention_dim

# beyond uncond.convert's renames: the transformer blocks of UNet2DConditionModel
TRANSFORMER_RENAMES = [
    (re.compile(r"\.(attn\d)\.to_out\.0\."), r".\1.to_out."),
    (re.compile(r"\.ff\.net\.0\.proj\."), ".ff.proj_in."),
    (re.compile(r"\.ff\.net\.2\."), ".ff.proj_out."),
]


def shipped_config(path: str, config_class, **extra):
    """The UNet architecture of a training config file (configs/*.json), as a `config_class`."""
    with open(path) as f:
        train_config = json.load(f)
    return config_class.from_dict({"sample_size": train_config["image_size"], **train_config["unet"], **extra})


def shipped_uncond_config() -> UNetConfig:
    return shipped_config(UNCOND_TRAIN_CONFIG, UNetConfig)


def shipped_txt2img_config() -> TextUNetConfig:
    return shipped_config(TXT2IMG_TRAIN_CONFIG, TextUNetConfig, cross_attention_dim=SHIPPED_CLIP_WIDTH)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _block_types(config: UNetConfig, with_attention: tuple[str, str], without: tuple[str, str]) -> tuple[list, list]:
    """diffusers' down_block_types and up_block_types for our per-resolution attention."""
    levels = len(config.block_out_channels)
    down = [with_attention[0] if config.level_has_attention(level) else without[0] for level in range(levels)]
    up = [with_attention[1] if config.level_has_attention(level) else without[1] for level in reversed(range(levels))]
    return down, up


def _shared_options(config: UNetConfig) -> dict:
    return dict(
        sample_size=config.sample_size,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups,
        norm_eps=config.norm_eps,
        dropout=config.dropout,
        flip_sin_to_cos=config.flip_sin_to_cos,
        freq_shift=config.freq_shift,
        downsample_padding=config.downsample_padding,
    )


def diffusers_uncond_config(config: UNetConfig) -> dict:
    """The `UNet2DModel` config of our `UNetConfig` (uncond.convert.convert_config turns it back)."""
    down, up = _block_types(config, ("AttnDownBlock2D", "AttnUpBlock2D"), ("DownBlock2D", "UpBlock2D"))
    return dict(
        _shared_options(config),
        down_block_types=down,
        up_block_types=up,
        add_attention=config.mid_block_attention,
        attention_head_dim=config.attention_head_dim,
    )


def diffusers_txt2img_config(config: TextUNetConfig) -> dict:
    """The `UNet2DConditionModel` config of our `TextUNetConfig` (feed-forward width fixed after, see `txt2img_pair`)."""
    if not config.mid_block_attention:
        raise ValueError(
            "mid_block_attention=False has no UNet2DConditionModel equivalent (its attention-free mid block has one resnet)"
        )
    down, up = _block_types(config, ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D"), ("DownBlock2D", "UpBlock2D"))
    # UNet2DConditionModel's `attention_head_dim` is, for historical reasons, the number of heads per level
    heads = tuple(c // config.attention_head_dim if config.attention_head_dim else 1 for c in config.block_out_channels)
    return dict(
        _shared_options(config),
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn",
        attention_head_dim=heads,
        cross_attention_dim=config.cross_attention_dim,
        transformer_layers_per_block=config.transformer_layers_per_block,
        use_linear_projection=True,
    )


def _ours_keys(reference_state: dict, transformer: bool) -> dict:
    """diffusers key -> our key, for every weight of a diffusers UNet."""
    keys = convert_state_dict({key: key for key in reference_state})  # our key -> diffusers key
    if transformer:
        for pattern, replacement in TRANSFORMER_RENAMES:
            keys = {pattern.sub(replacement, ours): theirs for ours, theirs in keys.items()}
    return {theirs: ours for ours, theirs in keys.items()}


def _pair(ours, reference, transformer: bool, ours_from: str | None):
    """Give both models the same weights: diffusers' initialisation, or the trained weights in the folder `ours_from`."""
    mapping = _ours_keys(reference.state_dict(), transformer)
    if ours_from is None:
        state = reference.state_dict()
        ours.load_state_dict({mapping[key]: value for key, value in state.items()}, strict=True)
    else:
        trained = type(ours).from_pretrained(ours_from)
        if trained.config != ours.config:
            raise ValueError(f"weights in {ours_from!r} are for {trained.config}, not {ours.config}")
        ours.load_state_dict(trained.state_dict(), strict=True)
        state = ours.state_dict()
        reference.load_state_dict({key: state[mapping[key]] for key in reference.state_dict()}, strict=True)
    return ours.eval(), reference.eval()


def uncond_pair(config: UNetConfig, seed: int = 0, weights: str | None = None) -> tuple[UNet, torch.nn.Module]:
    """(our UNet, diffusers' UNet2DModel) of the same architecture and weights (`weights`: a model folder; None: random)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return _pair(UNet(config), UNet2DModel(**diffusers_uncond_config(config)), transformer=False, ours_from=weights)


def txt2img_pair(config: TextUNetConfig, seed: int = 0, weights: str | None = None) -> tuple[TextUNet, torch.nn.Module]:
    """(our TextUNet, diffusers' UNet2DConditionModel) of the same architecture and weights (`weights`: a UNet folder; None: random)."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention import BasicTransformerBlock, FeedForward

    torch.manual_seed(seed)
    reference = UNet2DConditionModel(**diffusers_txt2img_config(config))
    # its config has no feed-forward width or activation: give each transformer block diffusers' own FeedForward of ours
    for module in reference.modules():
        if isinstance(module, BasicTransformerBlock):
            dim = module.norm3.normalized_shape[0]
            module.ff = FeedForward(
                dim, mult=config.ff_mult, activation_fn=config.ff_activation, dropout=config.dropout
            )
    return _pair(TextUNet(config), reference, transformer=True, ours_from=weights)
