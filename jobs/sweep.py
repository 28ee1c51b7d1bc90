"""Sweep training hyper-parameters with Ray Tune and Optuna, tracked as MLflow parent/child runs.

    python jobs/sweep.py --config configs/sweep/tiny.yaml [--set search.num_samples=8 ...]

Running the same sweep name again resumes it (finished trials are kept, unfinished ones resume).
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="sweep YAML, e.g. configs/sweep/tiny.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a sweep key, e.g. --set search.num_samples=8 (repeatable)")
    args = parser.parse_args(argv)

    from resulic.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads()
    from resulic.errors import ResulicError
    from resulic.tune.sweep import Sweep, results_table, run_sweep

    try:
        sweep = Sweep.load(args.config, args.overrides)
        outcome = run_sweep(sweep)
    except ResulicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(results_table(outcome))
    best = outcome.best
    print(f"MLflow parent run {outcome.parent_run_id}; best trial: {best['trial_id'] if best else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
