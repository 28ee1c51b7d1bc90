"""Where the learned metrics find their pretrained backbones, offline.

LPIPS, DISTS and FID/KID are defined on ImageNet-trained networks that their packages download on
first use. Nothing is downloaded here: each file is looked for, under the name its library
uses, in the configured folder and then in torch's hub cache (where the libraries would have put
it). A missing file is a :class:`MetricWeightsError` naming it. ``random_backbones=True`` builds
the same networks with seeded random weights instead, for tests and plumbing runs; every value so
computed carries the ``-random`` suffix in its metric name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ResulicError

# File names as torchvision / torch-fidelity publish them (their hub cache uses the same names).
BACKBONE_FILES = {
    "lpips": "alexnet-owt-7be5be79.pth",  # torchvision AlexNet (ImageNet), the LPIPS-alex trunk
    "dists": "vgg16-397923af.pth",  # torchvision VGG16 (ImageNet), the DISTS trunk
    "fid": "weights-inception-2015-12-05-6726825d.pth",  # torch-fidelity's TF-compatible InceptionV3
}
BACKBONE_FILES["kid"] = BACKBONE_FILES["fid"]
RANDOM_SUFFIX = "-random"
WEIGHTS_ENV = "RESULIC_METRIC_WEIGHTS"


class MetricWeightsError(ResulicError):
    """A learned metric's pretrained backbone is not on this machine."""


@dataclass(frozen=True)
class MetricWeights:
    """How learned metrics get their backbones: a local folder, or seeded random weights."""

    folder: str | None = None
    random_backbones: bool = False

    def search_path(self) -> list[Path]:
        import torch

        folders = [self.folder, os.environ.get(WEIGHTS_ENV), str(Path(torch.hub.get_dir()) / "checkpoints")]
        return [Path(f).expanduser() for f in folders if f]

    def locate(self, metric: str) -> Path:
        """The backbone file for ``metric`` ('lpips', 'dists', 'fid', 'kid'), or a clear error."""
        name = BACKBONE_FILES[metric]
        searched = self.search_path()
        for folder in searched:
            if (folder / name).is_file():
                return folder / name
        where = ", ".join(str(f) for f in searched)
        raise MetricWeightsError(
            f"{metric}: pretrained backbone {name} not found (looked in {where}); copy it into one of "
            f"these folders or set metrics.weights_dir / ${WEIGHTS_ENV}, or run with "
            f"metrics.random_backbones=true to get '{metric}{RANDOM_SUFFIX}' values for plumbing checks"
        )

    def key(self, metric: str) -> str:
        """The result key of ``metric``: marked when its backbone is random."""
        needs_backbone = metric in BACKBONE_FILES
        return f"{metric}{RANDOM_SUFFIX}" if (needs_backbone and self.random_backbones) else metric
