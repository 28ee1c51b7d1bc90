"""What a sweep optimises. No Ray here.

Scalar (for TPE and ASHA): ``objective = distortion + β · bpp`` with the distortion a validation
metric (lower is better: ``val_lpips`` by default) and bpp the real validation bpp from files —
the Lagrangian of a rate-distortion trade-off at slope β. Multi-objective: (bpp, distortion) both
minimised; the result is the Pareto front.
"""

from __future__ import annotations

from typing import Literal, Sequence

from pydantic import Field

from ..config import StrictModel
from ..metrics.weights import RANDOM_SUFFIX

BPP_METRIC = "val_bpp_real"


class ObjectiveConfig(StrictModel):
    mode: Literal["scalar", "pareto"] = "scalar"
    distortion: str = Field("val_lpips", description="a lower-is-better validation metric")
    beta: float = Field(1.0, ge=0, description="weight of bpp in the scalar objective")

    def distortion_key(self, metrics: dict) -> str | None:
        """The distortion as reported: the configured metric, else its random-backbone stand-in
        (``val_lpips-random``: LPIPS through a random VGG, when training had no VGG16 weights). A
        sweep can rank trials by the stand-in to exercise the pipeline; promotion never ranks a
        champion by it (tune/promote.py)."""
        for key in (self.distortion, self.distortion + RANDOM_SUFFIX):
            if key in metrics:
                return key
        return None

    def value(self, metrics: dict) -> float | None:
        key = self.distortion_key(metrics)
        if key is None or BPP_METRIC not in metrics:
            return None
        return float(metrics[key]) + self.beta * float(metrics[BPP_METRIC])

    @property
    def metrics(self) -> list[str]:
        """What the search optimises: the scalar, or the two objectives of the front."""
        return ["objective"] if self.mode == "scalar" else [BPP_METRIC, self.distortion]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a is no worse than b everywhere and better somewhere (all minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (all objectives minimised), in input order."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]
