"""LPIPS-VGG for the stage-2 loss, built offline.

The ``lpips`` package ships its linear heads but fetches the VGG16 backbone from the internet.
Given a local torchvision VGG16 state dict (``loss.lpips_vgg_weights``) we load it; otherwise the
backbone is random and the caller records that (a random backbone still gives a learning signal
for pipeline tests, not a perceptual one).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import ModelLoadError


def build_lpips(vgg_weights: str | None) -> tuple[torch.nn.Module, bool]:
    """(frozen LPIPS-VGG module taking images in [-1, 1], backbone_is_random)."""
    import lpips

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's note on lpips' old 'pretrained' argument
        torch.manual_seed(0)
        module = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    if vgg_weights is not None:
        path = Path(vgg_weights)
        if not path.is_file():
            raise ModelLoadError(f"loss.lpips_vgg_weights: {path} not found (a torchvision VGG16 state dict)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same to a user
            raise ModelLoadError(f"loss.lpips_vgg_weights: {path} is not a torch state dict ({exc})") from None
        _load_vgg_features(module.net, state, path)
    module.requires_grad_(False).eval()
    return module, vgg_weights is None


def _load_vgg_features(net: torch.nn.Module, state: dict, path: Path) -> None:
    # lpips splits torchvision's ``features`` into slices that keep the original layer indices:
    # ``features.{i}.weight`` lives at ``slice{k}.{i}.weight``.
    targets = {}
    for name, tensor in net.state_dict().items():
        _, index, kind = name.split(".")
        targets[f"features.{index}.{kind}"] = name
    missing = [k for k in targets if k not in state]
    if missing:
        raise ModelLoadError(f"loss.lpips_vgg_weights: {path} lacks {missing[:3]} (not a VGG16 state dict?)")
    net.load_state_dict({targets[k]: state[k] for k in targets}, strict=True)
