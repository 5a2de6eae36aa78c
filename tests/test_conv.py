"""The UNets' convolution: its channels-last inference copy computes nn.Conv2d's function, is used exactly where it should be, and is thread-safe.

Every test asserts which weight each convolution ran on (`convolution_paths`): the inference copy or the
parameter itself, so no test passes without knowing which path it exercised.
"""

import copy
import threading

import pytest
import torch
import torch.nn.functional as F
from txt2img_fixtures import TINY_UNET

from txt2img.unet import TextUNet, TextUNetConfig
from uncond.conv import Conv2d, convolution_paths
from uncond.unet import UNet, UNetConfig


def paths(fn) -> dict[str, int]:
    """The path counts of one call of `fn()` in inference mode."""
    with torch.inference_mode():
        return convolution_paths(fn)


def one(path: str) -> dict[str, int]:
    return {"copy": int(path == "copy"), "parameter": int(path == "parameter")}


def everywhere(path: str, n: int) -> dict[str, int]:
    return {"copy": n if path == "copy" else 0, "parameter": n if path == "parameter" else 0}


@pytest.mark.parametrize(
    "batch, in_channels, out_channels, kernel, stride, padding, size",
    [
        (1, 3, 8, 3, 1, 1, 16),
        (4, 16, 16, 3, 2, 1, 8),
        (2, 16, 8, 1, 1, 0, 8),
        (3, 8, 8, 3, 2, 0, 9),
        (1, 32, 32, 3, 1, 1, 4),
        (16, 32, 64, 1, 1, 0, 4),
    ],
)
def test_the_inference_copy_computes_what_nn_conv2d_computes(
    batch, in_channels, out_channels, kernel, stride, padding, size
):
    torch.manual_seed(0)
    conv = Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding).eval()
    assert conv.is_packed() and conv._inference_weight.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(batch, in_channels, size, size)
    out = []
    assert paths(lambda: out.append(conv(x))) == one("copy")
    torch.testing.assert_close(out[0], F.conv2d(x, conv.weight, conv.bias, stride, padding), atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        assert torch.equal(conv(x), out[0])


def check(conv: Conv2d, x: torch.Tensor, path: str, grad: bool = False) -> torch.Tensor:
    """Run `conv(x)`, assert it took `path` and computed F.conv2d of the current weight; return the output."""
    out = []
    with torch.set_grad_enabled(grad):
        assert convolution_paths(lambda: out.append(conv(x))) == one(path)
        expected = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)
    return out[0]


def test_the_copy_is_used_only_while_it_holds():
    torch.manual_seed(0)
    conv = Conv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 6, 6)
    check(conv, x, "parameter")  # train mode: no copy
    conv.eval()
    check(conv, x, "copy")
    with torch.no_grad():
        conv.weight.mul_(2.0)  # an in-place update, as an EMA step on an eval-mode model makes
    assert not conv.is_packed()
    check(conv, x, "parameter")  # stale: the weight itself, until the next eval()
    conv.eval()
    check(conv, x, "copy")
    conv.weight.data = torch.randn(4, 4, 3, 3)  # new data under the same parameter
    check(conv, x, "parameter")
    conv.load_state_dict({"weight": torch.randn(4, 4, 3, 3), "bias": torch.randn(4)})  # copies the new weight
    check(conv, x, "copy")
    conv.unpack()
    check(conv, x, "parameter")
    conv.pack()
    check(conv, x, "copy")
    conv.train()
    assert conv._inference_weight is None
    check(conv, x, "parameter")


def test_autograd_autocast_and_other_dtypes_take_the_parameter():
    torch.manual_seed(0)
    conv = Conv2d(4, 8, 3, padding=1).eval()
    x = torch.randn(2, 4, 8, 8)
    check(conv, x, "parameter", grad=True).sum().backward()  # autograd on: gradients reach the parameter
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert paths(lambda: conv(x)) == one("parameter")
        assert conv(x).dtype == torch.bfloat16  # bf16 as autocast asks
    check(conv, x, "copy")
    conv.double()  # no copy in float64
    assert conv._inference_weight is None
    check(conv, x.double(), "parameter")
    conv.float()  # back to float32 in eval mode: copied again
    check(conv, x, "copy")


def test_copies_of_a_conv_make_their_own_inference_copy():
    conv = Conv2d(4, 4, 3, padding=1).eval()
    x = torch.randn(1, 4, 6, 6)
    twin = copy.deepcopy(conv)
    assert twin.is_packed() and twin._inference_weight.weight.data_ptr() != conv._inference_weight.weight.data_ptr()
    torch.testing.assert_close(check(twin, x, "copy"), check(conv, x, "copy"))
    trained = copy.deepcopy(conv.train())
    assert trained._inference_weight is None


# ---- the UNets: every convolution takes the copy in eval mode ----


