"""The evaluation subcommands of ``resulic``: evaluate, baselines, bd-rate, plot.

Argument parsing only; the work is in evaluation/ (evaluate.py, baselines.py, plots.py) and metrics/bd_rate.py.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .common import tracking_uri_option


def add_parsers(sub) -> None:
    e = sub.add_parser("evaluate", help="RD evaluation of trained codecs over an image folder",
                       description="Compress and decode every image at every rate point through real files; "
                                   "write per-image and aggregate JSON (CompressAI format) and RD plots.")
    e.add_argument("--config", help="an evaluate YAML (default: configs/evaluate.yaml's defaults)")
    e.add_argument("--model", action="append", dest="models", metavar="SRC",
                   help="a rate point: codec folder, models:/name@alias, model YAML or 'tiny' (repeatable)")
    e.add_argument("--level", type=int, action="append", dest="levels", metavar="0..127",
                   help="a variable-rate model's rate level, each its own rate point (repeatable; "
                        "default: its default level)")
    e.add_argument("--images", metavar="FOLDER", help="image folder, or 'samples' (the photos inside scikit-image; the default)")
    e.add_argument("-o", "--output", metavar="FOLDER",
                   help="where results.json (CompressAI format), per-image JSON, files, decoded images and RD plots go "
                        "(default: outputs/evaluate)")
    e.add_argument("--workers", type=int, metavar="N", help="Ray actors (default 1; 0: in this process, without Ray)")
    e.add_argument("--max-images", type=int, metavar="N", help="only the first N images of the folder (default: all)")
    e.add_argument("--crop", type=int, metavar="N", help="center-crop images to at most N x N (default: native size)")
    tracking_uri_option(e)
    e.add_argument("--random-backbones", action="store_true", help="seeded random metric backbones (marked '-random')")
    e.add_argument("--track", action="store_true", help="log to MLflow (default store sqlite:///mlflow.db)")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an evaluate-config key (configs/evaluate.yaml), e.g. --set 'metrics.names=[psnr,st-lpips]' "
                        "(repeatable)")

    b = sub.add_parser("baselines", help="JPEG/WebP/AVIF/JPEG 2000/VVC at target bpps, same JSON format",
                       description="Bisect each classical codec's knob to each target bpp (real bytes) over a folder.")
    b.add_argument("images", help="image folder (or 'samples')")
    b.add_argument("--bpp", type=float, nargs="+", default=[0.03, 0.05, 0.1], help="target bpps")
    b.add_argument("--codec", action="append", dest="codecs", help="jpeg, webp, avif, jpeg2000, vvc (default: all)")
    b.add_argument("-o", "--output", default="outputs/baselines", metavar="FOLDER",
                   help="where <codec>.json (CompressAI format) and the RD plots go (default: outputs/baselines)")
    b.add_argument("--max-images", type=int, metavar="N", help="only the first N images of the folder (default: all)")
    b.add_argument("--crop", type=int, metavar="N", help="center-crop images to at most N x N (default: native size)")
    b.add_argument("--vvc-preset", default="faster",
                   help="libvvenc preset: faster (default), fast, medium, slow, slower (~9x the time of faster; "
                        "its rate gain: docs/evaluation.md)")
    b.add_argument("--workers", type=int, metavar="N",
                   help="processes bisecting at once (default: the CPUs this process may use)")
    b.add_argument("--learned-metric", dest="learned_metrics", action="append", default=[], metavar="NAME",
                   choices=["lpips", "dists", "st-lpips"], help="also lpips, dists or st-lpips per image (repeatable)")
    b.add_argument("--random-backbones", action="store_true", help="seeded random LPIPS/DISTS backbones (marked '-random')")

    d = sub.add_parser("bd-rate", help="BD-rate between RD JSON files",
                       description="BD-rate (%) of TEST against ANCHOR; with --against, a markdown table of "
                                   "one test file against several anchors. Negative = fewer bits.")
    d.add_argument("files", nargs="+", help="ANCHOR TEST, or TEST with --against")
    d.add_argument("--against", nargs="+", metavar="ANCHOR", help="anchors for a table")
    d.add_argument("--metric", action="append", required=True, help="psnr, ms-ssim, lpips, dists, fid, kid, … (repeatable)")
    d.add_argument("--method", default="pchip", choices=["pchip", "akima", "cubic"],
                   help="interpolation of log10(bpp) over quality (default: pchip, the JVET common-test-condition method; cubic: VCEG-M33)")

    p = sub.add_parser("plot", help="RD curves of any JSON files, one PNG per metric (log-scale bpp)",
                       description="Draw the RD curves of results files (CompressAI format: evaluate's results.json, "
                                   "baselines' <codec>.json), one PNG per metric, bpp on a log scale.")
    p.add_argument("files", nargs="+", metavar="FILE", help="results JSON files, one curve each")
    p.add_argument("-o", "--output", default="outputs/plots", metavar="FOLDER",
                   help="where rd-<metric>.png go (default: outputs/plots)")
    p.add_argument("--metric", action="append", help="a metric to plot, e.g. psnr (repeatable; default: every metric found)")


def cmd_evaluate(args) -> int:
    from ..config import build_config, read_yaml
    from ..evaluation.evaluate import EvaluateConfig, evaluate

    data = read_yaml(args.config) if args.config else {}
    overrides = list(args.overrides)
    if args.models:
        data["models"] = args.models
    for key, value in (("images", args.images), ("output_dir", args.output), ("num_workers", args.workers),
                       ("max_images", args.max_images), ("crop", args.crop), ("levels", args.levels)):
        if value is not None:
            data[key] = value
    if args.random_backbones:
        data.setdefault("metrics", {})["random_backbones"] = True
    if args.track:
        data["track"] = True
    cfg = build_config(EvaluateConfig, data, overrides, source=args.config or "<command line>")
    ev = evaluate(cfg)
    print(summary(ev.results))
    points = len(ev.results["rate_points"])
    print(f"results in {ev.output_dir} ({ev.images} images x {points} rate points, "
          f"{ev.images * points / max(ev.seconds, 1e-9):.2f} img/s)")
    return 0


def summary(results: dict) -> str:
    """A small text table of an aggregate JSON."""
    r = results["results"]
    keys = [k for k in r if k not in ("encoding_time", "decoding_time", "estimated_bpp")]
    lines = ["  ".join(f"{k:>12}" for k in keys)]
    for i in range(len(r["bpp"])):
        cells = []
        for k in keys:
            v = r[k][i]
            cells.append(f"{'—':>12}" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:>12.5g}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def cmd_baselines(args) -> int:
    from ..evaluation.baselines import CODECS, BaselinesConfig, default_workers, run_baselines_job
    from ..errors import ConfigError

    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers: at least 1")
    cfg = BaselinesConfig(images=args.images, target_bpp=args.bpp, codecs=args.codecs or list(CODECS),
                          output_dir=args.output, max_images=args.max_images, crop=args.crop, vvc_preset=args.vvc_preset,
                          workers=args.workers or default_workers(),
                          learned_metrics=args.learned_metrics, random_backbones=args.random_backbones)
    outcome = run_baselines_job(cfg)
    print(outcome.table)
    print(f"results in {cfg.output_dir}: " + ", ".join(p.name for p in outcome.paths) + " (and rd-*.png)")
    return 0


def cmd_bd_rate(args) -> int:
    from ..errors import ResulicError
    from ..metrics.bd_rate import bd_rate, bd_table

    if args.against:
        if len(args.files) != 1:
            raise ResulicError("with --against give exactly one TEST file")
        print(bd_table(args.files[0], args.against, args.metric, args.method), end="")
        return 0
    if len(args.files) != 2:
        raise ResulicError("give ANCHOR TEST (two files), or TEST --against ANCHOR ...")
    anchor, test = args.files
    for metric in args.metric:
        r = bd_rate(anchor, test, metric, args.method)
        if math.isnan(r.value):
            print(f"{metric}: BD-rate n/a (the curves share no {metric} range)")
            continue
        print(f"{metric}: BD-rate {r.value:+.2f} % ({r.method}; overlap {r.overlap[0]:.4g}–{r.overlap[1]:.4g}, "
              f"{100 * r.overlap_fraction:.0f}% of the joint range)")
    return 0


def cmd_plot(args) -> int:
    from ..evaluation.plots import plot_all

    written = plot_all(args.files, args.output, args.metric)
    if not written:
        print("resulic: no metric to plot in these files", file=sys.stderr)
        return 2
    for p in written:
        print(p)
    return 0


def _os_errors_as_messages(command):
    """An unwritable output folder is a one-line error like any other bad input."""
    def run(args) -> int:
        from ..errors import ResulicError

        try:
            return command(args)
        except OSError as exc:
            raise ResulicError(f"{exc.filename or ''}: {exc.strerror or exc}") from None
    return run


COMMANDS = {name: _os_errors_as_messages(fn) for name, fn in
            {"evaluate": cmd_evaluate, "baselines": cmd_baselines, "bd-rate": cmd_bd_rate, "plot": cmd_plot}.items()}
