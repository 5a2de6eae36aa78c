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
