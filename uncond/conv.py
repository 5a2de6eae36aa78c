"""The convolution of our UNets: nn.Conv2d, plus a oneDNN fast path for CPU float32 inference on a weight packed ahead.

Why private ops (`torch.ops.mkldnn._convolution_pointwise`, `_reorder_convolution_weight`): the supported routes
were measured side by side on the shipped 32x32 UNets (CPU seconds, one thread, ratios against diffusers'
UNets; README "Performance") and none keeps the speed. nn.Conv2d on NCHW weights is 10-20% slower (oneDNN
reorders the weight on every call; at batch 1 on small maps PyTorch takes a slow NCHW kernel). Channels-last
weights (a copy made at eval, plain F.conv2d) come close at batch 1 and 16 but lose 3-12% at batches 2-8, the
app's batches (below batch 16 PyTorch takes its own channels-last kernel, not oneDNN). torch.compile, with or
without freezing, compiles for one to two and a half minutes per input shape here, which the app's start-up
cannot pay. So this module keeps oneDNN's packed convolution, behind a check that the ops exist, packed outside
`forward` (by the UNet: when built, on `eval()`/`train()`, `.to()`, `load_state_dict` and copies), and falls back
to nn.Conv2d wherever the pack does not hold.
"""

from typing import NamedTuple

import torch
from torch import nn

# oneDNN's convolution on a weight laid out ahead of time: the kernel torch.compile's freezing emits on CPUs, here
# without the compile (minutes per input shape on a small CPU). Both ops are private and unversioned, so every use
# sits behind this check and falls back to nn.Conv2d; tests/test_conv.py asserts which path runs.
PACKED_CONV = (
    torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
)


class PackedWeight(NamedTuple):
    """A conv weight laid out for oneDNN, and what it was laid out from; replaced whole, never changed."""

    source: torch.Tensor  # the weight's data then (held: its address cannot pass to another tensor)
    version: int  # the weight's version counter then (every in-place update bumps it)
    input_size: tuple[int, int]  # the (H, W) of the inputs it was laid out for
    weight: torch.Tensor  # the weight in oneDNN's blocked layout (an mkldnn tensor)


class Conv2d(nn.Conv2d):
    """nn.Conv2d that, in CPU float32 inference, runs oneDNN on a weight laid out once, at `pack`, not on every call.

    nn.Conv2d reorders the weight into oneDNN's blocked layout on every call (or, at batch 1 on small maps,
    falls back to a slower im2col kernel); for a 32x32 UNet that is a large share of a sampling step. `pack`
    (the UNet calls it outside forward) lays the weight out for one input size; `forward` only reads that pack
    and takes it when it still holds: no autograd or autocast, a float32 CPU input of that size, and a weight
    unchanged since (same data, same version). Otherwise, and until the next `pack`, it is nn.Conv2d. The
    output of the packed path comes back channels-last, which the norms, activations and reshapes after it keep.

    Thread safety: `forward` writes nothing. It reads `_packed` once, an immutable `PackedWeight` that `pack`
    and `unpack` replace whole, so a call running while another thread repacks uses one consistent pack.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._packed: PackedWeight | None = None

    def _conv_args(self) -> tuple:
        return list(self.padding), list(self.stride), list(self.dilation), self.groups

    def pack(self, input_size: tuple[int, int]) -> None:
        """Lay the weight out for inputs of spatial size `input_size` (H, W), where oneDNN can run it; else unpack."""
        weight = self.weight
        if not (
            PACKED_CONV
            and weight.device.type == "cpu"
            and weight.dtype == torch.float32
            and self.padding_mode == "zeros"
        ):
            self._packed = None
            return
        with torch.no_grad():  # the batch does not change the layout oneDNN picks; the map size can
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                weight, *self._conv_args(), [1, self.in_channels, *input_size]
            )
        self._packed = PackedWeight(weight.detach(), weight._version, tuple(input_size), packed)

    def unpack(self) -> None:
        """Drop the packed weight: every call is nn.Conv2d's until the next `pack`."""
        self._packed = None

    def is_packed(self, input_size: tuple[int, int]) -> bool:
        """Whether the pack holds for the current weight and inputs of spatial size `input_size` (H, W)."""
        return self._pack_holds(self._packed, tuple(input_size))

    def _pack_holds(self, packed: PackedWeight | None, input_size: tuple[int, int]) -> bool:
        weight = self.weight
        return (
            packed is not None
            and packed.input_size == input_size
            and packed.version == weight._version
            and packed.source.data_ptr() == weight.data_ptr()
        )

    def _apply(self, fn, *args, **kwargs):
        self._packed = None  # .to(device / dtype) gives the weight new data; the UNet packs again in eval mode
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        # copies (deepcopy, pickle) start unpacked: oneDNN's layout cannot be copied (the UNet packs its copy again)
        return {**self.__dict__, "_packed": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed  # read once: a concurrent `pack` replaces it, never changes it
        if not (self._inference_call(x) and self._pack_holds(packed, tuple(x.shape[-2:]))):
            return super().forward(x)
        return torch.ops.mkldnn._convolution_pointwise(x, packed.weight, self.bias, *self._conv_args(), "none", [], "")

    @staticmethod
    def _inference_call(x: torch.Tensor) -> bool:
        """Float32 CPU inference: no autograd, no autocast, not under torch.compile, oneDNN not switched off."""
        return (
            torch.backends.mkldnn.enabled
            and not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and not torch.is_autocast_enabled("cpu")  # autocast asks for bf16 convolutions: nn.Conv2d honours it
            and not torch.compiler.is_compiling()  # (the compiler emits its own oneDNN kernels)
        )


# the operators each path shows in torch.profiler: oneDNN on the packed weight, or nn.Conv2d's
PACKED_OP, PLAIN_OP = "mkldnn::_convolution_pointwise", "aten::conv2d"


def convolution_paths(fn) -> dict[str, int]:
    """How many convolutions one call of `fn()` ran on each path, {"packed": n, "plain": m}, read from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        fn()
    counts = {event.key: event.count for event in profiler.key_averages()}
    return {"packed": counts.get(PACKED_OP, 0), "plain": counts.get(PLAIN_OP, 0)}
