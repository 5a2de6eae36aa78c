"""UNet shapes, configs, errors, and save/load round trips."""

import json

import pytest
import torch

from uncond.blocks import timestep_embedding
from uncond.unet import UNet, UNetConfig


def tiny_config(**overrides) -> UNetConfig:
    values = dict(
        sample_size=16,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_resolutions=(8,),
        norm_num_groups=8,
        attention_head_dim=8,
    )
    values.update(overrides)
    return UNetConfig(**values)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(in_channels=1, out_channels=1),
        dict(
            in_channels=4,
            out_channels=4,
            sample_size=32,
            block_out_channels=(8, 16, 16, 32),
            attention_resolutions=(16, 4),
        ),
        dict(sample_size=64, block_out_channels=(8, 16, 24), attention_resolutions=(), mid_block_attention=False),
        dict(sample_size=128, block_out_channels=(8, 8, 16, 16, 32), layers_per_block=2, attention_resolutions=(8,)),
        dict(attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1),
    ],
)
def test_output_shape_matches_input(overrides):
    torch.manual_seed(0)
    config = tiny_config(**overrides)
    model = UNet(config).eval()
    x = torch.randn(2, config.in_channels, config.sample_size, config.sample_size)
    with torch.no_grad():
        out = model(x, torch.tensor([3, 999]))
    assert out.shape == (2, config.out_channels, config.sample_size, config.sample_size)
    assert torch.isfinite(out).all()


def test_timestep_forms_agree():
    torch.manual_seed(0)
    model = UNet(tiny_config()).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        a = model(x, 500)
        b = model(x, torch.tensor(500))
        c = model(x, torch.tensor([500, 500, 500]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_timestep_changes_output():
    torch.manual_seed(0)
    model = UNet(tiny_config()).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(model(x, 10), model(x, 900))


def test_timestep_embedding_values():
    emb = timestep_embedding(torch.tensor([0.0, 1.0]), 4, flip_sin_to_cos=False)
    # frequencies 10000^(-i/2) for i = 0, 1 -> 1 and 0.01
    expected = torch.tensor(
        [
            [0.0, 0.0, 1.0, 1.0],
            [
                torch.sin(torch.tensor(1.0)),
                torch.sin(torch.tensor(0.01)),
                torch.cos(torch.tensor(1.0)),
                torch.cos(torch.tensor(0.01)),
            ],
        ]
    )
    torch.testing.assert_close(emb, expected)
    flipped = timestep_embedding(torch.tensor([0.0, 1.0]), 4, flip_sin_to_cos=True)
    torch.testing.assert_close(flipped, torch.cat([expected[:, 2:], expected[:, :2]], dim=1))


@pytest.mark.parametrize(
    "overrides, argument",
    [
        (dict(sample_size=18, block_out_channels=(8, 16, 16)), "sample_size"),
        (dict(in_channels=5), "in_channels"),
        (dict(block_out_channels=(12, 16)), "norm_num_groups"),
        (dict(layers_per_block=0), "layers_per_block"),
        (dict(block_out_channels=()), "block_out_channels"),
    ],
)
def test_bad_config_raises(overrides, argument):
    with pytest.raises(ValueError, match=argument):
        tiny_config(**overrides)


def test_save_load_round_trip_is_identical(tmp_path):
    torch.manual_seed(0)
    model = UNet(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.tmp"))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "UNet" and config["block_out_channels"] == [16, 32]
    loaded = UNet.from_pretrained(str(tmp_path))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x, 7), loaded(x, 7))


def test_fp16_save_loads_into_fp32(tmp_path):
    torch.manual_seed(0)
    model = UNet(tiny_config()).eval()
    model.save_pretrained(tmp_path, dtype=torch.float16)
    loaded = UNet.from_pretrained(str(tmp_path))
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x, 7), loaded(x, 7), atol=2e-2, rtol=0)


def test_missing_folder_raises():
    with pytest.raises(ValueError, match="neither a local folder nor a hub id"):
        UNet.from_pretrained("/no/such/folder/anywhere")
