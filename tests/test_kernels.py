"""CPU kernels (resulic/models/kernels.py): oneDNN on, the entropy-model path on the native
kernels whatever the switch says, and the layers oneDNN's 1x1 backward-weights bug hits kept
off it."""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from compressai.layers import CheckerboardMaskedConv2d
from torch import nn

from resulic.config import ModelConfig
from resulic.models import kernels
from resulic.models.compressor import LatentCompressor

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _onednn(enabled: bool):
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def _layers():
    torch.manual_seed(0)
    return [
        nn.Conv2d(4, 32, 1, stride=2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.Conv2d(8, 16, 5, stride=2, padding=2),
        nn.Conv2d(8, 16, 3, padding=1, padding_mode="replicate"),
        nn.Conv2d(8, 16, 3, padding=2, dilation=2),
        CheckerboardMaskedConv2d(8, 16, kernel_size=5, padding=2),
    ]


@pytest.mark.parametrize("channels_last", [False, True])
def test_pinned_layers_compute_what_native_kernels_compute(channels_last):
    """With oneDNN on in the process, a pinned layer's output is the native kernels' bit for bit;
    so are both gradients of an undilated one (ATen differentiates the dilated kernel through
    the process-wide path)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for layer in _layers():
        pinned = copy.deepcopy(layer)
        kernels.pin_module(pinned)
        assert type(pinned).__name__ == "Native" + type(layer).__name__ and isinstance(pinned, type(layer))
        x = torch.randn(2, layer.in_channels, 16, 16).to(memory_format=fmt)
        results = []
        for module, onednn in ((layer, False), (pinned, True)):
            xi = x.clone().requires_grad_(True)
            with _onednn(onednn):
                y = module(xi)
                y.backward(torch.ones_like(y))
            results.append((y.detach(), xi.grad, module.weight.grad.clone()))
        for a, b in list(zip(*results))[: 3 if layer.dilation == (1, 1) else 1]:
            assert torch.equal(a, b), type(layer).__name__


def test_pinned_models_copy_and_pickle():
    model = nn.Sequential(*_layers()[:1], nn.Sequential(CheckerboardMaskedConv2d(8, 16, kernel_size=5, padding=2)))
    kernels.pin_module(model[0])
    kernels.pin_module(model[1][0])
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert [type(m) for m in other.modules()] == [type(m) for m in model.modules()]
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_what_cannot_be_pinned_says_so():
    for layer in (nn.Conv2d(8, 8, 3, groups=2), nn.ConvTranspose2d(8, 8, 3), nn.Linear(2, 2)):
        with pytest.raises(ValueError, match="cannot pin"):
            kernels.pin_module(layer)


def test_native_kernels_nest_and_share_one_count_across_threads():
    import threading

    assert torch.backends.mkldnn.enabled
    inside, release = threading.Event(), threading.Event()

    def other():
        with kernels.native_kernels():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    inside.wait(10)
    with kernels.native_kernels():
        with kernels.native_kernels():
            assert not torch.backends.mkldnn.enabled
        release.set()
        t.join()
        assert not torch.backends.mkldnn.enabled  # the other thread's block ended inside ours
    assert torch.backends.mkldnn.enabled


def test_the_entropy_model_path_ignores_the_switch():
    """Bytes, z_c and the decoded latent are the native kernels' with oneDNN on or off."""
    compressor = LatentCompressor(ModelConfig().compressor).eval()
    compressor.update(force=True)
    torch.manual_seed(3)
    z0 = torch.randn(1, ModelConfig().compressor.latent_channels, 32, 48).to(memory_format=torch.channels_last) * 2
    outputs = []
    for enabled in (False, True):
        with _onednn(enabled):
            latent = compressor.compress(z0)
            outputs.append((latent.data, latent.z_c, compressor.decompress(latent.data, (32, 48))))
    (d0, z0_c, r0), (d1, z1_c, r1) = outputs
    assert d0 == d1 and torch.equal(z0_c, z1_c) and torch.equal(r0, r1)


def test_guard_finds_the_layers_the_bug_hits():
    model = nn.Sequential(nn.Conv2d(4, 32, 1, stride=2), nn.Conv2d(32, 32, 1, stride=2), nn.Conv2d(4, 32, 1),
                          nn.Conv2d(4, 32, 3, stride=2, padding=1), nn.Conv2d(15, 8, (1, 1), stride=(1, 2)))
    assert kernels.guard(model) == ["0", "4"]
    assert isinstance(model[0], kernels.NativeConv2d) and type(model[1]) is nn.Conv2d


def test_trainable_codec_guards_the_compressor_skip(codec):
    from resulic.train.checkpoint import fresh_parts
    from resulic.train.config import LossConfig
    from resulic.train.model import TrainableCodec

    compressor, cdm = fresh_parts(codec.config, codec.backbone)
    model = TrainableCodec(codec.config, codec.backbone, compressor, cdm, 1, LossConfig(), 6.0)
    hit = [n for n, m in model.named_modules() if kernels.hits_onednn_rtus_bug(m)]
    assert hit  # the tiny profile's 4 latent channels: g_a.0.skip
    assert all(isinstance(model.get_submodule(n), kernels._NativeConv) for n in hit)


@pytest.mark.parametrize("value, enabled", [("0", False), ("1", True), (None, True)])
def test_switch(monkeypatch, value, enabled):
    before = torch.backends.mkldnn.enabled
    try:
        if value is None:
            monkeypatch.delenv(kernels.ENV, raising=False)
        else:
            monkeypatch.setenv(kernels.ENV, value)
        assert kernels.configure() is enabled and torch.backends.mkldnn.enabled is enabled
    finally:
        torch.backends.mkldnn.enabled = before


def test_switch_rejects_other_values(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "yes")
    with pytest.raises(ValueError, match="RESULIC_ONEDNN"):
        kernels.configure()


def test_the_pinned_layer_survives_the_shape_that_corrupts_onednn():
    """The compressor's first skip layer, trained on AVX2 kernels (an AMD EPYC's), in a fresh
    process: unguarded, oneDNN v3.12 aborts here (benchmarks/repro_onednn.py)."""
    child = (
        "import torch\n"
        "from resulic.models.kernels import guard\n"
        "torch.manual_seed(0)\n"
        "layer = torch.nn.Sequential(torch.nn.Conv2d(4, 32, 1, stride=2))\n"
        "assert guard(layer) == ['0']\n"
        "x = torch.randn(2, 4, 16, 16).to(memory_format=torch.channels_last)\n"
        "for _ in range(20):\n"
        "    layer(x).sum().backward()\n"
        "print('ok')\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stderr[-2000:])
