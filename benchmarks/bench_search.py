"""Search benchmark: trials TPE needs to reach a target on a cheap proxy objective, against random
search, over several seeds. No training: the proxy stands in for a sweep's scalar objective.

    python benchmarks/bench_search.py [--seeds 10] [--max-trials 200]

The space is configs/sweep/tiny.yaml's (λ_R log-uniform, N_r conditional on λ_R, γ, S), sampled
by the same define-by-run code the sweep uses. The proxy is a smooth rate-distortion Lagrangian
shaped like the published trends (RESULIC.md §3.7, §4):

    bpp(λ)        = 0.12 · λ^-0.8
    distortion    = 0.08 + 0.2·bpp(λ)^0.5 ... (lower rate, more distortion: 0.02/bpp^0.35 term)
                    + a penalty for N_r away from the best N_r for that λ (≈ 50·λ^0.75)
                    + 0.004 for γ = constant + 0.003·(S − 3)²
    objective     = distortion + β · bpp,  β = 1

The target is the global minimum (dense grid) plus 1 % of the objective's range over the space.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def proxy(values: dict) -> float:
    lam = values["loss.lambda_rate"]
    n_r = values["model.rate_point.residual_steps"]
    bpp = 0.12 * lam**-0.8
    best_nr = 50 * lam**0.75
    distortion = 0.02 / bpp**0.35 + 0.15 * math.log(n_r / best_nr) ** 2
    distortion += 0.004 * (values["model.rate_point.gamma"] == "constant")
    distortion += 0.003 * (values["model.rate_point.sampling_steps"] - 3) ** 2
    return distortion + 1.0 * bpp


def grid_bounds(space) -> tuple[float, float]:
    """Min and max of the proxy over a dense grid of the (conditional) space."""
    values = []
    lam_spec = space.params["loss.lambda_rate"]
    for i in range(200):
        lam = lam_spec.low * (lam_spec.high / lam_spec.low) ** (i / 199)
        lo, hi = space._range("model.rate_point.residual_steps", {"loss.lambda_rate": lam})
        for j in range(60):
            n_r = lo + (hi - lo) * j / 59
            for gamma in ("constant", "time_varying"):
                for s in range(2, 6):
                    values.append(proxy({"loss.lambda_rate": lam, "model.rate_point.residual_steps": n_r,
                                         "model.rate_point.gamma": gamma, "model.rate_point.sampling_steps": s}))
    return min(values), max(values)


def trials_to_target(space, sampler, target: float, max_trials: int) -> int:
    import optuna

    study = optuna.create_study(sampler=sampler, direction="minimize")
    for n in range(1, max_trials + 1):
        trial = study.ask()
        derived = space.suggest(trial)
        values = {**space.config_values(trial.params), **derived}
        value = proxy(values)
        study.tell(trial, value)
        if value <= target:
            return n
    return max_trials + 1  # not reached


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--max-trials", type=int, default=200)
    parser.add_argument("--config", default=str(REPO / "configs" / "sweep" / "tiny.yaml"))
    args = parser.parse_args(argv)

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from resulic.config import load_config
    from resulic.tune.space import SearchSpace
    from resulic.tune.sweep import SweepConfig
    from resulic.train.config import TrainConfig

    cfg = load_config(SweepConfig, args.config)
    space = SearchSpace(cfg.space, TrainConfig(), source="space")
    low, high = grid_bounds(space)
    target = low + 0.01 * (high - low)
    tpe, rnd = [], []
    for seed in range(args.seeds):
        tpe.append(trials_to_target(space, optuna.samplers.TPESampler(seed=seed, multivariate=True), target, args.max_trials))
        rnd.append(trials_to_target(space, optuna.samplers.RandomSampler(seed=seed), target, args.max_trials))
    print(f"proxy objective on {Path(args.config).name}'s space; target {target:.4f} "
          f"(min {low:.4f} + 1 % of range {high - low:.4f}); {args.seeds} seeds, cap {args.max_trials} trials")
    print(f"{'sampler':<8} {'median':>7} {'mean':>7} {'min':>5} {'max':>5}  per seed")
    for name, runs in (("TPE", tpe), ("random", rnd)):
        print(f"{name:<8} {statistics.median(runs):>7.1f} {statistics.mean(runs):>7.1f} {min(runs):>5} {max(runs):>5}  {runs}")
    print(f"TPE / random (medians): {statistics.median(tpe) / statistics.median(rnd):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
