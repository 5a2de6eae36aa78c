"""The conditional UNet: shapes, the text really conditions, padding is invisible, errors, save/load round trips."""

import json

import pytest
import torch
from txt2img_fixtures import TINY_UNET, WIDTH, tiny_unet

from txt2img.unet import Attention, TextUNet, TextUNetConfig, Transformer2D
from uncond.unet import UNet, UNetConfig


def text(batch=2, length=6, seed=1):
    """Random text hidden states (B, L, D) and a mask with 3 and `length` real tokens."""
    generator = torch.Generator().manual_seed(seed)
    hidden_states = torch.randn(batch, length, WIDTH, generator=generator)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False
    return hidden_states, mask


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(ff_activation="gelu", transformer_layers_per_block=2),
        dict(attention_head_dim=None, mid_block_attention=False, attention_resolutions=(4,)),
        dict(cross_attention_dim=7),  # any text width: K and V are projected from it
    ],
)
def test_output_shape_matches_input(overrides):
    model = tiny_unet(**overrides)
    hidden_states, mask = text()
    hidden_states = torch.randn(2, 6, model.config.cross_attention_dim)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 8, 8), torch.tensor([3, 999]), hidden_states, mask)
    assert out.shape == (2, 3, 8, 8)
    assert torch.isfinite(out).all()


def test_transformer_blocks_sit_at_the_named_resolutions():
    # levels at 8x8 and 4x4; only 4x4 named: down 1 + mid 1 + up 2 transformer blocks, no plain self-attention
    model = tiny_unet(attention_resolutions=(4,), transformer_layers_per_block=2)
    blocks = [name for name, module in model.named_modules() if isinstance(module, Transformer2D)]
    assert blocks == [
        "down_blocks.1.attentions.0",
        "mid_block.attentions.0",
        "up_blocks.0.attentions.0",
        "up_blocks.0.attentions.1",
    ]
    assert all(len(model.get_submodule(name).transformer_blocks) == 2 for name in blocks)
    assert model.down_blocks[0].attentions is None


def test_cross_attention_conditions_the_output():
    model = tiny_unet()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a, mask = text(batch=1, seed=1)
    b, _ = text(batch=1, seed=2)
    with torch.no_grad():
        out_a, out_b = model(x, 500, a, mask), model(x, 500, b, mask)
    assert (out_a - out_b).abs().max() > 1e-3


def test_padding_beyond_the_mask_does_not_change_the_output():
    model = tiny_unet()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    hidden_states, mask = text()
    changed = hidden_states.clone()
    changed[0, 3:] = 1e4  # row 0's padded positions: anything at all
    with torch.no_grad():
        reference = model(x, 10, hidden_states, mask)
        assert torch.equal(model(x, 10, changed, mask), reference)
        # and padding to another length gives the same output (up to summation order)
        padded = torch.cat([hidden_states, torch.randn(2, 4, WIDTH)], dim=1)
        padded_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], dim=1)
        torch.testing.assert_close(model(x, 10, padded, padded_mask), reference)
        # without a mask the padding is read: the test above is not vacuous
        assert not torch.allclose(model(x, 10, changed, None), model(x, 10, hidden_states, None))


def test_integer_mask_equals_bool_mask():
    model = tiny_unet()
    x = torch.randn(2, 3, 8, 8)
    hidden_states, mask = text()
    with torch.no_grad():
        assert torch.equal(model(x, 10, hidden_states, mask.long()), model(x, 10, hidden_states, mask))


def test_attention_equals_the_explicit_softmax():
    torch.manual_seed(0)
    attention = Attention(16, heads=2, context_dim=5)
    x, context = torch.randn(2, 9, 16), torch.randn(2, 4, 5)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    q = attention.to_q(x).view(2, 9, 2, 8).transpose(1, 2)  # (B, heads, N, 8)
    k = attention.to_k(context).view(2, 4, 2, 8).transpose(1, 2)  # (B, heads, L, 8)
    v = attention.to_v(context).view(2, 4, 2, 8).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) / 8**0.5
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    expected = attention.to_out((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 9, 16))
    torch.testing.assert_close(attention(x, context, mask[:, None, None, :]), expected)


@pytest.mark.parametrize(
    "overrides, argument",
    [
        (dict(cross_attention_dim=0), "cross_attention_dim"),
        (dict(transformer_layers_per_block=0), "transformer_layers_per_block"),
        (dict(ff_activation="relu"), "ff_activation"),
        (dict(ff_mult=0), "ff_mult"),
        (dict(block_out_channels=(12, 32)), "block_out_channels"),  # the inherited checks still run
    ],
)
def test_bad_config_raises(overrides, argument):
    with pytest.raises(ValueError, match=argument):
        TextUNetConfig(**{**TINY_UNET, **overrides})


def test_bad_inputs_raise():
    model = tiny_unet()
    x = torch.randn(2, 3, 8, 8)
    hidden_states, mask = text()
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(x, 10, torch.randn(2, 6, WIDTH + 1), mask)  # wrong width
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(x, 10, hidden_states[:1], mask[:1])  # wrong batch
    with pytest.raises(ValueError, match="encoder_attention_mask"):
        model(x, 10, hidden_states, mask[:, :4])


def test_save_load_round_trip_is_identical(tmp_path):
    model = tiny_unet(ff_activation="gelu", transformer_layers_per_block=2)
    model.save_pretrained(str(tmp_path))
    config = json.load(open(tmp_path / "config.json"))
    assert (
        config["_class_name"] == "TextUNet"
        and config["cross_attention_dim"] == WIDTH
        and config["ff_activation"] == "gelu"
    )
    loaded = TextUNet.from_pretrained(str(tmp_path))
    assert isinstance(loaded.config, TextUNetConfig) and loaded.config == model.config
    x = torch.randn(2, 3, 8, 8)
    hidden_states, mask = text()
    with torch.no_grad():
        assert torch.equal(loaded(x, 10, hidden_states, mask), model(x, 10, hidden_states, mask))


def test_from_pretrained_refuses_an_unconditional_unet(tmp_path):
    UNet(
        UNetConfig(
            sample_size=8,
            block_out_channels=(8, 16),
            layers_per_block=1,
            attention_resolutions=(4,),
            norm_num_groups=4,
            attention_head_dim=8,
        )
    ).save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="UNet, not a TextUNet"):
        TextUNet.from_pretrained(str(tmp_path))
