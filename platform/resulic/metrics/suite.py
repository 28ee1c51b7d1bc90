"""All metrics of one evaluation, networks loaded once: per-image scores and FID/KID features."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .distortion import ms_ssim, psnr
from .weights import MetricWeights

PER_IMAGE = ("psnr", "ms-ssim", "lpips", "dists", "st-lpips")
SET_LEVEL = ("fid", "kid")
ALL = PER_IMAGE + SET_LEVEL
DEFAULT = ("psnr", "ms-ssim", "lpips", "dists", "st-lpips", "fid", "kid")


@dataclass
class ImageScores:
    scores: dict[str, float]
    real_features: np.ndarray | None  # Inception features of the original's patches (FID/KID)
    fake_features: np.ndarray | None


class MetricSuite:
    def __init__(self, names=DEFAULT, weights: MetricWeights = MetricWeights(), device: str | torch.device = "cpu"):
        unknown = [n for n in names if n not in ALL]
        if unknown:
            from ..errors import ConfigError

            raise ConfigError(f"metrics.names: unknown metric(s) {unknown}; known: {', '.join(ALL)}")
        self.names = list(names)
        self.weights = weights
        learned = [n for n in self.names if n in ("lpips", "dists", "st-lpips")]
        self.perceptual = None
        if learned:
            from .perceptual import PerceptualMetrics

            self.perceptual = PerceptualMetrics(learned, weights, device)
        self.features = None
        if any(n in SET_LEVEL for n in self.names):
            from .fid import PatchFeatures

            self.features = PatchFeatures(weights, device)

    def __call__(self, reference: Image.Image, decoded: Image.Image) -> ImageScores:
        scores: dict[str, float] = {}
        if "psnr" in self.names:
            scores["psnr-rgb"] = psnr(reference, decoded)
        if "ms-ssim" in self.names:
            scores["ms-ssim-rgb"] = ms_ssim(reference, decoded)
        if self.perceptual is not None:
            scores.update(self.perceptual(reference, decoded))
        real = fake = None
        if self.features is not None:
            real, fake = self.features(reference), self.features(decoded)
        return ImageScores({k: (v if math.isfinite(v) else None) for k, v in scores.items()}, real, fake)
