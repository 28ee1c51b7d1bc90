"""The ELIC-style latent compressor: real rANS bits on CompressAI's entropy models."""

import pytest
import torch

from resulic.config import CompressorConfig
from resulic.models.compressor import LatentCompressor


@pytest.fixture(scope="module")
def compressor():
    torch.manual_seed(0)
    c = LatentCompressor(CompressorConfig()).eval()
    c.update(force=True)
    return c


def test_forward_gives_likelihoods_and_z_c(compressor):
    z0 = torch.randn(2, 4, 32, 48)
    compressor.train()
    try:
        out = compressor(z0)
    finally:
        compressor.eval()
    assert out["z_c"].shape == z0.shape
    assert out["likelihoods"]["y"].shape == (2, 48, 8, 12)
    assert out["likelihoods"]["z"].shape == (2, 32, 2, 3)
    loss = sum(torch.log2(v).sum() for v in out["likelihoods"].values()) + out["z_c"].sum()
    loss.backward()  # trainable end to end
    assert compressor.g_a[0].skip.weight.grad is not None
    assert compressor.aux_loss().item() >= 0


def test_compress_decompress_is_bit_exact_in_one_stream(compressor):
    calls = []
    orig = compressor.stream.encode_with_indexes

    def spy(*args):
        calls.append(1)
        return orig(*args)

    compressor.stream.encode_with_indexes = spy
    try:
        z0 = torch.randn(1, 4, 32, 64) * 2
        coded = compressor.compress(z0)
    finally:
        del compressor.stream.encode_with_indexes
    assert isinstance(coded.data, bytes)
    # 5 groups x 2 checkerboard halves + z: CompressAI would write 11 strings; we write one
    assert len(calls) == 2 * len(compressor.groups) + 1
    z_c = compressor.decompress(coded.data, (32, 64))
    assert torch.equal(z_c, coded.z_c)
    assert torch.equal(compressor.decompress(coded.data, (32, 64)), z_c)


def test_estimate_and_real_rate_agree(compressor):
    """Tolerance: the file's latent bytes are within 10 % + 16 bytes of the -log2 estimate.

    (The untrained tiny model puts many symbols in the coder's tails, where the 16-bit CDFs and
    the likelihood floor disagree most; benchmarks/bench_codec.py reports the gap per image.)
    """
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        z0 = torch.randn(1, 4, 48, 64, generator=g)
        coded = compressor.compress(z0)
        est_bytes = coded.estimated_bits / 8
        assert abs(len(coded.data) - est_bytes) <= 0.10 * est_bytes + 16


def test_latent_size_must_fit_the_stride(compressor):
    with pytest.raises(ValueError, match="divisible by 16"):
        compressor.compress(torch.randn(1, 4, 24, 32))


def test_groups_must_sum_to_latent_dim():
    from resulic.errors import ConfigError
    from resulic.config import build_config

    with pytest.raises(ConfigError, match=r"x.yaml: groups: .*sum to 8, but latent_dim is 48"):
        build_config(CompressorConfig, {"groups": [4, 4]}, source="x.yaml")


