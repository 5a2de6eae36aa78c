"""Load diffusers `UNet2DModel` checkpoints (config.json + safetensors) onto our `UNet`.

Our UNet is laid out module for module like diffusers' UNet2DModel, so converting is a
config translation plus a rename of a few weight keys:

    diffusers                         ours
    down_blocks.*.downsamplers.0.*    down_blocks.*.downsample.*
    up_blocks.*.upsamplers.0.*        up_blocks.*.upsample.*
    attentions.*.to_out.0.*           attentions.*.to_out.*
    attentions.*.query/key/value.*    attentions.*.to_q/to_k/to_v.*   (checkpoints older than diffusers 0.15)
    attentions.*.proj_attn.*          attentions.*.to_out.*
"""

import json
import os
import re

from safetensors.torch import load_file

from uncond.hub import resolve_model_dir
from uncond.unet import UNet

DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
PICKLED_WEIGHTS = ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin", "pytorch_model.bin")
SUPPORTED_DOWN = {"DownBlock2D": False, "AttnDownBlock2D": True}  # block type -> has attention
SUPPORTED_UP = {"UpBlock2D": False, "AttnUpBlock2D": True}

# diffusers UNet2DModel options we do not implement, with the only value we accept
UNSUPPORTED_OPTIONS = {
    "time_embedding_type": "positional",
    "center_input_sample": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "resnet_time_scale_shift": "default",
    "act_fn": "silu",
    "mid_block_scale_factor": 1,
}

KEY_RENAMES = [
    (re.compile(r"\.downsamplers\.0\."), ".downsample."),
    (re.compile(r"\.upsamplers\.0\."), ".upsample."),
    (re.compile(r"(attentions\.\d+)\.to_out\.0\."), r"\1.to_out."),
    (re.compile(r"(attentions\.\d+)\.query\."), r"\1.to_q."),
    (re.compile(r"(attentions\.\d+)\.key\."), r"\1.to_k."),
    (re.compile(r"(attentions\.\d+)\.value\."), r"\1.to_v."),
    (re.compile(r"(attentions\.\d+)\.proj_attn\."), r"\1.to_out."),
]


def is_diffusers_unet(directory: str) -> bool:
    """Whether `directory`'s config.json describes a diffusers UNet2DModel."""
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    return config.get("_class_name") == "UNet2DModel" or "down_block_types" in config


def convert_config(diffusers_config: dict) -> dict:
    """Translate a UNet2DModel config into our `UNetConfig` fields; unsupported options raise ValueError naming them."""
    c = diffusers_config
    for option, accepted in UNSUPPORTED_OPTIONS.items():
        if option in c and c[option] != accepted:
            raise ValueError(f"unsupported UNet2DModel option {option}={c[option]!r} (only {accepted!r} is supported)")
    if c.get("attn_norm_num_groups") not in (None, c.get("norm_num_groups", 32)):
        raise ValueError(f"unsupported UNet2DModel option attn_norm_num_groups={c['attn_norm_num_groups']!r}")
    down_types = list(
        c.get("down_block_types", ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"))
    )
    up_types = list(c.get("up_block_types", ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")))
    for name in down_types:
        if name not in SUPPORTED_DOWN:
            raise ValueError(f"unsupported down_block_types entry {name!r} (supported: {sorted(SUPPORTED_DOWN)})")
    for name in up_types:
        if name not in SUPPORTED_UP:
            raise ValueError(f"unsupported up_block_types entry {name!r} (supported: {sorted(SUPPORTED_UP)})")
    levels = len(down_types)
    if len(up_types) != levels:
        raise ValueError(f"down_block_types and up_block_types differ in length: {down_types} vs {up_types}")
    # our config names attention by resolution, so the up path must mirror the down path
    for level in range(levels):
        if SUPPORTED_DOWN[down_types[level]] != SUPPORTED_UP[up_types[levels - 1 - level]]:
            raise ValueError(
                f"unsupported: attention in up_block_types {up_types} does not mirror down_block_types {down_types}"
            )
    sample_size = c.get("sample_size")
    if not isinstance(sample_size, int):
        raise ValueError(f"unsupported sample_size={sample_size!r}: only square images (an int) are supported")
    return {
        "sample_size": sample_size,
        "in_channels": c.get("in_channels", 3),
        "out_channels": c.get("out_channels", 3),
        "block_out_channels": tuple(c.get("block_out_channels", (224, 448, 672, 896))),
        "layers_per_block": c.get("layers_per_block", 2),
        "attention_resolutions": tuple(
            sample_size // 2**level for level in range(levels) if SUPPORTED_DOWN[down_types[level]]
        ),
        "mid_block_attention": c.get("add_attention", True),
        # UNet2DModel's default head size is 8; null means one head over all channels
        "attention_head_dim": c.get("attention_head_dim", 8),
        "norm_num_groups": c.get("norm_num_groups", 32),
        "norm_eps": c.get("norm_eps", 1e-5),
        "dropout": c.get("dropout", 0.0),
        "flip_sin_to_cos": c.get("flip_sin_to_cos", True),
        "freq_shift": c.get("freq_shift", 0),
        "downsample_padding": c.get("downsample_padding", 1),
    }


def convert_state_dict(state: dict) -> dict:
    """Rename diffusers UNet2DModel weight keys to ours (see the table at the top of this file)."""
    converted = {}
    for key, value in state.items():
        for pattern, replacement in KEY_RENAMES:
            key = pattern.sub(replacement, key)
        converted[key] = value
    return converted


def load_unet(path_or_hub_id: str, subfolder: str | None = None) -> UNet:
    """Our UNet from a folder or hub id in either format: ours (`UNet.from_pretrained`) or diffusers' UNet2DModel."""
    directory = resolve_model_dir(path_or_hub_id, subfolder)
    return load_diffusers_unet(directory) if is_diffusers_unet(directory) else UNet.from_pretrained(directory)


def load_diffusers_unet(directory: str, cls=UNet) -> UNet:
    """Build our UNet (or `cls`) from a diffusers UNet2DModel folder: config.json + safetensors weights."""
    with open(os.path.join(directory, "config.json")) as f:
        config = cls.config_class.from_dict(convert_config(json.load(f)))
    weights = next(
        (os.path.join(directory, n) for n in DIFFUSERS_WEIGHTS if os.path.isfile(os.path.join(directory, n))), None
    )
    if weights is None:
        pickled = [n for n in PICKLED_WEIGHTS if os.path.isfile(os.path.join(directory, n))]
        hint = (
            f"; found only {pickled[0]}, a pickle, which is never loaded here (convert it to safetensors first)"
            if pickled
            else ""
        )
        raise ValueError(f"no diffusion_pytorch_model.safetensors in {directory!r}{hint}")
    model = cls(config)
    state = convert_state_dict(load_file(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"weights in {weights!r} do not fit the converted config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model
