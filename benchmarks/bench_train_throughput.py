"""Training throughput of the small profile: steps per CPU-hour of every stage, with PyTorch's
native convolutions (the kernels every process used before) and with oneDNN, each in a fresh
process.

    python benchmarks/bench_train_throughput.py [--steps 4] [--threads 1] [--stage warmup pixel ...]

A step is what the training loop does per batch, in plain PyTorch (no Ray: bench_train.py
measures Ray's share): forward with every loss term of the stage, backward, optimiser steps. The
batches are the stage configs' own (configs/train/*-small*.yaml): random pixels with their
TAEF2 latents, the small profile's real weights (shipped variable compressor, bundled prior).
Each number is the median of ``--steps`` steps after two warm-up steps; steps per CPU-hour =
3600 / (seconds per step x threads). A process that dies (a signal) is reported as such.

| stage | what one step does |
|---|---|
| warmup | compressor only: λ_R·R + ‖z_c − z_0‖² on 16 latent crops of 256 px (the shipped recipe) |
| pixel | the same + ‖TAEF2-Dec(z_c) − x‖² on a 128-px window of 2 crops (stage1-small-pixel.yaml) |
| stage0 | the prior's ε-loss, 8 crops of 128 px (stage0-small.yaml) |
| stage1 | ε-loss through ControlNet-XS + rate + guide, 8 crops of 128 px (stage1-small.yaml) |
| stage2 | stage 1 + TAEF2-decoded x̂0 against x: MSE + LPIPS, 4 crops of 128 px |
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

STAGES = ("warmup", "pixel", "stage0", "stage1", "stage2")
# stage -> (batch, crop px)
BATCHES = {"warmup": (16, 256), "pixel": (16, 256), "stage0": (8, 128), "stage1": (8, 128), "stage2": (4, 128)}
KERNELS = (("native", "0"), ("oneDNN", "1"))


def measure(stage: str, steps: int) -> dict:
    """In this process: the median step time of ``stage``."""
    import torch

    from resulic.codec.shipped import folder_for
    from resulic.config import ModelConfig, load_config
    from resulic.models.backbone import load_backbone
    from resulic.train.checkpoint import parts_from_folder
    from resulic.train.config import LossConfig
    from resulic.train.model import TrainableCodec
    from resulic.train.perceptual import build_lpips
    from resulic.train.prior import TrainablePrior

    torch.manual_seed(0)
    batch, crop = BATCHES[stage]
    config = load_config(ModelConfig, "configs/model/small-variable.yaml")
    backbone = load_backbone(config.backbone)
    images = torch.rand(batch, 3, crop, crop)
    with torch.no_grad():
        latents = backbone.encode(images)
    if stage == "stage0":
        model = TrainablePrior(backbone, 500)
        backbone.unet.requires_grad_(True)
    else:
        compressor, cdm = parts_from_folder(folder_for("variable"), config, backbone)
        loss = {
            "warmup": LossConfig(lambda_eps=0),
            "pixel": LossConfig(lambda_eps=0, lambda_guide=0.25, lambda_pixel=30.0),
            "stage1": LossConfig(),
            "stage2": LossConfig(),
        }[stage]
        lpips = build_lpips(None)[0] if stage == "stage2" else None
        model = TrainableCodec(config, backbone, compressor, cdm, 2 if stage == "stage2" else 1, loss, 0.3, lpips)
    model.train()
    params = [p for group in model.parameter_groups().values() for p in group]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        terms = model(images, [""] * batch, latents)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times[2:])}


def run_child(stage: str, kernels: str, steps: int, threads: int) -> dict:
    env = {**os.environ, "RESULIC_ONEDNN": kernels, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, __file__, "--child", stage, "--steps", str(steps)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        reason = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        return {"error": reason, "tail": (done.stderr.strip().splitlines() or [""])[-1][:120]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--steps", type=int, default=4, help="measured steps per stage and kernel family (after 2 warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each measuring process")
    p.add_argument("--stage", nargs="+", choices=STAGES, default=list(STAGES), help="stages to measure")
    p.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.threads < 1:
        p.error("--steps and --threads must be at least 1")
    if args.child:
        print(json.dumps(measure(args.child, args.steps)))
        return 0
    print("| stage | batch x crop | native s/step | oneDNN s/step | native steps/CPU-h | oneDNN steps/CPU-h | ratio |")
    print("|---|---|---|---|---|---|---|")
    for stage in args.stage:
        cells = {name: run_child(stage, value, args.steps, args.threads) for name, value in KERNELS}
        batch, crop = BATCHES[stage]
        row = [stage, f"{batch} x {crop}"]
        per_hour = {}
        for name, _ in KERNELS:
            out = cells[name]
            if "error" in out:
                row.append(f"failed ({out['error']}: {out['tail']})")
            else:
                row.append(f"{out['seconds']:.2f}")
                per_hour[name] = 3600 / (out["seconds"] * args.threads)
        row += [f"{per_hour[n]:.0f}" if n in per_hour else "-" for n, _ in KERNELS]
        row.append(f"{per_hour['oneDNN'] / per_hour['native']:.1f}x" if len(per_hour) == 2 else "-")
        print("| " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
