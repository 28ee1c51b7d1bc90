"""Bjøntegaard delta rate between two RD curves, for any metric (the ``bjontegaard`` package).

BD-rate is the average difference of log10(bpp) between two curves over the quality interval
where both exist, as a percentage: negative means the test curve needs fewer bits for the same
quality. Interpolation: log10(bpp) as a function of quality, piecewise cubic Hermite (PCHIP, the
JCT-VC/JVET common-test-condition method) by default; 'akima' and 'cubic' (the original VCEG-M33
polynomial) on request. Quality is the metric as it is stored (MS-SSIM linear, not in dB).

Lower-is-better metrics (LPIPS, DISTS, FID, KID, …) are negated first, so that quality always
rises with rate; a curve whose quality does not rise strictly with rate is refused with a message
instead of giving a meaningless number.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ResulicError

DEFAULT_METHOD = "pchip"
METHODS = ("pchip", "akima", "cubic")
LOWER_IS_BETTER = ("lpips", "dists", "st-lpips", "fid", "kid", "niqe")
# The same quantity under the names different result files use (CompressAI: psnr-rgb; the
# ResULIC release: psnr).
ALIASES = {"psnr": ("psnr-rgb", "psnr"), "ms-ssim": ("ms-ssim-rgb", "ms-ssim")}


class BDRateError(ResulicError):
    """Two curves cannot be compared (missing metric, non-monotonic, no overlap)."""


@dataclass
class Curve:
    name: str
    bpp: np.ndarray
    quality: np.ndarray  # the metric's own values
    source: str = ""


def lower_is_better(metric: str) -> bool:
    base = metric.removesuffix("-random")
    return any(base == m or base.startswith(m + "-") or base.startswith(m + "_") for m in LOWER_IS_BETTER)


def metric_key(results: dict, metric: str) -> str | None:
    """The key under which ``results`` holds ``metric`` (aliases resolved), or None."""
    base = metric.removesuffix("-rgb")
    for key in ALIASES.get(base, (metric,)):
        if key in results:
            return key
    return metric if metric in results else None


def load_results(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BDRateError(f"{path}: no such results file") from None
    except (OSError, ValueError) as exc:
        raise BDRateError(f"{path}: not a readable JSON results file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results", data), dict):
        raise BDRateError(f"{path}: expected {{'name', 'results': {{'bpp': [...], ...}}}}")
    return data


def curve(data: dict, metric: str, source: str = "") -> Curve:
    """The (bpp, metric) points of a results dict, sorted by rate; null values dropped."""
    results = data.get("results", data)
    name = data.get("name") or Path(source).stem
    key = metric_key(results, metric)
    if key is None or "bpp" not in results:
        have = ", ".join(k for k in results if k != "bpp")
        raise BDRateError(f"{source or name}: no '{metric}' (or no 'bpp') in its results; it has: {have}")
    pairs = [(b, q) for b, q in zip(results["bpp"], results[key])
             if b is not None and q is not None and math.isfinite(b) and math.isfinite(q)]
    pairs.sort()
    return Curve(name, np.array([p[0] for p in pairs], float), np.array([p[1] for p in pairs], float), source)


def _oriented(c: Curve, metric: str) -> np.ndarray:
    q = -c.quality if lower_is_better(metric) else c.quality
    if len(q) < 2:
        raise BDRateError(f"{c.source or c.name}: '{metric}' needs at least 2 rate points, has {len(q)}")
    if np.any(np.diff(c.bpp) <= 0) or np.any(np.diff(q) <= 0):
        better = "lower" if lower_is_better(metric) else "higher"
        raise BDRateError(
            f"{c.source or c.name}: '{metric}' does not get strictly better ({better}) as bpp rises "
            f"(bpp {np.round(c.bpp, 5).tolist()}, {metric} {np.round(c.quality, 5).tolist()}); BD-rate needs a monotonic curve"
        )
    return q


@dataclass
class BDResult:
    value: float  # percent; NaN when the curves do not overlap
    metric: str
    method: str
    overlap: tuple[float, float]  # the quality interval integrated over (metric's own units)
    overlap_fraction: float


def bd_rate_curves(anchor: Curve, test: Curve, metric: str, method: str = DEFAULT_METHOD) -> BDResult:
    import bjontegaard

    if method not in METHODS:
        raise BDRateError(f"interpolation method {method!r} is not one of {', '.join(METHODS)}")
    qa, qt = _oriented(anchor, metric), _oriented(test, metric)
    lo, hi = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    span = max(qa.max(), qt.max()) - min(qa.min(), qt.min())
    fraction = max(hi - lo, 0.0) / span if span > 0 else 0.0
    if hi <= lo:
        value = math.nan
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small overlap is reported in the result instead
            value = float(bjontegaard.bd_rate(anchor.bpp, qa, test.bpp, qt, method=method,
                                              require_matching_points=False, min_overlap=0))
    sign = -1 if lower_is_better(metric) else 1
    interval = tuple(sorted((sign * lo, sign * hi))) if hi > lo else (math.nan, math.nan)
    return BDResult(value, metric, method, interval, fraction)


def bd_rate(anchor: str | Path | dict, test: str | Path | dict, metric: str, method: str = DEFAULT_METHOD) -> BDResult:
    """BD-rate (%) of ``test`` against ``anchor`` (results files or dicts) on ``metric``."""
    def as_curve(x):
        if isinstance(x, dict):
            return curve(x, metric)
        return curve(load_results(x), metric, str(x))

    return bd_rate_curves(as_curve(anchor), as_curve(test), metric, method)


def bd_table(test: str | Path, anchors: list[str | Path], metrics: list[str], method: str = DEFAULT_METHOD) -> str:
    """A markdown table: one row per anchor, one column per metric, BD-rate of ``test`` in %.

    A cell is '—' when the pair cannot be compared (metric missing, non-monotonic curve, no
    overlap); '*' marks an overlap under half the joint quality range.
    """
    test_data = load_results(test)
    name = test_data.get("name") or Path(test).stem
    lines = [f"BD-rate (%) of **{name}** against each anchor ({method} interpolation of log10 bpp over "
             f"quality; negative = fewer bits for the same quality)", "",
             "| anchor | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for anchor in anchors:
        data = load_results(anchor)
        cells = []
        for metric in metrics:
            try:
                r = bd_rate_curves(curve(data, metric, str(anchor)), curve(test_data, metric, str(test)), metric, method)
                cells.append("—" if math.isnan(r.value) else f"{r.value:+.1f}{'*' if r.overlap_fraction < 0.5 else ''}")
            except BDRateError:
                cells.append("—")
        lines.append(f"| {data.get('name') or Path(anchor).stem} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
