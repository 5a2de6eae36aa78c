"""The UNets' convolution: the packed oneDNN path computes nn.Conv2d's function, runs exactly where it should, and is thread-safe.

Every test asserts which path ran (counted with torch.profiler): the packed one where this torch has the
oneDNN ops, else nn.Conv2d's, so no test passes without knowing which path it exercised.
"""

import copy
import threading

import pytest
import torch
import torch.nn.functional as F
from txt2img_fixtures import TINY_UNET

from txt2img.unet import TextUNet, TextUNetConfig
from uncond.conv import PACKED_CONV, Conv2d, convolution_paths
from uncond.unet import UNet, UNetConfig

FAST = "packed" if PACKED_CONV else "plain"  # the path a packed conv takes in float32 CPU inference on this build


def paths(fn) -> dict[str, int]:
    """The path counts of one call of `fn()` in inference mode."""
    with torch.inference_mode():
        return convolution_paths(fn)


def one(path: str) -> dict[str, int]:
    return {"packed": int(path == "packed"), "plain": int(path == "plain")}


def test_the_private_ops_are_there_wherever_onednn_is():
    # a torch that renames or drops the ops fails here instead of silently losing the fast path
    assert torch.backends.mkldnn.is_available() == PACKED_CONV


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
def test_packed_conv_computes_what_nn_conv2d_computes(batch, in_channels, out_channels, kernel, stride, padding, size):
    torch.manual_seed(0)
    conv = Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding)
    conv.pack((size, size))
    assert conv.is_packed((size, size)) == PACKED_CONV
    x = torch.randn(batch, in_channels, size, size)
    out = []
    assert paths(lambda: out.append(conv(x))) == one(FAST)
    expected = F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=padding)
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        assert torch.equal(conv(x), out[0])


def check(conv: Conv2d, x: torch.Tensor, path: str, grad: bool = False) -> torch.Tensor:
    """Run `conv(x)`, assert it took `path` and computed F.conv2d; return the output."""
    out = []
    with torch.set_grad_enabled(grad):
        assert convolution_paths(lambda: out.append(conv(x))) == one(path)
        expected = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)
    return out[0]


def test_a_pack_is_taken_only_while_it_holds():
    torch.manual_seed(0)
    conv = Conv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 6, 6)
    check(conv, x, "plain")  # never packed
    conv.pack((6, 6))
    check(conv, x, FAST)
    check(conv, torch.randn(2, 4, 5, 5), "plain")  # laid out for 6x6 maps, not 5x5
    with torch.no_grad():
        conv.weight.mul_(2.0)  # an in-place update, as an optimizer or an EMA makes
    assert not conv.is_packed((6, 6))
    check(conv, x, "plain")
    conv.pack((6, 6))
    check(conv, x, FAST)
    conv.load_state_dict({"weight": torch.randn(4, 4, 3, 3), "bias": torch.randn(4)})
    check(conv, x, "plain")
    conv.pack((6, 6))
    conv.weight.data = torch.randn(4, 4, 3, 3)  # new data under the same parameter
    check(conv, x, "plain")
    conv.pack((6, 6))
    check(conv, x, FAST)
    conv.unpack()
    check(conv, x, "plain")


def test_autograd_autocast_and_disabled_onednn_take_nn_conv2d():
    torch.manual_seed(0)
    conv = Conv2d(4, 8, 3, padding=1)
    conv.pack((8, 8))
    x = torch.randn(2, 4, 8, 8)
    check(conv, x, "plain", grad=True).sum().backward()  # autograd on: nn.Conv2d, gradients flow
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert paths(lambda: conv(x))["packed"] == 0  # (autocast shows aten::conv2d twice: its wrapper, then the op)
        assert conv(x).dtype == torch.bfloat16  # bf16 as autocast asks, not the float32 packed path
    torch.backends.mkldnn.enabled = False
    try:
        check(conv, x, "plain")
    finally:
        torch.backends.mkldnn.enabled = True
    check(conv, x, FAST)


