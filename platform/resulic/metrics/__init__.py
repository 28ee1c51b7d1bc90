"""Image-quality metrics and RD comparison (no Ray, no MLflow); imports only the ground.

distortion.py  PSNR, MS-SSIM          perceptual.py  LPIPS, DISTS, ST-LPIPS
fid.py         patch FID/KID (HiFiC)  weights.py     offline backbone files, random-backbone marking
suite.py       all of them at once    bd_rate.py     Bjøntegaard delta rate, tables

The names below are loaded on first use, so that ``resulic bd-rate`` and ``resulic plot``
(numpy only) do not import torch.
"""

from importlib import import_module

_EXPORTS = {"psnr": ".distortion", "ms_ssim": ".distortion", "MetricWeights": ".weights",
            "MetricWeightsError": ".weights"}

__all__ = ["psnr", "ms_ssim", "MetricWeights", "MetricWeightsError"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
