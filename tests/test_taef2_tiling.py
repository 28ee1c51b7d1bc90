"""TAEF2 in tiles (bounded memory for large pictures) gives what the whole picture gives: the
tiles overlap by the receptive field of the local convolutions, and the blocks whose GroupNorm
sees the whole picture run whole at the latent resolution."""

import pytest
import torch

from resulic.errors import ConfigError
from resulic.models import taef2


@pytest.fixture(scope="module")
def autoencoder():
    return taef2.TinyAutoencoder.from_folder().eval()


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(taef2, "TILE", 16)  # 128-px tiles: many seams on a small picture


def test_tiled_decode_equals_whole(autoencoder, small_tiles):
    torch.manual_seed(0)
    latents = torch.randn(1, 32, 37, 53) * 1.5  # not a multiple of the tile: partial edge tiles
    with torch.inference_mode():
        whole = autoencoder.decode(latents, tiled=False)
        tiled = autoencoder.decode(latents, tiled=True)
    assert tiled.shape == whole.shape == (1, 3, 37 * 8, 53 * 8)
    assert (tiled - whole).abs().max() < 1e-4


def test_tiled_encode_equals_whole(autoencoder, small_tiles):
    torch.manual_seed(1)
    # smooth content with edges, so every layer is exercised with structure, not only noise
    yy, xx = torch.meshgrid(torch.linspace(0, 6, 296), torch.linspace(0, 9, 424), indexing="ij")
    image = torch.stack([(yy.sin() + 1) / 2, (xx.cos() + 1) / 2, ((yy + xx) % 1.0)])[None]
    with torch.inference_mode():
        whole = autoencoder.encode(image, tiled=False)
        tiled = autoencoder.encode(image, tiled=True)
    assert tiled.shape == whole.shape == (1, 32, 37, 53)
    assert (tiled - whole).abs().max() < 1e-4


def test_a_halo_too_small_would_show(autoencoder, small_tiles, monkeypatch):
    """The check above can fail: with too little overlap the seams differ."""
    monkeypatch.setattr(taef2, "DECODER_HALO", 2)
    torch.manual_seed(0)
    latents = torch.randn(1, 32, 37, 53) * 1.5
    with torch.inference_mode():
        diff = (autoencoder.decode(latents, tiled=True) - autoencoder.decode(latents, tiled=False)).abs().max()
    assert diff > 1e-3



def test_bf16_precision_is_opt_in_close_to_fp32_and_never_used_for_gradients(autoencoder, monkeypatch):
    """RESULIC_TAEF2_PRECISION=bf16: the same pictures within a few grey levels (bench_taef2.py
    measures the speed); a pass that needs gradients (training's pixel loss) stays in fp32."""
    assert autoencoder.precision == "fp32"  # the default
    monkeypatch.setenv(taef2.PRECISION_ENV, "bf16")
    fast = taef2.TinyAutoencoder.from_folder().eval()
    assert fast.precision == "bf16"
    torch.manual_seed(2)
    latents = torch.randn(1, 32, 16, 24)
    with torch.inference_mode():
        exact, quick = autoencoder.decode(latents), fast.decode(latents)
    assert quick.dtype == torch.float32 and quick.shape == exact.shape
    difference = (quick.clamp(0, 1) - exact.clamp(0, 1)).abs()
    assert 0 < difference.max() < 0.1 and difference.mean() < 0.01  # bf16 ran, and stayed close
    with torch.enable_grad():
        trained = latents.clone().requires_grad_(True)
        out = fast.decode(trained)
        out.mean().backward()
    assert trained.grad is not None and torch.allclose(out.detach(), exact, atol=1e-4)
    monkeypatch.setenv(taef2.PRECISION_ENV, "fp16")
    with pytest.raises(ConfigError, match="RESULIC_TAEF2_PRECISION='fp16': one of fp32, bf16"):
        taef2.TinyAutoencoder.from_folder()