def test_copies_and_casts_of_a_conv_start_unpacked():
    conv = Conv2d(4, 4, 3, padding=1)
    conv.pack((6, 6))
    x = torch.randn(1, 4, 6, 6)
    twin = copy.deepcopy(conv)  # oneDNN's layout cannot be copied
    assert not twin.is_packed((6, 6))
    torch.testing.assert_close(check(twin, x, "plain"), check(conv, x, FAST))
    conv.double()
    assert not conv.is_packed((6, 6))
    conv.pack((6, 6))  # float64: no oneDNN pack
    assert not conv.is_packed((6, 6))


# ---- the UNets pack their convolutions in eval mode, for the map sizes forward gives them ----

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
def test_the_unet_packs_every_conv_for_the_map_size_forward_gives_it(name):
    torch.manual_seed(0)
    model = UNETS[name]()  # packed as built: a model used without eval() under no_grad is fast too
    seen = {}
    hooks = [
        conv.register_forward_pre_hook(lambda m, a: seen.setdefault(m, tuple(a[0].shape[-2:])) and None)
        for conv in convs(model)
    ]
    inputs = unet_inputs(model)
    expected = model(*inputs).detach()  # autograd on: nn.Conv2d everywhere (dropout is 0)
    for hook in hooks:
        hook.remove()
    assert seen == model.conv_input_sizes() and len(seen) == len(convs(model))
    assert all(conv.is_packed(size) for conv, size in seen.items()) == PACKED_CONV
    model.eval()
    assert all(conv.is_packed(size) for conv, size in seen.items()) == PACKED_CONV
    out = []
    counts = paths(lambda: out.append(model(*inputs)))
    assert counts == ({"packed": len(seen), "plain": 0} if PACKED_CONV else {"packed": 0, "plain": len(seen)})
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)
    assert out[0].is_contiguous()


def test_in_place_updates_moves_copies_and_loads_repack_outside_forward():
    torch.manual_seed(0)
    model = UNETS["uncond"]().eval()
    inputs = unet_inputs(model)
    n = len(convs(model))
    packed_everywhere = {"packed": n, "plain": 0} if PACKED_CONV else {"packed": 0, "plain": n}
    with torch.inference_mode():
        expected = model(*inputs)
    model.train()
    assert paths(lambda: model(*inputs)) == packed_everywhere  # train mode, autograd off: still the packs
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.0)  # an optimizer or EMA step, in place: every pack goes stale
    assert paths(lambda: model(*inputs)) == {"packed": 0, "plain": n}
    model.eval()  # packs them again
    assert paths(lambda: model(*inputs)) == packed_everywhere
    model.double()  # no oneDNN pack in float64: nn.Conv2d
    assert paths(lambda: model(inputs[0].double(), inputs[1])) == {"packed": 0, "plain": n}
    model.float()  # back to float32: packed again
    assert paths(lambda: model(*inputs)) == packed_everywhere
    twin = copy.deepcopy(model)  # the copy packs its own weights
    out = []
    assert paths(lambda: out.append(twin(*inputs))) == packed_everywhere
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)
    model.load_state_dict({k: v * 1.01 for k, v in model.state_dict().items()})
    with torch.inference_mode():
        changed = model(*inputs)
    assert paths(lambda: model(*inputs)) == packed_everywhere  # load_state_dict packs the new weights
    assert (changed - expected).abs().max() > 1e-3


# ---- thread safety: forward writes nothing; forwards racing a repack agree with single-threaded ones ----


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
    sizes = model.conv_input_sizes()
    done, errors, worst = threading.Event(), [], {}

    def forwards(batch):
        try:
            with torch.inference_mode():
                worst[batch] = max(float((model(*inputs[batch]) - expected[batch]).abs().max()) for _ in range(15))
        except Exception as error:  # reported below, with the thread's batch
            errors.append((batch, error))

    def repacks():  # what eval() does after a weight change, here over and over while the forwards run
        while not done.is_set():
            for conv, size in sizes.items():
                conv.pack(size)

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
    assert paths(lambda: model(*inputs[1])) == (
        {"packed": len(sizes), "plain": 0} if PACKED_CONV else {"packed": 0, "plain": len(sizes)}
    )
