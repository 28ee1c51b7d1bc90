"""Learned perceptual metrics, per image: LPIPS (AlexNet), DISTS, ST-LPIPS.

- LPIPS: the ``lpips`` package's network and its shipped linear layers (v0.1), AlexNet trunk
  weights from a local file (see weights.py); input scaled to [-1, 1].
- DISTS: torchmetrics' DISTS network and its shipped α/β weights, VGG16 trunk from a local file.
- ST-LPIPS: the ``stlpips-pytorch`` wheel's shift-tolerant AlexNet LPIPS, which ships its whole
  network, so it always runs with real weights offline. Reported as ``st-lpips``.
"""

from __future__ import annotations

from contextlib import contextmanager
from unittest import mock

import torch
from PIL import Image

from .distortion import as_unit_tensor
from .weights import MetricWeights

RANDOM_SEED = 0


@contextmanager
def _seeded(seed: int = RANDOM_SEED):
    """Deterministic random initialisation without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _quiet_torchvision():
    import warnings

    warnings.filterwarnings("ignore", message=".*(pretrained|weights).*deprecated.*")
    warnings.filterwarnings("ignore", message="Arguments other than a weight enum.*")


def build_lpips(weights: MetricWeights) -> torch.nn.Module:
    import lpips

    _quiet_torchvision()
    with _seeded():
        # pnet_rand=True: the trunk starts random (no download); the linear layers come from the package.
        net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    if not weights.random_backbones:
        state = torch.load(weights.locate("lpips"), map_location="cpu", weights_only=True)
        # torchvision's AlexNet keys are features.<i>.*; lpips keeps the indices inside slice1..5.
        trunk = {}
        for name, _ in net.net.named_parameters():
            slice_name, index, param = name.split(".")
            trunk[name] = state[f"features.{index}.{param}"]
        net.net.load_state_dict(trunk, strict=True)
    return net.eval().requires_grad_(False)


def build_dists(weights: MetricWeights) -> torch.nn.Module:
    from types import SimpleNamespace

    from torchmetrics.functional.image import dists as tm_dists
    from torchvision.models.vgg import cfgs, make_layers

    with _seeded():
        features = make_layers(cfgs["D"])  # VGG16's convolutional part (DISTS uses nothing else)
    if not weights.random_backbones:
        state = torch.load(weights.locate("dists"), map_location="cpu", weights_only=True)
        features.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
    # torchmetrics builds DISTS around torchvision's download-on-first-use VGG16; hand it the
    # same layers, already loaded, and keep everything else (stages, L2 pooling, α/β) as it is.
    with mock.patch.object(tm_dists, "vgg16", lambda weights=None: SimpleNamespace(features=features)):
        net = tm_dists.DISTSNetwork(load_weights=True)
    return net.eval().requires_grad_(False)


def build_st_lpips() -> torch.nn.Module:
    import contextlib
    import io

    from stlpips_pytorch import stlpips

    _quiet_torchvision()
    with contextlib.redirect_stdout(io.StringIO()):
        net = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False)
    return net.eval().requires_grad_(False)


class PerceptualMetrics:
    """The per-image learned metrics, networks loaded once."""

    def __init__(self, names: list[str], weights: MetricWeights, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.weights = weights
        builders = {"lpips": lambda: build_lpips(weights), "dists": lambda: build_dists(weights),
                    "st-lpips": build_st_lpips}
        self.nets = {name: builders[name]().to(self.device) for name in names if name in builders}

    @torch.no_grad()
    def __call__(self, reference: Image.Image, decoded: Image.Image) -> dict[str, float]:
        x = as_unit_tensor(reference).to(self.device)
        y = as_unit_tensor(decoded).to(self.device)
        out = {}
        for name, net in self.nets.items():
            if name == "dists":
                value = net(x, y)  # DISTS takes [0, 1] and normalises itself
            else:
                value = net(x * 2 - 1, y * 2 - 1)  # LPIPS-family networks take [-1, 1]
            out[self.weights.key(name)] = float(value.mean())
        return out
