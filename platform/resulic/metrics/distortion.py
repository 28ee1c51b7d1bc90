"""Distortion metrics on 8-bit images: RGB PSNR and MS-SSIM (RESULIC.md §8).

Both take the images as a user sees them (8-bit RGB); values are per image and averaged by the
caller, as CompressAI and the ResULIC evaluation do.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

# pytorch-msssim's default: 5 scales, an 11-px Gaussian window, so the shorter side must exceed
# (11 - 1) * 2**4 = 160 px.
MS_SSIM_MIN_SIDE = 161


def as_unit_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB -> float32 (1, 3, H, W) in [0, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def psnr(reference: Image.Image, decoded: Image.Image) -> float:
    """RGB PSNR in dB, computed in float64 on [0, 1] (the protocol of RESULIC.md §8)."""
    _same_size(reference, decoded)
    x = np.asarray(reference.convert("RGB"), dtype=np.float64) / 255.0
    y = np.asarray(decoded.convert("RGB"), dtype=np.float64) / 255.0
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def ms_ssim(reference: Image.Image, decoded: Image.Image) -> float:
    """MS-SSIM with pytorch-msssim (data_range=1), or NaN for images too small for 5 scales."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    _same_size(reference, decoded)
    if min(reference.size) < MS_SSIM_MIN_SIDE:
        return math.nan
    x, y = as_unit_tensor(reference).double(), as_unit_tensor(decoded).double()
    return float(_ms_ssim(x, y, data_range=1.0, size_average=True))


def _same_size(a: Image.Image, b: Image.Image) -> None:
    if a.size != b.size:
        raise ValueError(f"images differ in size: {a.size} vs {b.size}")
