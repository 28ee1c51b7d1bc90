"""Learning curves of a training run, from its MLflow metrics: the training losses (smoothed) and
the held-out validation through real files at each checkpoint.

    python benchmarks/plot_learning_curves.py stage1-small-pixel [--tracking-uri sqlite:///mlflow.db] \
        [-o docs/img/learning-curves.png] [--smooth 200]

The run is found by its name in the ``resulic-train`` experiment. Top: the loss terms the run
logged per step (``loss_pixel`` as PSNR of the decoded window, ``loss_guide``, the estimated bpp),
a moving average over ``--smooth`` steps (the rate level is drawn per crop, so single steps are
noisy). Bottom: validation PSNR and real bpp at each checkpoint, per rate level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def history(client, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return np.array([m.step for m in points]), np.array([m.value for m in points])


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the training run's name (run.name)")
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
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{args.run}'") if experiment else []
    if not runs:
        print(f"error: no run named {args.run!r} in experiment {args.experiment!r} of {args.tracking_uri}", file=sys.stderr)
        return 2
    run_id = runs[0].info.run_id
    keys = set(runs[0].data.metrics)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), constrained_layout=True)
    if "loss_pixel" in keys:
        steps, values = history(client, run_id, "loss_pixel")
        s = smooth(values, args.smooth)
        top.plot(steps[len(steps) - len(s):], -10 * np.log10(s), label="decoded window PSNR (train, dB)")
    twin = top.twinx()
    for key, style in (("loss_guide", "C1"), ("bpp_estimated", "C2")):
        if key in keys:
            steps, values = history(client, run_id, key)
            s = smooth(values, args.smooth)
            twin.plot(steps[len(steps) - len(s):], s, style, label=key)
    top.set_xlabel("step")
    top.set_ylabel("dB")
    twin.set_ylabel("latent MSE / bpp")
    top.set_title(f"{args.run}: training terms, moving average over {args.smooth} steps")
    lines = top.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    top.legend(lines[0] + more[0], lines[1] + more[1], loc="best", fontsize=8)

    levels = sorted({int(k.rsplit("level", 1)[1]) for k in keys if k.startswith("val_psnr_level")})
    for level in levels:
        steps, values = history(client, run_id, f"val_psnr_level{level}")
        _, bpp = history(client, run_id, f"val_bpp_real_level{level}")
        label = f"level {level} (bpp {bpp[0]:.3f} → {bpp[-1]:.3f})" if len(bpp) else f"level {level}"
        bottom.plot(steps, values, marker="o", label=label)
    bottom.set_xlabel("step")
    bottom.set_ylabel("validation PSNR, dB (real files)")
    bottom.set_title("held-out validation at each checkpoint")
    bottom.legend(fontsize=8)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
