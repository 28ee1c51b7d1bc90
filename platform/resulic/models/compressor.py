"""The ELIC-style compressor of the SD latent (RESULIC.md §2), built on CompressAI.

z_0 (4 x H/8 x W/8) --g_a--> y (M x H/32 x W/32) --h_a--> z (N x H/128 x W/128).
y is coded with a hyperprior and a space-channel context model: uneven channel groups, each
split into checkerboard anchors and non-anchors (``HyperpriorLatentCodec`` >
``ChannelGroupsLatentCodec`` > ``CheckerboardLatentCodec`` > ``GaussianConditionalLatentCodec``).
All entropy coding goes into one rANS stream (see ``rans_stream``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..config import CompressorConfig, ModelConfig
from ..entropy.compressai_parts import (
    ChannelGroupsLatentCodec,
    CheckerboardLatentCodec,
    CheckerboardMaskedConv2d,
    EntropyBottleneck,
    EntropyModel,
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
    conv,
    deconv,
)
from ..entropy.exact import compute_exactly_when_evaluating
from .kernels import on_native_kernels
from .tiling import run_tiled
from ..entropy.rans_stream import SharedRansStream

# exp(linspace(ln 0.11, ln 256, 64)), as in ELIC and the official compressor.
SCALE_TABLE = torch.exp(torch.linspace(math.log(0.11), math.log(256), 64)).tolist()
ANCHOR_PARITY = "odd"  # anchors where (row + col) is odd (RESULIC.md §2)
# A variable-rate compressor's gain vectors (log domain), trained with a learning rate of their own.
GAIN_PARAMETERS = ("log_gain", "log_inverse_gain")
# The analysis and synthesis transforms (everything that is not the entropy model or a gain).
TRANSFORM_MODULES = ("g_a", "g_s", "linear_analysis", "linear_synthesis")
SYNTHESIS_MODULES = ("g_s", "linear_synthesis")  # ŷ -> z_c: the decoder side, which no bit depends on
LINEAR_MODULES = ("linear_analysis", "linear_synthesis")  # the KLT-started path (compressor.linear_transform)
PATCH = 4  # latent cells per side of one y cell (g_a's two stride-2 stages)
# The synthesis runs in tiles of y cells above TAEF2's tiling size (128x128 latent cells): on the
# native kernels every convolution unfolds its whole input, which made g_s a 4K decode's peak
# (2.1 GB; benchmarks/memory_peak.py decompress). Its receptive radius is 4 y cells (measured:
# a 3-cell halo leaves seams, 4 does not), so a 6-cell halo gives every tile the whole picture's
# output, up to the float rounding of other matrix sizes (tests/test_compressor.py); z_c is
# the decoder's, no bit depends on it.
SYNTHESIS_TILE = 32  # y cells per tile side (128 latent cells)
SYNTHESIS_HALO = 6
SYNTHESIS_TILE_ABOVE = 32 * 32  # y cells: smaller latents run whole


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class ResidualBlockWithStride(nn.Module):
    """conv3x3/s2, LeakyReLU, conv3x3, LeakyReLU(0.1); skip conv1x1/s2."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(cin, cout, 2), nn.LeakyReLU(inplace=True), conv3x3(cout, cout), nn.LeakyReLU(0.1, inplace=True)
        )
        self.skip = nn.Conv2d(cin, cout, 1, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class ResidualBlockUpsample(nn.Module):
    """sub-pixel x2, LeakyReLU, conv3x3, LeakyReLU(0.1); skip sub-pixel x2."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout * 4, 1), nn.PixelShuffle(2), nn.LeakyReLU(inplace=True),
            conv3x3(cout, cout), nn.LeakyReLU(0.1, inplace=True),
        )
        self.skip = nn.Sequential(nn.Conv2d(cin, cout * 4, 1), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class ResidualBottleneck(nn.Module):
    """x + [1x1 C->C/2, GELU, 3x3, GELU, 1x1 C/2->C]."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        mid = max(ch // 2, 1)
        self.body = nn.Sequential(nn.Conv2d(ch, mid, 1), nn.GELU(), conv3x3(mid, mid), nn.GELU(), nn.Conv2d(mid, ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _param_aggregation(cin: int, cout: int) -> nn.Sequential:
    """1x1-conv MLP with widths in -> 5/3 out -> 4/3 out -> out (ELIC's parameter aggregation)."""
    a, b = cout * 5 // 3, cout * 4 // 3
    return nn.Sequential(nn.Conv2d(cin, a, 1), nn.GELU(), nn.Conv2d(a, b, 1), nn.GELU(), nn.Conv2d(b, cout, 1))


@dataclass
class CompressedLatent:
    data: bytes  # the single rANS stream (z, then y group by group, anchors before non-anchors)
    estimated_bits: float  # -log2 likelihood of the coded symbols under the same model
    synthesize: Callable[[], Tensor] = field(repr=False)  # z_c from the coded symbols, as the decoder does it
    _z_c: Tensor | None = field(default=None, init=False, repr=False)

    @property
    def z_c(self) -> Tensor:
        """The decoder's reconstruction of the latent, computed exactly as it will be — on first
        use: an encode that needs no picture of it (no srr, no pfo) never runs the synthesis,
        whose native convolutions' unfolded inputs were a 4K encode's peak memory."""
        if self._z_c is None:
            self._z_c = self.synthesize()
        return self._z_c


class LatentCompressor(nn.Module):
    def __init__(self, config: CompressorConfig) -> None:
        super().__init__()
        C, N, M, groups = config.latent_channels, config.channels, config.latent_dim, list(config.groups)
        cc1, cc2 = config.channel_context
        self.config = config
        self.groups = groups
        self.g_a = nn.Sequential(
            ResidualBlockWithStride(C, N), *[ResidualBottleneck(N) for _ in range(3)],
            ResidualBlockWithStride(N, N), *[ResidualBottleneck(N) for _ in range(3)],
            conv3x3(N, M),
        )
        self.g_s = nn.Sequential(
            ResidualBlockUpsample(M, N), *[ResidualBottleneck(N) for _ in range(3)],
            ResidualBlockUpsample(N, N), *[ResidualBottleneck(N) for _ in range(3)],
            conv3x3(N, C),
        )
        h_a = nn.Sequential(conv3x3(M, N), nn.GELU(), conv(N, N, 5, 2), nn.GELU(), conv(N, N, 5, 2))
        h_s = nn.Sequential(
            deconv(N, M, 5, 2), nn.GELU(), deconv(M, M * 3 // 2, 5, 2), nn.GELU(), deconv(M * 3 // 2, 2 * M, 3, 1)
        )
        channel_context = {
            f"y{k}": nn.Sequential(
                conv(sum(groups[:k]), cc1, 5, 1), nn.GELU(), conv(cc1, cc2, 5, 1), nn.GELU(),
                conv(cc2, 2 * groups[k], 5, 1),
            )
            for k in range(1, len(groups))
        }
        group_codecs = {
            f"y{k}": CheckerboardLatentCodec(
                latent_codec={"y": GaussianConditionalLatentCodec(scale_table=SCALE_TABLE, quantizer="ste")},
                context_prediction=CheckerboardMaskedConv2d(g, 2 * g, kernel_size=5, stride=1, padding=2),
                entropy_parameters=_param_aggregation(2 * g + (k > 0) * 2 * g + 2 * M, 2 * g),
                anchor_parity=ANCHOR_PARITY,
            )
            for k, g in enumerate(groups)
        }
        if config.linear_transform:
            # y = g_a(z_0) + A z_0 and z_c = g_s(ŷ) + S ŷ, with A and S 4x4-patch maps that
            # init_linear_transform starts from the latents' KLT. The nonlinear branches start
            # at zero (their last layers) and learn what the linear map misses.
            self.linear_analysis = nn.Conv2d(C, M, PATCH, stride=PATCH)
            self.linear_synthesis = nn.ConvTranspose2d(M, C, PATCH, stride=PATCH)
            for last in (self.g_a[-1], self.g_s[-1]):
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
        self.latent_codec = HyperpriorLatentCodec(
            latent_codec={
                "y": ChannelGroupsLatentCodec(groups=groups, channel_context=channel_context, latent_codec=group_codecs),
                "hyper": HyperLatentCodec(entropy_bottleneck=EntropyBottleneck(N), h_a=h_a, h_s=h_s, quantizer="ste"),
            }
        )
        if config.exact_entropy_parameters:
            # The networks both sides run to find each symbol's scale and mean compute exactly
            # in eval mode, so every machine picks the same coding tables (entropy/exact.py).
            for network in self.entropy_parameter_networks():
                compute_exactly_when_evaluating(network)
        # Variable rate (Cui et al.'s gain units, RESULIC.md has none): y is scaled channel-wise
        # by a gain before coding and ŷ by an inverse gain after, both interpolated between
        # anchors in the log domain, so one model spans the rates its anchors were trained at.
        if config.gain_anchors:
            self.log_gain = nn.Parameter(torch.zeros(config.gain_anchors, config.latent_dim))
            self.log_inverse_gain = nn.Parameter(torch.zeros(config.gain_anchors, config.latent_dim))
        self.stream = SharedRansStream()
        self.stream.attach(self)
        self._apply_context_masks()

    def entropy_parameter_networks(self) -> list[nn.Module]:
        """The networks the decoder runs to find each symbol's scale and mean: h_s, the
        channel-context models, and each group's checkerboard context and parameter aggregation."""
        hyper, groups = self.latent_codec.latent_codec["hyper"], self.latent_codec.latent_codec["y"]
        networks = [hyper.h_s, *groups.channel_context.values()]
        for k in range(len(self.groups)):
            checkerboard = groups.latent_codec[f"y{k}"]
            networks += [checkerboard.context_prediction, checkerboard.entropy_parameters]
        return networks

    @property
    def variable_rate(self) -> bool:
        return self.config.gain_anchors > 0

    def gains(self, position: Tensor | float | None, batch: int = 1) -> tuple[Tensor, Tensor] | None:
        """(gain, inverse gain), (B, M, 1, 1), at ``position`` along the anchors (0..anchors-1;
        one per sample, or one for all); None for a fixed-rate compressor."""
        if not self.variable_rate:
            if position is not None:
                raise ValueError("a rate level was given, but this compressor has a fixed rate")
            return None
        if position is None:
            raise ValueError("this compressor has a variable rate: give a rate level")
        pos = torch.as_tensor(position, dtype=self.log_gain.dtype, device=self.log_gain.device).reshape(-1)
        pos = pos.expand(batch) if pos.numel() == 1 else pos
        k = pos.floor().clamp(0, self.config.gain_anchors - 2).long()
        f = (pos - k).unsqueeze(1)

        def interpolate(table: Tensor) -> Tensor:
            return torch.exp((1 - f) * table[k] + f * table[k + 1])[:, :, None, None]

        return interpolate(self.log_gain), interpolate(self.log_inverse_gain)

    @torch.no_grad()
    def init_gains(self, lambda_rates: list[float], reference: float | None = None) -> None:
        """Start the anchors' gains from a fixed-rate model trained at λ_R = ``reference``
        (default: the anchors' geometric mean): gain_k = sqrt(reference / λ_k), so that a
        lower λ_k (more bits) quantises y more finely, and the inverse gains undo them."""
        lambdas = torch.tensor(lambda_rates, dtype=torch.float64)
        ref = math.log(reference) if reference is not None else float(lambdas.log().mean())
        log_gain = (0.5 * (ref - lambdas.log())).to(self.log_gain.dtype)
        self.log_gain.copy_(log_gain[:, None].expand_as(self.log_gain))
        self.log_inverse_gain.copy_(-self.log_gain)

    @torch.no_grad()
    def init_linear_transform(self, latents: Iterable[Tensor], max_patches: int = 4096, seed: int = 0) -> None:
        """Start the linear path from the KLT of ``latents`` ((1, C, h, w) each, h and w
        multiples of 4): A projects a 4x4 patch, less the per-channel mean, onto its M
        principal components (largest first, so the first channel groups, which the later ones
        are predicted from, hold the most energy) and S maps them back. Up to ``max_patches``
        patches per latent, drawn with ``seed``; the covariance is accumulated in float64."""
        if not self.config.linear_transform:
            raise ValueError("this compressor has no linear path (compressor.linear_transform is false)")
        C, M = self.config.latent_channels, self.config.latent_dim
        dims = C * PATCH * PATCH
        if M > dims:
            raise ValueError(f"latent_dim {M} exceeds the {dims} values of a {PATCH}x{PATCH} patch")
        rng = torch.Generator().manual_seed(seed)
        channel_sum, cells = torch.zeros(C, dtype=torch.float64), 0
        second, count = torch.zeros(dims, dims, dtype=torch.float64), 0
        sampled = []
        for z in latents:
            z = z.detach().to("cpu", torch.float64)[0]
            h, w = (z.shape[-2] // PATCH) * PATCH, (z.shape[-1] // PATCH) * PATCH
            z = z[:, :h, :w]
            channel_sum += z.sum((1, 2))
            cells += h * w
            patches = z.reshape(C, h // PATCH, PATCH, w // PATCH, PATCH).permute(1, 3, 0, 2, 4).reshape(-1, dims)
            if patches.shape[0] > max_patches:
                patches = patches[torch.randperm(patches.shape[0], generator=rng)[:max_patches]]
            sampled.append(patches)
        if not cells:
            raise ValueError("init_linear_transform needs at least one latent")
        mean = (channel_sum / cells).repeat_interleave(PATCH * PATCH)  # patch layout: (C, 4, 4)
        for patches in sampled:
            centred = patches - mean
            second += centred.T @ centred
            count += centred.shape[0]
        eigenvalues, vectors = torch.linalg.eigh(second / count)
        basis = vectors[:, eigenvalues.argsort(descending=True)[:M]].T  # (M, dims), orthonormal rows
        weight = basis.reshape(M, C, PATCH, PATCH)
        self.linear_analysis.weight.copy_(weight)
        self.linear_analysis.bias.copy_(-(basis @ mean))
        self.linear_synthesis.weight.copy_(weight)  # ConvTranspose2d weights are (in = M, out = C, k, k)
        self.linear_synthesis.bias.copy_(mean.reshape(C, -1)[:, 0])

    def transform(self, z0: Tensor) -> Tensor:
        """y before any gain: g_a(z_0), plus the linear path's projection when there is one."""
        y = self.g_a(z0)
        return y + self.linear_analysis(z0) if self.config.linear_transform else y

    def _analysis(self, z0: Tensor, position) -> tuple[Tensor, Tensor | None]:
        y = self.transform(z0)
        gains = self.gains(position, y.shape[0])
        return (y, None) if gains is None else (y * gains[0], gains[1])

    def _synthesis(self, y_hat: Tensor, inverse_gain: Tensor | None, tile: int | None = None) -> Tensor:
        y_hat = y_hat if inverse_gain is None else y_hat * inverse_gain
        if tile is None and y_hat.shape[-2] * y_hat.shape[-1] > SYNTHESIS_TILE_ABOVE and not torch.is_grad_enabled():
            tile = SYNTHESIS_TILE
        if tile is not None:
            return run_tiled(self._synthesize, y_hat, tile, SYNTHESIS_HALO, PATCH, self.config.latent_channels)
        return self._synthesize(y_hat)

    def _synthesize(self, y_hat: Tensor) -> Tensor:
        z_c = self.g_s(y_hat)
        return z_c + self.linear_synthesis(y_hat) if self.config.linear_transform else z_c

    @torch.no_grad()
    def _apply_context_masks(self) -> None:
        # CompressAI's masked convs zero their masked weights in place on every forward. Do it
        # once here so the state (and the model fingerprint) never changes after construction.
        for m in self.modules():
            if isinstance(m, CheckerboardMaskedConv2d):
                m.weight.mul_(m.mask)

    # -- training ---------------------------------------------------------------------------
    def forward(self, z0: Tensor, position: Tensor | float | None = None) -> dict:
        """Training pass: z_c and the likelihoods of y and z (noise proxy in train mode).
        ``position``: a variable-rate compressor's place along its anchors, per sample."""
        y, inverse_gain = self._analysis(z0, position)
        out = self.latent_codec(y)
        return {"z_c": self._synthesis(out["y_hat"], inverse_gain), "likelihoods": out["likelihoods"]}

    def aux_loss(self) -> Tensor:
        return sum(m.loss() for m in self.modules() if isinstance(m, EntropyBottleneck))

    @on_native_kernels  # the entropy model: one kernel family everywhere (models/kernels.py)
    def update(self, force: bool = True) -> None:
        """Build the integer CDF tables the coder uses (call before compress/decompress)."""
        for m in self.modules():
            if isinstance(m, EntropyBottleneck):
                m.update(force=force)
            elif isinstance(m, EntropyModel) and hasattr(m, "update_scale_table"):
                m.update_scale_table(SCALE_TABLE, force=force)

    # -- real bits ----------------------------------------------------------------------------
    @staticmethod
    def shapes(latent_hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        h, w = latent_hw
        if h % 16 or w % 16:
            raise ValueError(f"latent size {latent_hw} must be divisible by 16 (pad images to 128 px)")
        return (h // 4, w // 4), (h // 16, w // 16)

    @on_native_kernels
    @torch.no_grad()
    def estimate_bits(self, z0: Tensor | None = None, y: Tensor | None = None, position: float | None = None) -> float:
        """-log2 likelihood of the symbols compress() codes (eval mode: rounding, not noise).

        Pass ``y`` (gain applied) when it is already computed, to skip g_a.
        """
        was_training = self.training
        self.eval()
        try:
            out = self.latent_codec(self._analysis(z0, position)[0] if y is None else y)
        finally:
            self.train(was_training)
        return float(sum((-torch.log2(lk)).sum() for lk in out["likelihoods"].values()))

    @on_native_kernels
    @torch.no_grad()
    def compress(self, z0: Tensor, position: float | None = None, y: Tensor | None = None) -> CompressedLatent:
        """Code one latent (at ``position`` along the anchors, for a variable-rate compressor).
        ``y``: transform(z0) when the caller has it (a rate search codes one latent many times)."""
        if z0.shape[0] != 1:
            raise ValueError("compress codes one latent at a time")
        self.shapes(tuple(z0.shape[-2:]))
        y = self.transform(z0) if y is None else y
        gains = self.gains(position)
        y, inverse_gain = (y, None) if gains is None else (y * gains[0], gains[1])
        with self.stream.encoding() as result:
            out = self.latent_codec.compress(y)
        return CompressedLatent(result.data, self.estimate_bits(y=y),
                                functools.partial(self._exact_synthesis, out["y_hat"], inverse_gain))

    @on_native_kernels
    @torch.no_grad()
    def _exact_synthesis(self, y_hat: Tensor, inverse_gain: Tensor | None) -> Tensor:
        return self._synthesis(y_hat, inverse_gain)

    @on_native_kernels
    @torch.no_grad()
    def decompress(self, data: bytes, latent_hw: tuple[int, int], position: float | None = None) -> Tensor:
        gains = self.gains(position)
        return self._synthesis(self.decode_symbols(data, latent_hw), None if gains is None else gains[1])

    @on_native_kernels
    @torch.no_grad()
    def decode_symbols(self, data: bytes, latent_hw: tuple[int, int]) -> Tensor:
        """The entropy-decoded ŷ (symbols + predicted means). Two devices decoded the same
        symbols exactly when their ŷ differ by less than 0.5 everywhere (the cross-device check)."""
        (yh, yw), (zh, zw) = self.shapes(latent_hw)
        n_groups = len(self.groups)
        placeholders = [[None]] * (2 * n_groups + 1)  # 2 checkerboard halves per group, then z
        shape = {"y": [(g, yh, yw) for g in self.groups], "hyper": (zh, zw)}
        with self.stream.decoding(data):
            out = self.latent_codec.decompress(placeholders, shape)
        return out["y_hat"]


class TieredCompressor(nn.Module):
    """Two trained compressors behind one rate level (``rate_point.low_tier``): ``low`` codes the
    model's lowest levels, ``main`` the rest. Each call takes the level's ``Route`` (which tier,
    and where along that tier's own anchors) instead of a position; the bits are the chosen
    compressor's own, so its part of the model codes exactly as the model it came from."""

    def __init__(self, main: LatentCompressor, low: LatentCompressor) -> None:
        super().__init__()
        self.main = main
        self.low = low

    variable_rate = True

    def tier(self, route) -> LatentCompressor:
        return self.low if route.tier == "low" else self.main

    def update(self, force: bool = True) -> None:
        self.main.update(force)
        self.low.update(force)

    def aux_loss(self) -> Tensor:
        return self.main.aux_loss() + self.low.aux_loss()

    def compress(self, z0: Tensor, position, y: Tensor | None = None) -> CompressedLatent:
        return self.tier(position).compress(z0, position.position, y)

    def decompress(self, data: bytes, latent_hw: tuple[int, int], position) -> Tensor:
        return self.tier(position).decompress(data, latent_hw, position.position)


def compressor_for(config: ModelConfig) -> LatentCompressor | TieredCompressor:
    """An untrained compressor of ``config``'s shape (weights to be loaded): one, or two tiers."""
    main = LatentCompressor(config.compressor)
    tier = config.rate_point.low_tier
    return main if tier is None else TieredCompressor(main, LatentCompressor(tier.compressor))


def build_compressor(config: ModelConfig) -> LatentCompressor | TieredCompressor:
    """A fresh compressor for ``config``, seeded (every machine builds the same); a
    variable-rate one with its gains spread over its anchors' λ_R."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.compressor.seed)
        compressor = compressor_for(config)
    if config.rate_point.variable is not None:
        main = compressor.main if isinstance(compressor, TieredCompressor) else compressor
        main.init_gains(config.rate_point.variable.lambda_rates)
    if isinstance(compressor, TieredCompressor):
        compressor.low.init_gains(config.rate_point.low_tier.variable.lambda_rates)
    return compressor
