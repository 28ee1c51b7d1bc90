"""RD curves for any set of results JSONs (ours, baselines, ../shared/anchors): one figure per
metric, bpp on a log axis. Lower-is-better metrics are plotted as they are, with the axis label
saying so."""

from __future__ import annotations

from pathlib import Path

from ..metrics.bd_rate import BDRateError, curve, load_results, lower_is_better

LABELS = {"psnr": "PSNR-RGB [dB]", "ms-ssim": "MS-SSIM", "lpips": "LPIPS", "dists": "DISTS", "st-lpips": "ST-LPIPS",
          "fid": "FID/256", "kid": "KID/256"}


def available_metrics(paths: list[str | Path]) -> list[str]:
    """Metrics present in at least one file (CompressAI's -rgb names folded)."""
    seen = []
    for p in paths:
        for key in load_results(p).get("results", {}):
            name = key.removesuffix("-rgb")
            if key != "bpp" and not key.endswith(("_time", "_bpp")) and name not in seen:
                seen.append(name)
    return seen


def plot_rd(paths: list[str | Path], metric: str, output: str | Path, title: str | None = None) -> Path | None:
    """One figure: every file that has ``metric`` as a curve. None when no file has it."""
    import matplotlib.pyplot as plt

    fig = rd_figure(paths, metric, title)
    if fig is None:
        return None
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


def rd_figure(paths: list[str | Path], metric: str, title: str | None = None):
    """The matplotlib Figure of :func:`plot_rd` (the caller closes it), or None."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for p in paths:
        try:
            curves.append(curve(load_results(p), metric, str(p)))
        except BDRateError:
            continue
    curves = [c for c in curves if len(c.bpp)]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, label in zip(curves, distinct_labels([c.name for c in curves], [c.source for c in curves])):
        ax.plot(c.bpp, c.quality, marker="o", markersize=3, linewidth=1, label=label)
    ax.set_xscale("log")
    readable_ticks(ax.xaxis, log=True)
    readable_ticks(ax.yaxis)
    ax.set_xlabel("bpp (log scale)")
    base = metric.removesuffix("-random")
    label = LABELS.get(base.removesuffix("-rgb"), metric)
    if metric.endswith("-random"):
        label += " (random backbone)"
    ax.set_ylabel(label + (" ↓" if lower_is_better(metric) else " ↑"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or f"RD: {metric}")
    fig.tight_layout()
    return fig


def distinct_labels(names: list[str], sources: list[str]) -> list[str]:
    """Legend labels: each curve's name, and where names repeat (the paper's ResULIC and ResULIC_Pfo
    anchors are both "ResULIC") the shortest tail of the file path that tells them apart."""
    labels = list(names)
    for name in set(names):
        same = [i for i, n in enumerate(names) if n == name]
        if len(same) < 2:
            continue
        parts = [Path(sources[i]).with_suffix("").parts for i in same]
        for depth in range(1, max(len(p) for p in parts) + 1):
            tails = ["/".join(p[-depth:]) for p in parts]
            if len(set(tails)) == len(tails):
                break
        for i, tail in zip(same, tails):
            labels[i] = f"{name} ({tail})" if tail else name
    # The same file given twice (or names the paths cannot separate): number the repeats.
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} #{seen[label]}"
    return labels


def readable_ticks(axis, log: bool = False, nbins: int = 5) -> None:
    """Plain-number tick labels that do not run into each other, on any data range.

    Matplotlib's defaults label a log axis that spans less than a decade at its minor ticks too
    (labels overlap into a smear), and a linear axis over a narrow range with an offset
    ("1e−5+2.278e−1"). Here: a few linearly spaced ticks when the range is narrower than a decade,
    1-2-5 steps per decade up to two decades, decades beyond; numbers written out, no offset;
    minor ticks unlabelled.
    """
    import math

    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, ScalarFormatter

    lo, hi = sorted(axis.get_view_interval())
    decades = math.log10(hi / lo) if log and lo > 0 else 0.0
    if decades >= 1:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2 else (1.0,), numticks=12))
    else:
        axis.set_major_locator(MaxNLocator(nbins=nbins))
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(NullFormatter())


def plot_all(paths: list[str | Path], output_dir: str | Path, metrics: list[str] | None = None) -> list[Path]:
    """rd-<metric>.png in ``output_dir`` for each metric (default: every metric found)."""
    written = []
    for metric in metrics or available_metrics(paths):
        out = plot_rd(paths, metric, Path(output_dir) / f"rd-{metric}.png")
        if out is not None:
            written.append(out)
    return written
