"""Evaluation throughput: images per second with the work in this process (no Ray), and over one
and two Ray workers (actors), on the same images, in the same process.

    python benchmarks/bench_evaluate.py [--images 8] [--repeats 3] [--workers 1 2] [--crop 0] [--device cpu]

Images: ../shared/datasets/kodak when present (768x512), else scikit-image's samples. Every run
is the real pipeline (encode -> .rslc file -> decode -> PNG -> all metrics incl. FID/KID patch
features); metric backbones are seeded random (same networks, same cost as the real weights).
Throughput = images / wall time of the image work (model and metric loading excluded, they are
reported separately); medians of --repeats runs; the ratio is against one Ray worker.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "datasets" / "kodak"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="0 = in-process, no Ray")
    parser.add_argument("--crop", type=int, default=0, help="center crop (0: native size)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from resulic.services.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads()
    import ray
    import torch

    from resulic.evaluation.evaluate import EvaluateConfig, evaluate

    images = str(KODAK) if KODAK.is_dir() else "samples"
    label = "Kodak 768x512" if KODAK.is_dir() else "scikit-image samples"
    if args.crop:
        label += f", center crop {args.crop}"
    cpus = os.cpu_count() or 1
    need = max(args.workers)
    if need:
        ray.init(num_cpus=max(need, min(cpus, need)), num_gpus=None if args.gpus_per_worker else 0,
                 include_dashboard=False, log_to_driver=False)
    rows = []
    for workers in args.workers:
        work, walls = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = EvaluateConfig(images=images, max_images=args.images, crop=args.crop or None, output_dir=tmp,
                                     num_workers=workers, device=args.device, gpus_per_worker=args.gpus_per_worker,
                                     metrics={"random_backbones": True})
                t0 = time.perf_counter()
                ev = evaluate(cfg, progress=False)
                walls.append(time.perf_counter() - t0)
                work.append(ev.seconds)
        n = ev.images
        rows.append((workers, n, statistics.median(work), statistics.median(walls)))
        print(f"workers={workers}: {n / statistics.median(work):.3f} img/s (work {statistics.median(work):.1f} s, "
              f"wall incl. loading {statistics.median(walls):.1f} s)", file=sys.stderr)
    if ray.is_initialized():
        ray.shutdown()

    base = next((r for r in rows if r[0] == 1), rows[0])
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU ({cpus} cores)"
    print(f"\n{label}, {rows[0][1]} images, tiny profile, all metrics (random backbones), {device}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')}, median of {args.repeats}\n")
    print("| workers | images/s | image work (s) | wall incl. model + metric loading (s) | vs 1 Ray worker |")
    print("|---|---|---|---|---|")
    for workers, n, w, wall in rows:
        name = "in-process (no Ray)" if workers == 0 else f"{workers} Ray actor{'s' if workers > 1 else ''}"
        print(f"| {name} | {n / w:.3f} | {w:.1f} | {wall:.1f} | {(n / w) / (base[1] / base[2]):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