def _correlated_latents(count: int, seed: int) -> list[torch.Tensor]:
    """Smooth random latents (neighbouring cells and channels correlated), like an autoencoder's."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(4, 4, generator=g)
    out = []
    for _ in range(count):
        z = torch.randn(1, 4, 8, 12, generator=g)
        z = torch.nn.functional.interpolate(z, scale_factor=4, mode="bilinear", align_corners=False)
        out.append(torch.einsum("dc,bchw->bdhw", mix, z) + 0.5)
    return out


def test_linear_path_starts_at_the_klt():
    # M = 64 = every value of a 4x4 patch of 4 channels: the KLT is then invertible, so the
    # untrained compressor's unquantised path reproduces z_0 exactly; with M = 16 it keeps the
    # 16 strongest components, which beat any other 16 (here: the first 16 of a random basis).
    latents = _correlated_latents(6, seed=1)
    full = LatentCompressor(CompressorConfig(latent_dim=64, groups=[8, 8, 16, 32], linear_transform=True))
    full.init_linear_transform(latents)
    z0 = _correlated_latents(1, seed=2)[0]
    with torch.no_grad():
        y = full.transform(z0)
        assert torch.allclose(full._synthesis(y, None), z0, atol=1e-4)
        assert torch.equal(full.g_a(z0), torch.zeros_like(y))  # the nonlinear branches start at zero

    part = LatentCompressor(CompressorConfig(latent_dim=16, groups=[4, 4, 8], linear_transform=True))
    part.init_linear_transform(latents)
    with torch.no_grad():
        klt_error = float(((part._synthesis(part.transform(z0), None) - z0) ** 2).mean())
        q, _ = torch.linalg.qr(torch.randn(64, 64, generator=torch.Generator().manual_seed(3)))
        part.linear_analysis.weight.copy_(q.T[:16].reshape(16, 4, 4, 4))
        part.linear_synthesis.weight.copy_(q.T[:16].reshape(16, 4, 4, 4))
        part.linear_analysis.bias.copy_(-(q.T[:16] @ torch.full((64,), 0.5)))
        random_error = float(((part._synthesis(part.transform(z0), None) - z0) ** 2).mean())
    assert klt_error < 0.5 * random_error


def test_linear_path_codes_real_bits_and_keeps_older_configs_unchanged():
    c = LatentCompressor(CompressorConfig(linear_transform=True))
    c.init_linear_transform(_correlated_latents(4, seed=4))
    c.eval()
    c.update(force=True)
    z0 = _correlated_latents(1, seed=5)[0]
    coded = c.compress(z0)
    assert torch.allclose(c.decompress(coded.data, tuple(z0.shape[-2:])), coded.z_c, atol=1e-5)
    assert "linear_transform" not in CompressorConfig().model_dump()  # older fingerprints unchanged
    assert CompressorConfig(linear_transform=True).model_dump()["linear_transform"] is True
    with pytest.raises(ValueError, match="no linear path"):
        LatentCompressor(CompressorConfig()).init_linear_transform([z0])


def test_the_synthesis_in_tiles_is_the_whole_pictures_and_its_halo_is_needed(monkeypatch):
    """Large latents synthesise z_c in tiles of y cells (bounded memory on the native kernels):
    with the 6-cell halo every tile gives what the whole map gives, up to the float rounding of
    other matrix sizes; with 3 cells, inside the transform's receptive radius, the seams show."""
    from resulic.models import compressor as module

    torch.manual_seed(0)
    model = LatentCompressor(CompressorConfig(linear_transform=True)).eval()
    with torch.no_grad():
        for layer in model.g_s.modules():  # unit-gain weights: the default start would hide g_s's far reach
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.normal_(layer.weight, std=(layer.in_channels * layer.kernel_size[0] ** 2) ** -0.5)
        y_hat = torch.randn(1, model.config.latent_dim, 28, 40) * 3
        whole = model._synthesis(y_hat, None, tile=None)
        tiled = model._synthesis(y_hat, None, tile=8)
        assert whole.shape == tiled.shape == (1, model.config.latent_channels, 112, 160)
        assert whole.abs().mean() > 1
        assert torch.allclose(whole, tiled, rtol=1e-5, atol=1e-4), (whole - tiled).abs().max()
        monkeypatch.setattr(module, "SYNTHESIS_HALO", 3)
        assert (whole - model._synthesis(y_hat, None, tile=8)).abs().max() > 1e-3


def test_large_latents_are_synthesised_in_tiles(monkeypatch):
    from resulic.models import compressor as module

    model = LatentCompressor(CompressorConfig()).eval()
    calls = []
    monkeypatch.setattr(module, "run_tiled", lambda fn, x, *args: calls.append(x.shape) or fn(x))
    with torch.no_grad():
        model._synthesis(torch.zeros(1, model.config.latent_dim, 32, 32), None)
        assert calls == []  # 128x128 latent cells: whole, as before
        model._synthesis(torch.zeros(1, model.config.latent_dim, 32, 36), None)
        assert len(calls) == 1
