"""The entropy model's parameters in exact arithmetic: the same scales and means on every machine.

An encoder and a decoder must choose the same coding table (from the scale) and the same
mean for every symbol, or the decoder desynchronises and the rest of the file decodes to
garbage. Both are computed by small networks (the hyper-synthesis ``h_s``, the channel and
checkerboard context models, the parameter aggregation) from values both sides share (ẑ and
the ŷ decoded so far). In floating point their results depend on the order of each sum, so on
kernels, thread counts and devices. Here they do not, by construction (after Ballé, Johnston
and Minnen, "Integer networks for data compression", ICLR 2019):

- every activation is a multiple of 2^-FRACTION_BITS, clamped to +-ACTIVATION_LIMIT;
- every weight is an integer times a power of two chosen per output channel (exponents come
  from ``torch.frexp``, itself exact), at most WEIGHT_BITS bits;
- a convolution then sums integers. Its largest partial sum (taps x weight x activation, checked
  when a layer is converted) stays below 2^53, so float64 holds every partial sum exactly and
  any order of summation — any kernel, thread count or device with IEEE float64 — gives the
  same integer; the rescale by a power of two is exact and the final rounding sees the same value;
- GELU is piecewise linear between knots every 1/16, the knots' values rounded to the grid
  (each checked to lie far from a rounding boundary, so every correct ``erf`` rounds them alike),
  the interpolation again in exact dyadic arithmetic.

Only the decoder-side networks are converted; the analysis transforms and ``h_a`` run on the
encoder alone and need no agreement. The cost: parameters that differ from the float ones by
about 1e-3, a negligible change in rate (docs/bitstream.md, "Determinism", measures it). No Ray, no MLflow.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FRACTION_BITS = 10  # activations on the grid 2^-10
ACTIVATION_LIMIT = 2.0**12  # |activation| clamp
WEIGHT_BITS = 15  # |integer weight| < 2^15
EXACT_SUM_LIMIT = 2.0**53  # float64 holds every integer below this exactly
GELU_KNOTS_PER_UNIT = 16
GELU_RANGE = 8  # knots on [-8, 8]; GELU is 0 below (to < 2^-10 · 1e-4) and x above
ROUNDING_MARGIN = 1e-6  # grid units: how far every knot must lie from a rounding boundary

_SCALE = 2.0**FRACTION_BITS


def to_grid(x: Tensor) -> Tensor:
    """``x`` as float64 integers in grid units (rounded, half to even, and clamped)."""
    limit = ACTIVATION_LIMIT * _SCALE
    return torch.round(x.double() * _SCALE).clamp_(-limit, limit)


def from_grid(units: Tensor) -> Tensor:
    return units * (1.0 / _SCALE)


class ExactConv(nn.Module):
    """A Conv2d or ConvTranspose2d with integer weights, computed exactly in float64."""

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError(f"{conv}: only plain zero-padded convolutions have an exact form here")
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        weight = conv.weight.detach().double()
        if hasattr(conv, "mask"):  # CompressAI's masked convolutions zero part of the kernel
            weight = weight * conv.mask.double()
        # Output channels are dim 0 of a Conv2d's weight and dim 1 of a ConvTranspose2d's.
        out_dim = 1 if self.transposed else 0
        per_out = weight.transpose(0, out_dim).flatten(1).abs().amax(1)
        _, exponent = torch.frexp(per_out)  # per_out = m · 2^exponent, m in [0.5, 1)
        shift = (WEIGHT_BITS - exponent).to(torch.float64)  # |w| · 2^shift < 2^15
        shift[per_out == 0] = 0
        shape = [1] * weight.dim()
        shape[out_dim] = -1
        integer = torch.round(weight * torch.exp2(shift).reshape(shape))
        taps = weight[0].numel() if not self.transposed else weight.shape[0] * weight.shape[2] * weight.shape[3]
        largest = taps * 2.0**WEIGHT_BITS * ACTIVATION_LIMIT * _SCALE
        if largest >= EXACT_SUM_LIMIT:
            raise ValueError(f"{conv}: {taps} taps could overflow float64's exact integers")
        self.register_buffer("weight", integer, persistent=False)
        self.register_buffer("unshift", torch.exp2(-shift).reshape(1, -1, 1, 1), persistent=False)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(per_out.numel())
        self.register_buffer("bias", torch.round(bias.double() * _SCALE).reshape(1, -1, 1, 1), persistent=False)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.output_padding = getattr(conv, "output_padding", 0)

    def forward(self, units: Tensor) -> Tensor:
        if self.transposed:
            acc = F.conv_transpose2d(units, self.weight, None, self.stride, self.padding, self.output_padding,
                                     1, self.dilation)
        else:
            acc = F.conv2d(units, self.weight, None, self.stride, self.padding, self.dilation)
        limit = ACTIVATION_LIMIT * _SCALE
        return (torch.round(acc * self.unshift) + self.bias).clamp_(-limit, limit)


@functools.lru_cache(maxsize=1)
def _gelu_knots() -> tuple[float, ...]:
    """GELU at every knot, in grid units; each value checked to round the same under any erf."""
    x = torch.arange(-GELU_RANGE * GELU_KNOTS_PER_UNIT, GELU_RANGE * GELU_KNOTS_PER_UNIT + 1,
                     dtype=torch.float64) / GELU_KNOTS_PER_UNIT
    exact = F.gelu(x) * _SCALE
    distance = ((exact - exact.floor()) - 0.5).abs()
    if float(distance.min()) < ROUNDING_MARGIN:
        raise RuntimeError("a GELU knot lies too near a rounding boundary to round alike everywhere")
    return tuple(torch.round(exact).tolist())


class ExactGELU(nn.Module):
    """GELU on grid units: linear between knots every 1/16, exact."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("knots", torch.tensor(_gelu_knots(), dtype=torch.float64), persistent=False)

    def forward(self, units: Tensor) -> Tensor:
        step = _SCALE / GELU_KNOTS_PER_UNIT  # grid units between knots (64)
        low = GELU_RANGE * _SCALE
        inside = units.clamp(-low, low - 1)
        index = torch.floor(inside / step)
        fraction = inside - index * step  # 0..63, exact
        k = (index + GELU_RANGE * GELU_KNOTS_PER_UNIT).long()
        left, right = self.knots[k], self.knots[k + 1]
        value = left + torch.round((right - left) * fraction / step)
        return torch.where(units >= low, units, torch.where(units < -low, torch.zeros_like(units), value))


