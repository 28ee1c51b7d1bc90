"""Which CPU kernels run where: oneDNN by default, PyTorch's native kernels for the entropy
model and for the layers oneDNN computes wrongly.

- **oneDNN is on** in every process: TAEF2 runs 2-3x faster on it than on the native kernels
  (docs/benchmarks.md "CPU convolutions"). ``RESULIC_ONEDNN=0`` turns it off for the whole
  process, ``RESULIC_ONEDNN=1`` forces it on; the two rules below hold either way.
- **The entropy-model path is always native** (:func:`native_kernels` around the compressor's
  ``compress``, ``decompress``, ``decode_symbols``, ``estimate_bits`` and ``update``): the
  hyperprior computes the scales and means that choose the coding tables, and an encoder and a
  decoder that computed them with different kernel families could choose different tables. The
  native kernels were every process's only kernels until this module, so files made before it
  decode exactly as before. oneDNN reaches beyond convolutions (GELU runs on oneDNN's eltwise
  kernel for contiguous float inputs), so the whole path runs with oneDNN off rather than some
  layers pinned. That path is a small part of a decode (< 0.3 s at 768x512).
- **oneDNN's 1x1 strided backward-weights bug** (oneDNN v3.12 in torch 2.14.1; upstream
  uxlfoundation/oneDNN#6035): the ``jit_1x1`` backward-weights kernel of a 1x1 convolution with
  stride > 1, no padding, a channels-last input and fewer input channels than its SIMD block
  (8 floats on AVX2, 16 on AVX-512) first copies the strided input into a per-thread workspace
  of ``spatial x IC`` floats, at an offset computed as ``spatial x block``: past the workspace.
  Heap corruption follows (``free(): invalid next size``, SIGABRT or SIGSEGV, sometimes in a
  later op), or with several threads wrong weight gradients. Forward and input gradients use
  other kernels and are fine. :func:`guard` pins every layer of that shape to the native
  kernels (forward and backward); ``TrainableCodec`` applies it to everything it trains.
  ``benchmarks/repro_onednn.py`` reproduces the bug with torch alone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._prims_common import suggest_memory_format

ENV = "RESULIC_ONEDNN"
# The widest SIMD block of the x86 jit_1x1 kernels (AVX-512: 16 floats; AVX2: 8).
WIDEST_IC_BLOCK = 16


def configure() -> bool:
    """Apply ``RESULIC_ONEDNN`` to this process: "0" turns oneDNN off, unset or "1" leaves it
    on. Returns whether oneDNN is on."""
    value = os.environ.get(ENV)
    if value not in (None, "", "0", "1"):
        raise ValueError(f"{ENV}={value!r}: use 0 (native kernels) or 1 (oneDNN)")
    torch.backends.mkldnn.enabled = value != "0"
    return torch.backends.mkldnn.enabled


# -- the entropy-model path: native kernels ----------------------------------------------------
_lock = threading.Lock()
_depth = 0
_saved = True


@contextlib.contextmanager
def native_kernels():
    """oneDNN off while the block runs. The switch is process-wide, so nested and concurrent
    blocks share one count: it goes back to what it was when the last block ends, and no block
    ever sees oneDNN turned on under it by another. Meanwhile other threads of the process also
    run native kernels (slower, never wrong)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = torch.backends.mkldnn.enabled
            torch.backends.mkldnn.enabled = False
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                torch.backends.mkldnn.enabled = _saved


def on_native_kernels(fn):
    """Decorator: run ``fn`` inside :func:`native_kernels`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with native_kernels():
            return fn(*args, **kwargs)

    return wrapper


# -- layers oneDNN computes wrongly: pinned to the native kernels -------------------------------
def _native_conv(module: nn.Conv2d, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """What ``F.conv2d`` computes on a CPU with oneDNN off: the same kernel (ATen's Slow2d, or
    SlowDilated2d) on operands in the same memory format (``thnn_conv_use_channels_last``),
    hence the same bits, and for an undilated layer the same native backward
    (``_slow_conv2d_backward``)."""
    if x.dim() == 3:  # unbatched, as nn.Conv2d accepts
        return _native_conv(module, x.unsqueeze(0), weight, bias).squeeze(0)
    if torch.is_autocast_enabled("cpu"):
        # autocast casts the operands of aten.convolution, not of the kernels called here: do
        # what it would (a convolution runs in the autocast dtype).
        dtype = torch.get_autocast_dtype("cpu")
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    channels_last = torch.channels_last in (suggest_memory_format(x), suggest_memory_format(weight))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding = (0, 0)
    else:
        padding = module.padding
    x, weight = x.contiguous(memory_format=fmt), weight.contiguous(memory_format=fmt)
    if tuple(module.dilation) != (1, 1):
        return torch._C._nn.slow_conv_dilated2d(x, weight, module.kernel_size, bias, module.stride, padding,
                                                module.dilation)
    return torch._C._nn.thnn_conv2d(x, weight, module.kernel_size, bias, module.stride, padding)


class _NativeConv:
    """Mixin: a ``Conv2d`` (or subclass) whose CPU convolution is the native kernel."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if not x.is_cpu:
            return super()._conv_forward(x, weight, bias)
        return _native_conv(self, x, weight, bias)


class NativeConv2d(_NativeConv, nn.Conv2d):
    """``nn.Conv2d`` on the native CPU kernels."""


def _native_class(cls: type) -> type:
    """The pinned twin of a ``Conv2d`` class, made once per class and reachable by name in this
    module, so that a pinned model deep-copies and pickles like any other."""
    if issubclass(cls, _NativeConv):
        return cls
    name = "Native" + cls.__name__
    twin = globals().get(name)
    if twin is None or twin.__mro__[2] is not cls:
        twin = type(name, (_NativeConv, cls), {"__module__": __name__, "__qualname__": name,
                                               "__doc__": f"{cls.__name__} on the native CPU kernels."})
        globals()[name] = twin
    return twin


def pin_module(module: nn.Conv2d) -> None:
    """Run this convolution on PyTorch's native CPU kernels, forward and backward, whatever the
    process-wide switch says (on other devices it runs as before). Its parameters, state dict
    and outputs are unchanged."""
    if isinstance(module, nn.ConvTranspose2d) or not isinstance(module, nn.Conv2d) or module.groups != 1 \
            or isinstance(module.padding, str):
        raise ValueError(f"cannot pin {type(module).__name__} (groups={getattr(module, 'groups', None)}, "
                         f"padding={getattr(module, 'padding', None)!r}) to the native kernels")
    module.__class__ = _native_class(type(module))


def hits_onednn_rtus_bug(module: nn.Module) -> bool:
    """A layer whose weight gradient oneDNN's jit_1x1 backward-weights kernel corrupts memory for
    (module docstring): a 1x1 convolution, stride > 1, no padding, one group, fewer input
    channels than the widest SIMD block. Whether its input will be channels-last is only known
    at run time, so every such layer counts."""
    return (
        isinstance(module, nn.Conv2d) and not isinstance(module, nn.ConvTranspose2d)
        and tuple(module.kernel_size) == (1, 1) and tuple(module.stride) != (1, 1)
        and not isinstance(module.padding, str) and tuple(module.padding) == (0, 0)
        and module.groups == 1 and module.in_channels < WIDEST_IC_BLOCK
    )


def guard(model: nn.Module) -> list[str]:
    """Pin the layers of ``model`` that oneDNN's backward-weights bug hits to the native
    kernels; returns their names."""
    names = []
    for name, m in model.named_modules():
        if hits_onednn_rtus_bug(m):
            pin_module(m)
            names.append(name)
    return names
