"""Image-quality metrics and RD comparison (core: no Ray, no MLflow).

distortion.py  PSNR, MS-SSIM          perceptual.py  LPIPS, DISTS, ST-LPIPS
fid.py         patch FID/KID (HiFiC)  weights.py     offline backbone files, random-backbone marking
suite.py       all of them at once    bd_rate.py     Bjøntegaard delta rate, tables
"""

from .distortion import ms_ssim, psnr
from .weights import MetricWeights, MetricWeightsError

__all__ = ["psnr", "ms_ssim", "MetricWeights", "MetricWeightsError"]
