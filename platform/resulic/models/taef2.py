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

from pathlib import Path

import torch
from torch import Tensor, nn

LATENT_CHANNELS = 32
WIDTH = 64
POOL_WIDTH = 256
POOL_GROUPS = 4
# The bundled release: weights converted from the original .pth files to safetensors.
BUNDLED = Path(__file__).resolve().parent.parent / "weights" / "taef2"


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

    def encode(self, images: Tensor) -> Tensor:
        return self.encoder(images)

    def decode(self, latents: Tensor) -> Tensor:
        """Latents -> images in [0, 1] (not clamped, so pixel losses keep their gradients)."""
        return self.decoder(latents)

    @classmethod
    def from_folder(cls, folder: str | Path = BUNDLED) -> "TinyAutoencoder":
        """Load ``encoder.safetensors`` and ``decoder.safetensors`` (strict: every key must fit)."""
        from safetensors.torch import load_file

        model = cls()
        folder = Path(folder)
        model.encoder.load_state_dict(load_file(folder / "encoder.safetensors"), strict=True)
        model.decoder.load_state_dict(load_file(folder / "decoder.safetensors"), strict=True)
        return model

    @classmethod
    def from_original(cls, encoder_pth: str | Path, decoder_pth: str | Path) -> "TinyAutoencoder":
        """The published ``taef2_{encoder,decoder}.pth`` (plain state dicts; no pickled code)."""
        model = cls()
        model.encoder.load_state_dict(torch.load(encoder_pth, map_location="cpu", weights_only=True), strict=True)
        model.decoder.load_state_dict(torch.load(decoder_pth, map_location="cpu", weights_only=True), strict=True)
        return model