UNETS = {
    "uncond": lambda: UNet(
        UNetConfig(
            sample_size=16,
            block_out_channels=(8, 16, 16),
            layers_per_block=2,
            attention_resolutions=(8,),
            norm_num_groups=4,
            attention_head_dim=4,
        )
    ),
    "uncond, TF padding, 4 levels": lambda: UNet(
        UNetConfig(
            sample_size=32,
            block_out_channels=(8, 8, 16, 16),
            layers_per_block=1,
            attention_resolutions=(4,),
            norm_num_groups=4,
            attention_head_dim=4,
            downsample_padding=0,
        )
    ),
    "uncond, one level": lambda: UNet(
        UNetConfig(
            sample_size=8, block_out_channels=(8,), attention_resolutions=(8,), norm_num_groups=4, attention_head_dim=4
        )
    ),
    "txt2img": lambda: TextUNet(TextUNetConfig(**TINY_UNET)),
}


def unet_inputs(model, batch: int = 2) -> tuple:
    config = model.config
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, config.in_channels, config.sample_size, config.sample_size, generator=generator)
    t = torch.tensor([3, 700] * batch)[:batch]
    if isinstance(model, TextUNet):
        text = torch.randn(batch, 5, config.cross_attention_dim, generator=generator)
        return x, t, text, torch.ones(batch, 5, dtype=torch.bool)
    return x, t


def convs(model) -> list[Conv2d]:
    return [m for m in model.modules() if isinstance(m, Conv2d)]


@pytest.mark.parametrize("name", list(UNETS))
def test_eval_mode_runs_every_convolution_on_its_copy(name):
    torch.manual_seed(0)
    model = UNETS[name]()
    inputs = unet_inputs(model)
    n = len(convs(model))
    with torch.no_grad():
        assert convolution_paths(lambda: model(*inputs)) == everywhere("parameter", n)  # train mode
        expected = model(*inputs)  # (dropout is 0: the same function)
    model.eval()
    out = []
    assert paths(lambda: out.append(model(*inputs))) == everywhere("copy", n)
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)
    assert out[0].is_contiguous()  # the UNet hands back NCHW, whatever layout its convolutions chose
    model.train()
    assert all(conv._inference_weight is None for conv in convs(model))


def test_the_pipeline_ways_of_getting_a_model_all_copy():
    torch.manual_seed(0)
    model = UNETS["uncond"]().eval()
    inputs = unet_inputs(model)
    n = len(convs(model))
    with torch.inference_mode():
        expected = model(*inputs)
    model.to("cpu")
    assert paths(lambda: model(*inputs)) == everywhere("copy", n)
    out = []
    twin = copy.deepcopy(model)  # as EMA models are made
    assert paths(lambda: out.append(twin(*inputs))) == everywhere("copy", n)
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)
    model.load_state_dict({k: v * 1.01 for k, v in model.state_dict().items()})
    out = []
    assert paths(lambda: out.append(model(*inputs))) == everywhere("copy", n)
    assert (out[0] - expected).abs().max() > 1e-3  # the new weights, not the old copies


# ---- thread safety: forward writes nothing; forwards racing repacks agree with single-threaded ones ----


def module_state(model) -> dict:
    """Every module's attributes, parameters and buffers, as (name -> object) maps, to compare by identity."""
    return {name: ({**vars(m)}, {**m._parameters}, {**m._buffers}) for name, m in model.named_modules()}


def test_forward_writes_no_attribute():
    torch.manual_seed(0)
    for name in ("uncond", "txt2img"):
        model = UNETS[name]().eval()
        before = module_state(model)
        with torch.inference_mode():
            model(*unet_inputs(model, 1))
            model(*unet_inputs(model, 3))
        after = module_state(model)
        assert before.keys() == after.keys()
        for module in before:
            for old, new in zip(before[module], after[module]):
                assert old.keys() == new.keys() and all(old[k] is new[k] for k in old), module


def test_concurrent_forwards_racing_repacks_compute_what_one_thread_does():
    torch.manual_seed(0)
    model = UNETS["txt2img"]().eval()
    batches = (1, 2, 3)
    inputs = {b: unet_inputs(model, b) for b in batches}
    with torch.inference_mode():
        expected = {b: model(*inputs[b]) for b in batches}
    done, errors, worst = threading.Event(), [], {}

    def forwards(batch):
        try:
            with torch.inference_mode():
                worst[batch] = max(float((model(*inputs[batch]) - expected[batch]).abs().max()) for _ in range(15))
        except Exception as error:  # reported below, with the thread's batch
            errors.append((batch, error))

    def repacks():  # what eval() does after a weight change, here over and over while the forwards run
        while not done.is_set():
            for conv in convs(model):
                conv.pack()

    workers = [threading.Thread(target=forwards, args=(b,)) for b in batches]
    repacker = threading.Thread(target=repacks)
    repacker.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    repacker.join()
    assert not errors
    assert all(worst[b] <= 1e-5 for b in batches), worst
    assert paths(lambda: model(*inputs[1])) == everywhere("copy", len(convs(model)))
