"""Learning curves of a training run, from its MLflow metrics: the training losses (smoothed) and
the held-out validation through real files at each checkpoint.

    python benchmarks/plot_learning_curves.py stage1-small-pixel [--tracking-uri sqlite:///mlflow.db] \
        [-o docs/img/learning-curves.png] [--smooth 200]

The run is found by its name in the ``resulic-train`` experiment; several runs (one continuing
another, e.g. stage-0 rounds) are drawn one after the other on one step axis. Top: the loss terms
the run logged per step (``loss_pixel`` as PSNR of the decoded window, ``loss_guide``, the
estimated bpp, stage 0's ``loss_eps``), a moving average over ``--smooth`` steps (the rate level
and the noise level are drawn per crop, so single steps are noisy). Bottom: validation PSNR and
real bpp at each checkpoint, per rate level, and stage 0's held-out ε-loss at fixed draws.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


# (metric, axis of the top panel, label): what a stage logs per step.
TRAINING = (
    ("loss_pixel", "left", "decoded window PSNR (train, dB)"),
    ("loss_guide", "right", "loss_guide"),
    ("bpp_estimated", "right", "bpp_estimated"),
    ("loss_eps", "right", "ε-loss (train)"),
)
PLOTTED = {key for key, _, _ in TRAINING} | {"val_loss_eps"}


def history(client, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return np.array([m.step for m in points]), np.array([m.value for m in points])


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def find_run(client, experiment, name: str):
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{name}'") if experiment else []
    return runs[0] if runs else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="+", help="the training run's name (run.name); several: one after the other")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    p.add_argument("--experiment", default="resulic-train")
    p.add_argument("-o", "--output", type=Path, default=Path("outputs/learning-curves.png"))
    p.add_argument("--smooth", type=int, default=200, help="moving-average window of the training curves (steps)")
    args = p.parse_args(argv)
    if args.smooth < 1:
        p.error("--smooth must be at least 1")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    from resulic.services.runtime import quiet_libraries

    quiet_libraries()
    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    runs = [find_run(client, experiment, name) for name in args.run]
    for name, run in zip(args.run, runs):
        if run is None:
            print(f"error: no run named {name!r} in experiment {args.experiment!r} of {args.tracking_uri}", file=sys.stderr)
            return 2
        if not set(run.data.metrics) & PLOTTED:
            print(f"error: run {name!r} logged none of {', '.join(sorted(PLOTTED))}: nothing to plot", file=sys.stderr)
            return 2

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), constrained_layout=True)
    has_pixel = any("loss_pixel" in run.data.metrics for run in runs)
    twin, val_twin = (top.twinx() if has_pixel else top), None  # no empty dB axis for a stage-0 run
    offset, colours = 0, iter(f"C{i}" for i in range(100))
    for name, run in zip(args.run, runs):
        run_id, keys = run.info.run_id, set(run.data.metrics)
        tag = f"{name}: " if len(runs) > 1 else ""
        last = offset
        for key, axis, label in TRAINING:
            if key in keys:
                steps, values = history(client, run_id, key)
                s = smooth(values, args.smooth)
                if key == "loss_pixel":
                    s = -10 * np.log10(s)
                (top if axis == "left" else twin).plot(offset + steps[len(steps) - len(s):], s, next(colours),
                                                       label=tag + label)
                last = max(last, offset + int(steps.max()))
        levels = sorted({int(k.rsplit("level", 1)[1]) for k in keys if k.startswith("val_psnr_level")})
        for level in levels:
            steps, values = history(client, run_id, f"val_psnr_level{level}")
            _, bpp = history(client, run_id, f"val_bpp_real_level{level}")
            label = f"level {level} (bpp {bpp[0]:.3f} → {bpp[-1]:.3f})" if len(bpp) else f"level {level}"
            bottom.plot(offset + steps, values, marker="o", label=tag + label)
        if "val_loss_eps" in keys:
            steps, values = history(client, run_id, "val_loss_eps")
            axis = bottom if not levels else (val_twin := val_twin or bottom.twinx())
            axis.plot(offset + steps, values, marker="s", label=tag + "held-out ε-loss (fixed draws)")
            axis.set_ylabel("validation ε-loss" if axis is bottom else "ε-loss")
        if len(runs) > 1:
            top.axvline(offset, color="0.7", linestyle=":")
            bottom.axvline(offset, color="0.7", linestyle=":")
        offset = last
    top.set_xlabel("step")
    if has_pixel:
        top.set_ylabel("dB")
    twin.set_ylabel("latent MSE / bpp / ε-loss")
    top.set_title(f"{' → '.join(args.run)}: training terms, moving average over {args.smooth} steps")
    lines = top.get_legend_handles_labels()
    more = twin.get_legend_handles_labels() if twin is not top else ([], [])
    top.legend(lines[0] + more[0], lines[1] + more[1], loc="best", fontsize=8)
    bottom.set_xlabel("step")
    if not bottom.get_ylabel():
        bottom.set_ylabel("validation PSNR, dB (real files)")
    bottom.set_title("held-out validation at each checkpoint")
    handles = bottom.get_legend_handles_labels()
    if val_twin is not None:
        extra = val_twin.get_legend_handles_labels()
        handles = (handles[0] + extra[0], handles[1] + extra[1])
    bottom.legend(*handles, fontsize=8)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
