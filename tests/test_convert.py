"""Parity with diffusers' UNet2DModel: its checkpoints load onto our UNet and compute the same function."""

import json

import pytest
import torch
from diffusers import UNet2DModel

from uncond.convert import convert_config, convert_state_dict, load_unet
from uncond.unet import UNet

CONFIGS = [
    dict(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ),
    dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32),
        layers_per_block=2,
        down_block_types=("AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=4,
    ),
    # the original DDPM CIFAR-10 layout (google/ddpm-cifar10-32), narrower: one head, asymmetric downsample padding, [sin, cos] order
    dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=16,
        attention_head_dim=None,
        flip_sin_to_cos=False,
        freq_shift=1,
        downsample_padding=0,
        norm_eps=1e-6,
    ),
    dict(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=3,
        down_block_types=("DownBlock2D",) * 4,
        up_block_types=("UpBlock2D",) * 4,
        norm_num_groups=8,
        add_attention=False,
    ),
]


def random_diffusers_unet(config: dict, seed: int) -> UNet2DModel:
    torch.manual_seed(seed)
    model = UNet2DModel(**config).eval()
    with torch.no_grad():  # move norms and biases off their trivial initial values
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_diffusers_checkpoint_computes_the_same_function(tmp_path, index):
    config = CONFIGS[index]
    reference = random_diffusers_unet(config, seed=index)
    reference.save_pretrained(tmp_path)  # config.json + diffusion_pytorch_model.safetensors
    ours = load_unet(str(tmp_path))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
    generator = torch.Generator().manual_seed(index)
    size = config["sample_size"]
    x = torch.randn(3, config["in_channels"], size, size, generator=generator)
    t = torch.tensor([0, 417, 999])
    with torch.no_grad():
        expected = reference(x, t).sample
        actual = ours(x, t)
    assert (expected - actual).abs().max().item() < 1e-4


def test_pipeline_folder_uses_its_unet_subfolder(tmp_path):
    reference = random_diffusers_unet(CONFIGS[0], seed=0)
    reference.save_pretrained(tmp_path / "unet")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    ours = load_unet(str(tmp_path))
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert (reference(x, 5).sample - ours(x, 5)).abs().max() < 1e-4


def test_deprecated_attention_key_names_are_renamed():
    state = {
        "mid_block.attentions.0.query.weight": 1,
        "mid_block.attentions.0.key.bias": 2,
        "mid_block.attentions.0.value.weight": 3,
        "mid_block.attentions.0.proj_attn.weight": 4,
        "up_blocks.0.attentions.1.to_out.0.bias": 5,
        "down_blocks.0.downsamplers.0.conv.weight": 6,
        "up_blocks.1.upsamplers.0.conv.bias": 7,
        "down_blocks.0.resnets.0.conv1.weight": 8,
    }
    assert convert_state_dict(state) == {
        "mid_block.attentions.0.to_q.weight": 1,
        "mid_block.attentions.0.to_k.bias": 2,
        "mid_block.attentions.0.to_v.weight": 3,
        "mid_block.attentions.0.to_out.weight": 4,
        "up_blocks.0.attentions.1.to_out.bias": 5,
        "down_blocks.0.downsample.conv.weight": 6,
        "up_blocks.1.upsample.conv.bias": 7,
        "down_blocks.0.resnets.0.conv1.weight": 8,
    }


@pytest.mark.parametrize(
    "change, option",
    [
        (dict(time_embedding_type="fourier"), "time_embedding_type"),
        (dict(resnet_time_scale_shift="scale_shift"), "resnet_time_scale_shift"),
        (dict(down_block_types=("DownBlock2D", "SkipDownBlock2D")), "SkipDownBlock2D"),
        (dict(up_block_types=("UpBlock2D", "UpBlock2D")), "mirror"),
        (dict(class_embed_type="timestep"), "class_embed_type"),
        (dict(act_fn="gelu"), "act_fn"),
    ],
)
def test_unsupported_options_are_named(change, option):
    config = {"_class_name": "UNet2DModel", **CONFIGS[0], **change}
    with pytest.raises(ValueError, match=option):
        convert_config(config)


def test_pickled_weights_are_refused(tmp_path):
    reference = random_diffusers_unet(CONFIGS[0], seed=0)
    reference.save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(ValueError, match="pickle"):
        load_unet(str(tmp_path))


def test_our_checkpoint_round_trip_is_bit_identical(tmp_path):
    reference = random_diffusers_unet(CONFIGS[1], seed=1)
    reference.save_pretrained(tmp_path / "diffusers")
    ours = load_unet(str(tmp_path / "diffusers"))
    ours.save_pretrained(tmp_path / "ours")
    again = UNet.from_pretrained(str(tmp_path / "ours"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(x, 3), again(x, 3))


def test_sample_cli_runs_a_diffusers_ddpm_pipeline_folder(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler
    from PIL import Image

    from uncond.sample import main as sample_main

    unet = random_diffusers_unet(CONFIGS[2], seed=2)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(tmp_path / "ddpm")
    out = tmp_path / "samples"
    sample_main(
        [
            "--model",
            str(tmp_path / "ddpm"),
            "--num-images",
            "2",
            "--steps",
            "3",
            "--scheduler",
            "ddim",
            "--out",
            str(out),
        ]
    )
    image = Image.open(out / "000.png")
    assert image.size == (32, 32) and image.text["scheduler"] == "ddim"


def test_our_unet_class_refuses_a_diffusers_folder_by_name(tmp_path):
    random_diffusers_unet(CONFIGS[0], seed=0).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds a UNet2DModel, not a UNet .*load_unet"):
        UNet.from_pretrained(str(tmp_path))
