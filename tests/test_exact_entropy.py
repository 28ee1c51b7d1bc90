"""The entropy model's parameters in exact arithmetic (entropy/exact.py): the same scales and
means whatever the order of the sums, so files decode the same on every kernel and device."""

import pytest
import torch
import torch.nn.functional as F

from resulic.config import CompressorConfig
from resulic.entropy import exact
from resulic.entropy.exact import ExactConv, ExactGELU, ExactNetwork, from_grid, to_grid
from resulic.models.compressor import LatentCompressor
from resulic.models.kernels import native_kernels

CONV2D = F.conv2d  # the real one, before any test patches it
SMALL = dict(latent_channels=32, channels=64, latent_dim=96, groups=[8, 8, 16, 16, 48], channel_context=[64, 64])


def reordered_conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d summed another way: input channels in reversed chunks of 5, each in float64 —
    what a different kernel, thread split or device does to the order of a sum."""
    chunks = list(zip(x.split(5, dim=1), weight.split(5, dim=1)))[::-1]
    out = sum(CONV2D(xc, wc, None, stride, padding, dilation) for xc, wc in chunks)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def test_an_exact_convolution_sums_the_same_in_any_order(monkeypatch):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(48, 32, 5, padding=2)
    x = torch.randn(1, 48, 12, 16) * 4
    layer = ExactConv(conv)
    units = to_grid(x)
    first = layer(units)
    monkeypatch.setattr(exact.F, "conv2d", reordered_conv2d)
    assert torch.equal(layer(units), first)  # bit for bit
    with torch.no_grad():
        assert float((from_grid(first) - conv(x).double()).abs().max()) < 4e-3  # and near the float layer
    # The float layer itself is not order-proof: the same reordering moves its float32 result.
    with torch.no_grad():
        assert not torch.equal(reordered_conv2d(x, conv.weight, conv.bias, padding=2), CONV2D(x, conv.weight, conv.bias, padding=2))


def test_exact_gelu_follows_gelu_on_the_grid():
    x = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    units = to_grid(x)
    out = from_grid(ExactGELU()(units))
    assert float((out - F.gelu(from_grid(units))).abs().max()) < 2e-3
    assert torch.equal(out, torch.round(out * 1024) / 1024)  # on the grid


def test_a_network_with_anything_but_convolutions_and_gelu_is_refused():
    with pytest.raises(ValueError, match="no exact form"):
        ExactNetwork(torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.Tanh()))


def _compressor(exact_parameters: bool) -> LatentCompressor:
    torch.manual_seed(3)
    c = LatentCompressor(CompressorConfig(**SMALL, exact_entropy_parameters=exact_parameters)).eval()
    c.update(force=True)
    return c


def _latents(count: int):
    g = torch.Generator().manual_seed(11)
    for _ in range(count):
        z = F.interpolate(torch.randn(1, 32, 8, 12, generator=g), scale_factor=4, mode="bilinear") * 2
        yield z + 0.3 * torch.randn(z.shape, generator=g)


def test_files_decode_to_the_same_symbols_under_other_kernels_threads_and_sum_orders(monkeypatch):
    c = _compressor(True)
    threads = torch.get_num_threads()
    files = []
    with native_kernels():  # encoder: native kernels, one thread
        torch.set_num_threads(1)
        for z in _latents(6):
            out = c.compress(z)
            files.append((out.data, c.decode_symbols(out.data, (32, 48))))
    try:
        torch.set_num_threads(2)
        for data, y_hat in files:  # decoder: two threads, and sums in another order
            assert torch.equal(c.decode_symbols(data, (32, 48)), y_hat)
        monkeypatch.setattr(exact.F, "conv2d", reordered_conv2d)
        for data, y_hat in files:
            assert torch.equal(c.decode_symbols(data, (32, 48)), y_hat)
    finally:
        torch.set_num_threads(threads)


def test_the_float_path_is_what_the_exact_one_protects_against(monkeypatch):
    # Without exact parameters, the same reordering changes the decoder's means: ŷ differs
    # (and, near a scale-table boundary, the coding table would).
    c = _compressor(False)
    z = next(_latents(1))
    out = c.compress(z)
    before = c.decode_symbols(out.data, (32, 48))
    monkeypatch.setattr(torch.nn.functional, "conv2d", reordered_conv2d)
    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward",
                        lambda self, x, w, b: reordered_conv2d(x, w, b, self.stride, self.padding, self.dilation))
    assert not torch.equal(c.decode_symbols(out.data, (32, 48)), before)


def test_exact_parameters_cost_almost_no_rate_and_stay_out_of_training():
    float_c, exact_c = _compressor(False), _compressor(True)
    exact_c.load_state_dict(float_c.state_dict())
    exact_c.update(force=True)
    sizes = [(len(float_c.compress(z).data), len(exact_c.compress(z).data)) for z in _latents(4)]
    assert abs(sum(b for _, b in sizes) / sum(a for a, _ in sizes) - 1) < 0.02
    exact_c.train()  # training runs the float networks: same outputs, gradients flow
    h_s = exact_c.entropy_parameter_networks()[0]
    x = torch.randn(1, 64, 2, 3)
    assert torch.equal(h_s(x), float_c.entropy_parameter_networks()[0].train()(x))
    assert "exact_entropy_parameters" not in CompressorConfig(**SMALL).model_dump()  # older fingerprints unchanged
    assert CompressorConfig(**SMALL, exact_entropy_parameters=True).model_dump()["exact_entropy_parameters"]


def test_eval_mode_forward_runs_and_parameters_come_back_as_exact_float32():
    c = _compressor(True)
    z = next(_latents(1))
    with torch.no_grad():
        out = c(z)  # eval mode: the exact networks, then g_s on float32
        params = c.entropy_parameter_networks()[0](torch.randn(1, 64, 2, 3))
    assert out["z_c"].dtype == torch.float32 and params.dtype == torch.float32
    assert torch.equal(params.double() * 1024, torch.round(params.double() * 1024))  # on the grid, exactly