class ExactNetwork(nn.Module):
    """A network of convolutions and GELUs, float in and float out, exact in between."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        layers = list(module) if isinstance(module, nn.Sequential) else [module]
        self.layers = nn.Sequential(*(_exact_layer(m) for m in layers))

    def forward(self, x: Tensor) -> Tensor:
        # Back in the input's dtype: a grid value (10 fraction bits, magnitude < 2^12) fits a
        # float32 significand exactly, so the cast loses nothing and the rest of the model
        # (CompressAI's quantisers, g_s) sees the dtype it was built for.
        return from_grid(self.layers(to_grid(x))).to(x.dtype)


def _exact_layer(m: nn.Module) -> nn.Module:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        return ExactConv(m)
    if isinstance(m, nn.GELU) and m.approximate == "none":
        return ExactGELU()
    raise ValueError(f"{type(m).__name__}: no exact form (convolutions and GELU only)")


def compute_exactly_when_evaluating(module: nn.Module) -> None:
    """Give ``module`` a forward that, in eval mode, runs its exact form (built from its
    current weights, rebuilt whenever a weight changed in place or moved); in training mode
    the float network runs as before, so gradients and the saved weights are untouched."""
    float_forward = module.forward
    cache: dict = {}

    def forward(x: Tensor) -> Tensor:
        if module.training:
            return float_forward(x)
        key = tuple((id(p), p._version, p.device) for p in module.parameters())
        if cache.get("key") != key:
            cache["key"], cache["network"] = key, ExactNetwork(module).to(x.device)
        return cache["network"](x)

    module.forward = forward
