"""Training benchmark: the per-worker step under Ray Train against the same step as plain PyTorch
in this process (Ray's overhead), and one against two workers.

    python benchmarks/bench_train.py [--steps 24] [--batch 2]

Every measurement is the median step time over the steps after the first 4 (warm-up). The plain
loop uses the same TrainableCodec, optimisers, batch size and per-row transform (read the PNG,
random crop), in this process and synchronously; the Ray runs get those rows from Ray Data, run
DDP across workers and include everything the loop does per step except checkpoints (one at the
end). The step time under Ray comes from the loop's own
``step_seconds`` metric in MLflow. Workers use one torch thread each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
WARMUP = 4


def plain_step_seconds(steps: int, batch: int) -> float:
    from resulic.codec import Codec
    from resulic.data.dataset import CropAndDrop, materialize_samples
    from resulic.train.checkpoint import fresh_parts
    from resulic.train.config import LossConfig
    from resulic.train.model import TrainableCodec

    codec = Codec.build()
    compressor, cdm = fresh_parts(codec.config, codec.backbone)
    model = TrainableCodec(codec.config, codec.backbone, compressor, cdm, 1, LossConfig(), 6.0).train()
    groups = model.parameter_groups()
    opts = [torch.optim.AdamW(groups["main"], lr=1e-4), torch.optim.AdamW(groups["aux"], lr=1e-3)]
    # The same per-row transform Ray Data runs (read the PNG, random crop, caption dropout), here
    # in-process and synchronously, so that the comparison is of the same work.
    records = materialize_samples(Path(tempfile.mkdtemp()) / "samples")[:3]
    transform = CropAndDrop(128, 0.3)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        rows = [transform({"path": records[rng.integers(len(records))].path, "caption": ""}) for _ in range(batch)]
        images = torch.from_numpy(np.stack([r["image"] for r in rows])).permute(0, 3, 1, 2).float().div(255)
        terms = model(images, [""] * batch)
        for o in opts:
            o.zero_grad(set_to_none=True)
        terms["total"].backward()
        for o in opts:
            o.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[WARMUP:])


def ray_step_seconds(workers: int, steps: int, batch: int, folder: Path) -> float:
    from mlflow.tracking import MlflowClient

    from resulic.config import build_config
    from resulic.train.config import TrainConfig
    from resulic.train.trainer import run_training

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cfg = build_config(TrainConfig, {
        "data": {"validation_images": 1, "validation_size": 64},
        "optim": {"steps": steps, "batch_size": batch},
        "workers": {"num_workers": workers},
        "run": {"name": f"bench-{workers}w", "storage_path": str(folder / "ray_results"), "tracking_uri": uri,
                "experiment": "bench", "checkpoint_every": steps, "log_every": steps},
    })
    outcome = run_training(cfg)
    history = MlflowClient(uri).get_metric_history(outcome.mlflow_run_id, "step_seconds")
    return statistics.median(m.value for m in sorted(history, key=lambda m: m.step)[WARMUP:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch", type=int, default=2, help="per worker")
    args = parser.parse_args(argv)

    from resulic.services.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads()
    # The plain loop runs before and after the Ray runs: on a shared machine the load drifts, and
    # the two values show by how much (the ratios use their mean).
    plain_before = plain_step_seconds(args.steps, args.batch)
    from resulic.services import cluster

    cluster.ensure_ray(min_cpus=2)  # room for two workers and Ray Data in the same local cluster
    with tempfile.TemporaryDirectory() as tmp:
        one = ray_step_seconds(1, args.steps, args.batch, Path(tmp))
        two = ray_step_seconds(2, args.steps, args.batch, Path(tmp))
    import ray

    ray.shutdown()
    plain_after = plain_step_seconds(args.steps, args.batch)
    plain = (plain_before + plain_after) / 2
    print(f"plain loop before/after the Ray runs: {plain_before:.3f} / {plain_after:.3f} s/step")
    rows = [
        ("plain PyTorch, 1 process", 1, plain, args.batch / plain),
        ("Ray Train, 1 worker", 1, one, args.batch / one),
        ("Ray Train, 2 workers (DDP)", 2, two, 2 * args.batch / two),
    ]
    print(f"tiny profile, stage 1, 128-px crops, batch {args.batch} per worker, median of {args.steps - WARMUP} steps")
    print(f"{'setup':<28} {'workers':>7} {'s/step':>8} {'img/s':>7} {'step vs plain':>13}")
    for name, w, sec, ips in rows:
        print(f"{name:<28} {w:>7} {sec:>8.3f} {ips:>7.2f} {sec / plain:>12.2f}x")
    print(f"Ray overhead per worker (1 worker): {100 * (one / plain - 1):+.1f} % of the plain step time")
    print(f"throughput, 2 workers vs 1: {(2 / two) / (1 / one):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
