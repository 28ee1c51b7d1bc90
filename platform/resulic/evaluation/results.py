"""The RD results format shared by evaluation, baselines, BD-rate and plots.

CompressAI's ``{"name", "description", "results": {"bpp": [...], "<metric>": [...]}}``, one
list entry per rate point, each the mean over images of per-image values (CompressAI's and the
ResULIC evaluation's convention). Extra top-level keys (dataset, rate points, which metrics used
random backbones, …) are allowed; ``compressai.utils.plot`` reads only ``name`` and ``results``.
A value that could not be computed is ``null``, never NaN (which is not JSON).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

from ..images import write_atomic


def mean_or_none(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None


def clean(obj):
    """NaN/inf -> None, numpy scalars -> Python, recursively (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_results(path: str | Path, data: dict) -> Path:
    path = Path(path)
    write_atomic(path, (json.dumps(clean(data), indent=2) + "\n").encode())
    return path
