"""Sweep training hyper-parameters with Ray Tune and Optuna, tracked as MLflow parent/child runs.
Same as `resulic sweep`.

    python jobs/sweep.py --config configs/sweep/tiny.yaml [--set search.num_samples=8 ...]

Running the same sweep name again resumes it (finished trials are kept, unfinished ones resume).
"""

from __future__ import annotations

import sys

from resulic.cli.commands import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
