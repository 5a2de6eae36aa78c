"""The convolution of our UNets: nn.Conv2d, run in CPU inference on a channels-last copy of its weight made at `eval()`.

Why: on the shipped 32x32 UNets, nn.Conv2d on contiguous (NCHW) weights makes a forward 10-20% slower than on
channels-last ones (PyTorch's documented memory format for fast CPU convolutions): oneDNN reorders an NCHW
weight on every call, and at batch 1 on small maps PyTorch takes a slow NCHW kernel. With the weight
channels-last the same `F.conv2d` takes the channels-last kernels, and the activations after the first
convolution stay channels-last through the norms, activations and reshapes. The copy is made outside
`forward` (in `eval()`), so training, saving and every caller see the parameters as they are.

Measured against the alternatives (README "Performance"): oneDNN's packed-weight ops
(`torch.ops.mkldnn._convolution_pointwise`, private and unversioned, used here before) ran no faster, and
torch.compile (with freezing or not) compiles for minutes per input shape on a small CPU, which the app's
start-up cannot pay.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


class InferenceWeight(NamedTuple):
    """A conv weight copied for CPU inference, and what it was copied from; replaced whole, never changed."""

    source: torch.Tensor  # the weight's data then (held: its address cannot pass to another tensor)
    version: int  # the weight's version counter then (every in-place update bumps it)
    weight: torch.Tensor  # the copy, channels-last


class Conv2d(nn.Conv2d):
    """nn.Conv2d that, in CPU float32 inference, convolves with a channels-last copy of its weight made by `pack`.

    `pack` copies the weight: `eval()` does, and so do `.to()`, `load_state_dict` and copies in eval mode;
    `train()` drops the copy. `forward` only reads it, and takes it while it holds: no autograd or autocast, a
    float32 CPU input, and a weight unchanged since (same data, same version: an in-place update, such as an
    EMA step on an eval-mode model, makes it stale until the next `eval()`). Otherwise it is nn.Conv2d on the
    weight itself: the same function, summed in a different order.

    Thread safety: `forward` writes nothing. It reads `_inference_weight` once, an immutable
    `InferenceWeight` that `pack` and `unpack` replace whole, so a call running while another thread
    packs uses one consistent copy.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._inference_weight: InferenceWeight | None = None

    def pack(self) -> None:
        """Copy the weight channels-last for CPU float32 inference (on other devices and dtypes: unpack)."""
        weight = self.weight
        if weight.device.type != "cpu" or weight.dtype != torch.float32 or self.padding_mode != "zeros":
            self._inference_weight = None
            return
        with torch.no_grad():
            copy = weight.detach().clone(memory_format=torch.channels_last)
        self._inference_weight = InferenceWeight(weight.detach(), weight._version, copy)

    def unpack(self) -> None:
        """Drop the copy: every call is nn.Conv2d's until the next `pack`."""
        self._inference_weight = None

    def is_packed(self) -> bool:
        """Whether the copy holds for the current weight (forward then takes it in float32 CPU inference)."""
        return self._holds(self._inference_weight)

    def _holds(self, packed: InferenceWeight | None) -> bool:
        weight = self.weight
        return (
            packed is not None and packed.version == weight._version and packed.source.data_ptr() == weight.data_ptr()
        )

    def _refresh(self) -> None:
        """Eval mode: copy the weight unless the copy holds; train mode: no copy."""
        if self.training:
            self.unpack()
        elif not self.is_packed():
            self.pack()

    # everything that sets the mode or the weight, outside forward, refreshes the copy

    def train(self, mode: bool = True) -> "Conv2d":
        super().train(mode)
        self._refresh()
        return self

    def _apply(self, fn, *args, **kwargs):
        self._inference_weight = None  # .to(device / dtype) gives the weight new data
        result = super()._apply(fn, *args, **kwargs)
        self._refresh()
        return result

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh()

    def __getstate__(self):
        # copies (deepcopy, pickle) travel without a second copy of the weight, and make their own on arrival
        return {**self.__dict__, "_inference_weight": None}

    def __setstate__(self, state):
        super().__setstate__(state)
        self._refresh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self._inference_weight  # read once: a concurrent `pack` replaces it, never changes it
        if not (self._inference_call(x) and self._holds(packed)):
            return super().forward(x)
        return F.conv2d(x, packed.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    @staticmethod
    def _inference_call(x: torch.Tensor) -> bool:
        """Float32 CPU inference: no autograd, no autocast, not under torch.compile."""
        return (
            not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")  # autocast asks for bf16 convolutions: nn.Conv2d honours it
            and not torch.compiler.is_compiling()  # (the compiler chooses its own layouts)
        )


class _CountConvolutions(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.counts = {"copy": 0, "parameter": 0}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            self.counts["parameter" if isinstance(weight, nn.Parameter) else "copy"] += 1
        return func(*args, **kwargs)


def convolution_paths(fn) -> dict[str, int]:
    """How many convolutions `fn()` ran on a channels-last inference copy ("copy") and on the weight itself ("parameter")."""
    with _CountConvolutions() as mode:
        fn()
    return mode.counts
