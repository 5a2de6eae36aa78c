"""Classifier-free guidance: the formula on known numbers, the rescale, and the batched model function."""

import pytest
import torch

from txt2img.clip import TextEmbeddings
from txt2img.guidance import check_guidance_args, classifier_free_guidance, guided_model_fn


def test_guidance_arithmetic():
    cond, uncond = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 1.0), cond)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(classifier_free_guidance(cond, uncond, 3.0), uncond + 3 * (cond - uncond))
    # full rescale: each sample's std becomes the conditional one's (Lin et al. 2023 eq. 15)
    rescaled = classifier_free_guidance(cond, uncond, 7.0, guidance_rescale=1.0)
    torch.testing.assert_close(rescaled.std(dim=(1, 2, 3)), cond.std(dim=(1, 2, 3)))
    half = classifier_free_guidance(cond, uncond, 7.0, guidance_rescale=0.5)
    torch.testing.assert_close(half, 0.5 * rescaled + 0.5 * classifier_free_guidance(cond, uncond, 7.0))


def test_guidance_on_known_numbers():
    # eps_uncond = 1, eps_cond = 3, s = 2: 1 + 2 (3 - 1) = 5 (Ho & Salimans 2022 eq. 6)
    cond, uncond = torch.full((1, 1, 1, 2), 3.0), torch.full((1, 1, 1, 2), 1.0)
    assert classifier_free_guidance(cond, uncond, 2.0).tolist() == [[[[5.0, 5.0]]]]
    # rescale 1 of a constant-difference output: std of cond [1, 3] is sqrt(2); guided [1, 7] has std sqrt(18)
    cond, uncond = torch.tensor([[[[1.0, 3.0]]]]), torch.tensor([[[[1.0, 1.0]]]])
    guided = classifier_free_guidance(cond, uncond, 3.0, guidance_rescale=1.0)
    torch.testing.assert_close(guided, torch.tensor([[[[1.0, 7.0]]]]) * (2**0.5 / 18**0.5))


class RowEcho(torch.nn.Module):
    """A stand-in UNet whose output is each row's first text feature, broadcast: shows which text reached which row."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))  # a parameter, for the device and dtype
        self.calls = []

    def forward(self, sample, timestep, encoder_hidden_states, encoder_attention_mask=None):
        self.calls.append(sample.shape[0])
        return encoder_hidden_states[:, 0, 0].view(-1, 1, 1, 1).expand_as(sample) + 0 * sample


def text(values) -> TextEmbeddings:
    hidden_states = torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)
    return TextEmbeddings(hidden_states, torch.ones(len(values), 1, dtype=torch.bool), [False] * len(values))


def test_model_fn_guides_each_row_with_its_own_prompts_in_one_call():
    unet = RowEcho()
    model_fn = guided_model_fn(unet, text([3.0, 10.0]), text([1.0, 4.0]), guidance_scale=2.0)
    out = model_fn(torch.zeros(2, 1, 2, 2), torch.tensor(5))
    assert unet.calls == [4]  # both halves in one batched call
    # row 0: 1 + 2 (3 - 1) = 5; row 1: 4 + 2 (10 - 4) = 16
    assert out[:, 0, 0, 0].tolist() == [5.0, 16.0]


def test_model_fn_at_scale_one_is_the_conditional_model_alone():
    unet = RowEcho()
    out = guided_model_fn(unet, text([3.0]), None, guidance_scale=1.0)(torch.zeros(1, 1, 2, 2), torch.tensor(5))
    assert unet.calls == [1] and out.flatten().tolist() == [3.0] * 4
    with pytest.raises(ValueError, match="uncond"):
        guided_model_fn(unet, text([3.0]), None, guidance_scale=2.0)


@pytest.mark.parametrize(
    "scale, rescale, argument",
    [(-1.0, 0.0, "guidance_scale"), (float("nan"), 0.0, "guidance_scale"), ("7", 0.0, "guidance_scale"),
     (True, 0.0, "guidance_scale"), (2.0, 1.5, "guidance_rescale"), (2.0, -0.1, "guidance_rescale")],
)  # fmt: skip
def test_bad_guidance_arguments_are_named(scale, rescale, argument):
    with pytest.raises(ValueError, match=argument):
        check_guidance_args(scale, rescale)


def test_no_rescale_leaves_even_a_constant_output_alone():
    # rescale 0 must not compute the std ratio: a constant guided output has std 0, and 0 * (0 / 0) is NaN
    cond, uncond = torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), 1.0)
    assert classifier_free_guidance(cond, uncond, 3.0).tolist() == [[[[4.0, 4.0], [4.0, 4.0]]]]
    assert classifier_free_guidance(cond, uncond, 3.0, guidance_rescale=0.0).tolist() == [[[[4.0, 4.0], [4.0, 4.0]]]]


def test_the_rescale_is_per_sample():
    # sample 0's cond std is 1, sample 1's is 10: each guided sample takes its own cond's std
    ramp = torch.tensor([-1.5, -0.5, 0.5, 1.5]).view(1, 1, 2, 2) / torch.tensor([-1.5, -0.5, 0.5, 1.5]).std()
    cond, uncond = torch.cat([ramp, 10 * ramp]), torch.zeros(2, 1, 2, 2)
    guided = classifier_free_guidance(cond, uncond, 5.0, guidance_rescale=1.0)
    torch.testing.assert_close(guided, cond)


class Ramp(torch.nn.Module):
    """A stand-in UNet: each row's first text feature times a fixed ramp; records what it was given."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros((), dtype=dtype))
        self.seen = []

    def forward(self, sample, timestep, encoder_hidden_states, encoder_attention_mask=None):
        self.seen.append((sample.dtype, encoder_hidden_states.dtype, encoder_attention_mask.tolist(), int(timestep)))
        ramp = torch.arange(sample[0].numel(), dtype=sample.dtype).view(sample.shape[1:])
        return encoder_hidden_states[:, 0, :1].view(-1, 1, 1, 1) * ramp + 0 * sample


