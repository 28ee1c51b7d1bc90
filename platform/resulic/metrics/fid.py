"""FID and KID on 256×256 patches, the HiFiC "FID/256" protocol (RESULIC.md §8, PLATFORM.md §2.8).

Each image is cut into non-overlapping 256×256 patches; when both sides are at least 1.5 patches,
the cut is repeated on the image shifted by 128 px (its first 128 rows and columns dropped), as
NeuralCompression's ``update_patch_fid`` does. Patches of the originals and of the decoded images
go through torch-fidelity's TF-compatible InceptionV3 (2048-d pool features), per image, so the
work spreads over workers; FID and KID are computed once from all features with torch-fidelity's
own functions. KID uses subsets of min(1000, patches) patches: small sets give noisy KID.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from .weights import MetricWeights

PATCH = 256
FEATURE = "2048"


def patch_grid(height: int, width: int, patch: int = PATCH) -> list[tuple[int, int]]:
    """Top-left corners of the patches of one image, both passes (see the module docstring)."""
    corners = [(y, x) for y in range(0, height - patch + 1, patch) for x in range(0, width - patch + 1, patch)]
    if height >= 1.5 * patch and width >= 1.5 * patch:
        half = patch // 2
        corners += [(y, x) for y in range(half, height - patch + 1, patch) for x in range(half, width - patch + 1, patch)]
    return corners


def patch_count(height: int, width: int, patch: int = PATCH) -> int:
    return len(patch_grid(height, width, patch))


def extract_patches(img: Image.Image, patch: int = PATCH) -> torch.Tensor:
    """uint8 (P, 3, patch, patch) tensor of the image's patches."""
    arr = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
    corners = patch_grid(arr.shape[1], arr.shape[2], patch)
    if not corners:
        return torch.empty((0, 3, patch, patch), dtype=torch.uint8)
    return torch.stack([arr[:, y : y + patch, x : x + patch] for y, x in corners])


def build_inception(weights: MetricWeights) -> torch.nn.Module:
    """torch-fidelity's InceptionV3 feature extractor, weights from a local file (or random)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if not weights.random_backbones:
        return FeatureExtractorInceptionV3("inception-v3-compat", [FEATURE], str(weights.locate("fid")))

    class SeededInceptionV3(FeatureExtractorInceptionV3):
        """The same network keeping PyTorch's (seeded) initialisation instead of loading weights."""

        def load_state_dict(self, state_dict, strict=True, assign=False):
            return torch.nn.modules.module._IncompatibleKeys([], [])

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = SeededInceptionV3("inception-v3-compat", [FEATURE], empty)
        # PyTorch's default conv init shrinks activations layer by layer until 90 random layers
        # map every image to the same features; He init keeps them apart, so FID still reacts.
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return net


class PatchFeatures:
    """Inception features of an image's patches (computed where the image is decoded)."""

    def __init__(self, weights: MetricWeights, device: str | torch.device = "cpu", batch: int = 16):
        self.device = torch.device(device)
        self.net = build_inception(weights).to(self.device)
        self.batch = batch

    @torch.no_grad()
    def __call__(self, img: Image.Image) -> np.ndarray:
        patches = extract_patches(img)
        feats = [self.net(chunk.to(self.device))[0].double().cpu() for chunk in patches.split(self.batch)]
        return torch.cat(feats).numpy() if feats else np.zeros((0, 2048))


def fid_kid(real: np.ndarray, fake: np.ndarray, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 2020) -> dict:
    """FID and KID (raw, not ×10³) from patch features, with torch-fidelity's functions."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    n = min(len(real), len(fake))
    if n < 2:
        raise ValueError(f"FID/KID need at least 2 patches of {PATCH}x{PATCH} px; got {n} (images too small?)")
    real_t, fake_t = torch.from_numpy(np.asarray(real, np.float64)), torch.from_numpy(np.asarray(fake, np.float64))
    fid = fid_statistics_to_metric(fid_features_to_statistics(real_t), fid_features_to_statistics(fake_t), verbose=False)
    subset = min(kid_subset_size, n)
    kid = kid_features_to_metric(real_t, fake_t, kid_subsets=kid_subsets, kid_subset_size=subset, verbose=False,
                                 rng_seed=seed, kid_kernel="poly", kid_kernel_poly_degree=3,
                                 kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    return {"fid": fid[KEY_METRIC_FID], "kid": kid[KEY_METRIC_KID_MEAN], "kid_std": kid[KEY_METRIC_KID_STD],
            "patches": n, "kid_subset_size": subset}
