"""RD curves for any set of results JSONs (ours, baselines, ../shared/anchors): one figure per
metric, bpp on a log axis. Lower-is-better metrics are plotted as they are, with the axis label
saying so."""

from __future__ import annotations

from pathlib import Path

from .metrics.bd_rate import BDRateError, curve, load_results, lower_is_better

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
    for c in curves:
        ax.plot(c.bpp, c.quality, marker="o", markersize=3, linewidth=1, label=c.name)
    ax.set_xscale("log")
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
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


def plot_all(paths: list[str | Path], output_dir: str | Path, metrics: list[str] | None = None) -> list[Path]:
    """rd-<metric>.png in ``output_dir`` for each metric (default: every metric found)."""
    written = []
    for metric in metrics or available_metrics(paths):
        out = plot_rd(paths, metric, Path(output_dir) / f"rd-{metric}.png")
        if out is not None:
            written.append(out)
    return written