def masked(values, masks) -> TextEmbeddings:
    hidden_states = torch.tensor(values, dtype=torch.float32).view(-1, 1, 1).expand(-1, 2, 1)
    return TextEmbeddings(hidden_states, torch.tensor(masks), [False] * len(values))


def test_model_fn_hands_the_unet_its_dtype_the_masks_in_order_and_returns_float32():
    for dtype in (torch.float64, torch.bfloat16):
        unet = Ramp(dtype)
        model_fn = guided_model_fn(unet, masked([3.0], [[True, True]]), masked([1.0], [[True, False]]), 2.0)
        out = model_fn(torch.zeros(1, 1, 2, 2), torch.tensor(7))
        assert unet.seen == [(dtype, dtype, [[True, False], [True, True]], 7)]  # unconditional rows first
        assert out.dtype == torch.float32 and out.flatten().tolist() == [0.0, 5.0, 10.0, 15.0]
        unet = Ramp(dtype)
        out = guided_model_fn(unet, masked([3.0], [[True, False]]), None, 1.0)(torch.zeros(1, 1, 2, 2), torch.tensor(2))
        assert unet.seen == [(dtype, dtype, [[True, False]], 2)]
        assert out.dtype == torch.float32 and out.flatten().tolist() == [0.0, 3.0, 6.0, 9.0]


def test_model_fn_applies_the_rescale():
    unet = Ramp()
    cond, uncond = masked([3.0], [[True, True]]), masked([1.0], [[True, True]])
    out = guided_model_fn(unet, cond, uncond, 2.0, guidance_rescale=1.0)(torch.zeros(1, 1, 2, 2), torch.tensor(7))
    # guided 5 * ramp, rescaled to the cond output's std (3 * ramp's): 3 * ramp
    assert out.flatten().tolist() == [0.0, 3.0, 6.0, 9.0]


def test_guidance_scale_zero_and_the_maximum_are_allowed_and_refusals_say_so_exactly():
    assert check_guidance_args(0, 0) == (0.0, 0.0) and check_guidance_args(1000, 1) == (1000.0, 1.0)
    with pytest.raises(ValueError) as error:
        check_guidance_args(1000.5, 0.0)
    assert str(error.value) == "guidance_scale must be a number from 0 to 1000, got 1000.5."
    with pytest.raises(ValueError) as error:
        check_guidance_args(7.5, 1.5)
    assert str(error.value) == "guidance_rescale must be a number from 0 to 1, got 1.5."
    with pytest.raises(ValueError) as error:
        guided_model_fn(Ramp(), masked([3.0], [[True, True]]), None, guidance_scale=0.0)
    assert str(error.value) == "uncond embeddings are needed when guidance_scale != 1"


class DeviceProbe(torch.nn.Module):
    """A stand-in UNet on the meta device (a GPU's stand-in): records the devices of its inputs."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros((), device="meta"))
        self.seen = []

    def forward(self, sample, timestep, encoder_hidden_states, encoder_attention_mask):
        self.seen.append(tuple(x.device.type for x in (sample, encoder_hidden_states, encoder_attention_mask)))
        return sample


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
def test_model_fn_moves_the_text_to_the_unets_device(guidance_scale):
    unet, prompt = DeviceProbe(), masked([3.0], [[True, False]])  # embeddings on the CPU, as the text encoder gives
    out = guided_model_fn(unet, prompt, prompt, guidance_scale)(torch.zeros(1, 1, 2, 2, device="meta"), torch.tensor(3))
    assert unet.seen == [("meta", "meta", "meta")] and out.device.type == "meta"


def test_model_fn_splits_an_odd_batch_into_its_halves():
    # 2B = 6 rows: the first 3 unconditional, the last 3 conditional (chunk(2), whatever B)
    unet = RowEcho()
    model_fn = guided_model_fn(unet, text([3.0, 10.0, 0.0]), text([1.0, 4.0, 2.0]), guidance_scale=2.0)
    out = model_fn(torch.zeros(3, 1, 2, 2), torch.tensor(5))
    assert unet.calls == [6] and out[:, 0, 0, 0].tolist() == [5.0, 16.0, -2.0]
