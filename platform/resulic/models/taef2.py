"""TAEF2: the tiny autoencoder of the FLUX.2 latent space (Ollin Boer Bohan, MIT license).

The TAESD architecture — a conv stem, residual blocks of three 3x3 convs, strided convs down,
upsample + conv up, a tanh clamp on the decoder's input — plus one thing diffusers'
``AutoencoderTiny`` lacks: the three blocks at the lowest resolution first add a "pool" branch
(1x1 conv 64->256, GroupNorm(4, 256), ReLU, 1x1 conv 256->64) to their input. Without those
branches reconstructions fall from about 33 dB to 12 dB, which is why this is written out here
rather than borrowed from diffusers.

Images in [0, 1] <-> 32-channel latents at 1/8 resolution, unscaled (roughly within +-4). The
module names follow the original state dicts' keys (``0.weight``, ``11.pool.0.weight``, …), so
the published weights load unchanged. No Ray, no MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .tiling import bound_the_heap, run_tiled

LATENT_CHANNELS = 32
WIDTH = 64
POOL_WIDTH = 256
POOL_GROUPS = 4
# The bundled release: weights converted from the original .pth files to safetensors.
BUNDLED = Path(__file__).resolve().parent.parent / "weights" / "taef2"
# The precision of TAEF2's convolutions outside training (benchmarks/bench_taef2.py, 768x512,
# one thread of this Xeon): fp32 (the default) or bf16 — oneDNN's bfloat16 kernels, AMX tiles
# where the CPU has them, 3.5x faster than fp32 here; pictures ≈ 50 dB from fp32's (up to tens of
# grey levels at the worst pixel), +0.02 dB / -0.001 ST-LPIPS on Kodak. Opt-in, because a bf16
# decoder's pixels then differ from an fp32 decoder's by more than the one grey level kernels and
# threads may cost (docs/bitstream.md).
PRECISION_ENV = "RESULIC_TAEF2_PRECISION"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def precision_from_env() -> str:
    value = os.environ.get(PRECISION_ENV, "").strip().lower() or "fp32"
    if value not in PRECISIONS:
        raise ConfigError(f"{PRECISION_ENV}={value!r}: one of {', '.join(PRECISIONS)}")
    return value


def _conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of the decoder's input latents to about +-3."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Residual block of three 3x3 convs; ``pool`` adds TAEF2's group-norm branch first."""

    def __init__(self, width: int = WIDTH, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(width, width), nn.ReLU(), _conv(width, width), nn.ReLU(), _conv(width, width))
        self.skip = nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = (
            nn.Sequential(
                nn.Conv2d(width, POOL_WIDTH, 1, bias=False),
                nn.GroupNorm(POOL_GROUPS, POOL_WIDTH),
                nn.ReLU(),
                nn.Conv2d(POOL_WIDTH, width, 1, bias=False),
            )
            if pool
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def build_encoder(latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    """Image in [0, 1] -> latent at 1/8 resolution (indices match the published keys)."""
    down = lambda: _conv(WIDTH, WIDTH, stride=2, bias=False)  # noqa: E731
    return nn.Sequential(
        _conv(3, WIDTH), Block(),
        down(), Block(), Block(), Block(),
        down(), Block(), Block(), Block(),
        down(), Block(pool=True), Block(pool=True), Block(pool=True),
        _conv(WIDTH, latent_channels),
    )


def build_decoder(latent_channels: int = LATENT_CHANNELS) -> nn.Sequential:
    """Latent -> image, roughly in [0, 1] (the caller clamps)."""
    up = lambda: [nn.Upsample(scale_factor=2), _conv(WIDTH, WIDTH, bias=False)]  # noqa: E731
    return nn.Sequential(
        Clamp(), _conv(latent_channels, WIDTH), nn.ReLU(),
        Block(pool=True), Block(pool=True), Block(pool=True), *up(),
        Block(), Block(), Block(), *up(),
        Block(), Block(), Block(), *up(),
        Block(), _conv(WIDTH, 3),
    )


# Tiling (bounded memory for large images). Only the blocks with a pool branch see the whole
# picture (their GroupNorm statistics are global); they sit at the latent resolution, where a
# 4K photo is 480x270 cells. Everything at higher resolution is local 3x3 convolutions, so it
# runs in tiles that overlap by the receptive field and the stitched result equals the
# untiled one: no seams by construction (tests/test_taef2_tiling.py checks it).
DECODER_HALO = 10  # latent cells; the upsampling path's receptive radius is 9 cells
ENCODER_HALO = 72  # pixels; the downsampling path's receptive radius is 65 px (a multiple of 8)
# 64 cells (512 px) per tile side: with its halo a tile is about a 768x512 picture's work, so a
# 4K photo decodes in about a whole Kodak decode's working set (3840x2160, TAEF2's decoder alone,
# one thread: peak 1.65 GB at 96 cells, 1.41 GB at 64, time +17 % for the wider overlap:
# benchmarks/memory_peak.py taef2 --tile N; benchmarks/bench_memory.py for whole commands).
TILE = 64          # latent cells per tile side
TILE_ABOVE = 128 * 128  # latent cells: smaller pictures run whole (faster; they fit anyway)


def _pool_indices(modules: nn.Sequential) -> list[int]:
    return [i for i, m in enumerate(modules) if isinstance(m, Block) and m.pool is not None]


class TinyAutoencoder(nn.Module):
    """TAEF2's encoder and decoder with the two operations the codec needs.

    ``encode``/``decode`` speak the codec's language: images in [0, 1], latents unscaled
    (``scaling_factor`` is 1 for this latent space; the diffusion prior is trained on it as is).
    """

    scaling_factor = 1.0
    latent_channels = LATENT_CHANNELS

    def __init__(self) -> None:
        super().__init__()
        self.encoder = build_encoder()
        self.decoder = build_decoder()
        # The tiled paths' halves: the encoder's local layers end where its pool blocks begin,
        # the decoder's begin after its last pool block.
        self._encoder_split = _pool_indices(self.encoder)[0]
        self._decoder_split = _pool_indices(self.decoder)[-1] + 1
        self.precision = precision_from_env()
        # channels-last: oneDNN's convolutions run 1.2-1.3x faster on it than on NCHW here, with
        # pictures within one grey level (benchmarks/bench_taef2.py).
        self.to(memory_format=torch.channels_last)

    def _run(self, fn, x: Tensor) -> Tensor:
        """``fn`` on ``x`` in channels-last, in bfloat16 when so configured and no gradient is needed."""
        x = x.contiguous(memory_format=torch.channels_last)
        dtype = PRECISIONS[self.precision]
        if dtype is None or torch.is_grad_enabled():
            return fn(x)
        with torch.autocast(x.device.type, dtype=dtype):
            return fn(x).float()

    def encode(self, images: Tensor, tiled: bool | None = None) -> Tensor:
        """Images -> latents; ``tiled`` (default: for pictures over TILE_ABOVE latent cells, when
        no gradient is needed) bounds the memory and gives the same latents. Sizes that are not
        a multiple of 8 (the codec pads to 128) always run whole."""
        h, w = images.shape[-2:]
        if tiled is None:
            tiled = (h // 8) * (w // 8) > TILE_ABOVE and not torch.is_grad_enabled()
        if not tiled or h % 8 or w % 8:
            return self._run(self.encoder, images)
        layers, at = list(self.encoder), self._encoder_split
        features = run_tiled(lambda t: self._run(nn.Sequential(*layers[:at]), t), images, TILE * 8, ENCODER_HALO, 1 / 8, WIDTH)
        return self._run(nn.Sequential(*layers[at:]), features)

    def decode(self, latents: Tensor, tiled: bool | None = None) -> Tensor:
        """Latents -> images in [0, 1] (not clamped, so pixel losses keep their gradients);
        ``tiled`` as in ``encode``."""
        h, w = latents.shape[-2:]
        if tiled is None:
            tiled = h * w > TILE_ABOVE and not torch.is_grad_enabled()
        if not tiled:
            return self._run(self.decoder, latents)
        layers, at = list(self.decoder), self._decoder_split
        bound_the_heap()  # before the whole-picture part: the diffusion steps' freed blocks go back
        features = self._run(nn.Sequential(*layers[:at]), latents)
        return run_tiled(lambda t: self._run(nn.Sequential(*layers[at:]), t), features, TILE, DECODER_HALO, 8, 3)

    @classmethod
    def from_folder(cls, folder: str | Path = BUNDLED) -> "TinyAutoencoder":
        """Load ``encoder.safetensors`` and ``decoder.safetensors`` (strict: every key must fit)."""
        from safetensors.torch import load_file

        model = cls()
        folder = Path(folder)
        model.encoder.load_state_dict(load_file(folder / "encoder.safetensors"), strict=True)
        model.decoder.load_state_dict(load_file(folder / "decoder.safetensors"), strict=True)
        return model  # still channels-last: loading copies into the parameters in their layout

    @classmethod
    def from_original(cls, encoder_pth: str | Path, decoder_pth: str | Path) -> "TinyAutoencoder":
        """The published ``taef2_{encoder,decoder}.pth`` (plain state dicts; no pickled code)."""
        model = cls()
        model.encoder.load_state_dict(torch.load(encoder_pth, map_location="cpu", weights_only=True), strict=True)
        model.decoder.load_state_dict(torch.load(decoder_pth, map_location="cpu", weights_only=True), strict=True)
        return model
