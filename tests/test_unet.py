"""UNet shapes, configs, errors, and save/load round trips."""

import json

import pytest
import torch

from uncond.unet import Conv2d, UNet, UNetConfig, timestep_embedding


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


# ---- the convolution that keeps its weight packed for oneDNN in CPU inference ----


@pytest.mark.parametrize(
    "batch, in_channels, out_channels, kernel, stride, padding, size",
    [
        (1, 3, 8, 3, 1, 1, 16),
        (4, 16, 16, 3, 2, 1, 8),
        (2, 16, 8, 1, 1, 0, 8),
        (3, 8, 8, 3, 2, 0, 9),
        (1, 32, 32, 3, 1, 1, 4),
    ],
)
def test_packed_conv_computes_what_nn_conv2d_computes(batch, in_channels, out_channels, kernel, stride, padding, size):
    from uncond.unet import Conv2d

    torch.manual_seed(0)
    conv = Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding)
    x = torch.randn(batch, in_channels, size, size)
    expected = torch.nn.functional.conv2d(x, conv.weight, conv.bias, stride=stride, padding=padding)
    with torch.inference_mode():
        first, again = conv(x), conv(x)  # the second call reuses the packed weight
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(first, again)


def test_packed_conv_sees_every_weight_change():
    import copy

    from uncond.unet import Conv2d

    torch.manual_seed(0)
    conv = Conv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 6, 6)

    def check():
        with torch.no_grad():
            torch.testing.assert_close(
                conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-5, rtol=1e-5
            )

    check()
    with torch.no_grad():
        conv.weight.mul_(2.0)  # an in-place update, as an optimizer or an EMA makes
    check()
    conv.load_state_dict({"weight": torch.randn(4, 4, 3, 3), "bias": torch.randn(4)})
    check()
    conv.weight.data = torch.randn(4, 4, 3, 3)  # new data under the same parameter
    check()
    conv.double().float()  # .to() round trip
    check()
    twin = copy.deepcopy(conv)  # copies start without the (uncopyable) packed weights
    with torch.no_grad():
        torch.testing.assert_close(twin(x), conv(x))
    # with autograd on it is nn.Conv2d: gradients flow
    conv(x).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_packed_convolution_leaves_autocast_in_charge():
    conv = Conv2d(4, 8, 3, padding=1).eval()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv(x).dtype == torch.bfloat16  # bf16 as asked, not the float32 packed path
        assert conv(x).dtype == torch.float32
