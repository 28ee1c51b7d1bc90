"""Train one stage of a ResULIC codec on Ray Train, tracked in MLflow.

    python jobs/train.py --config configs/train/stage1.yaml [--set key=value ...]

Runs on a local Ray it starts itself, or on a cluster:
    ray job submit --working-dir . -- python jobs/train.py --config configs/train/stage1.yaml

Submitting the same run.name again (same run.storage_path) resumes it from its last checkpoint.
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training YAML, e.g. configs/train/stage1.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optim.steps=100 (repeatable)")
    args = parser.parse_args(argv)

    from resulic.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads()
    from resulic.config import load_config
    from resulic.errors import ResulicError
    from resulic.train.config import TrainConfig
    from resulic.train.trainer import run_training

    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        outcome = run_training(cfg)
    except ResulicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"run {outcome.run_name}: MLflow run {outcome.mlflow_run_id}; checkpoint {outcome.checkpoint_path}")
    if outcome.model_dir:
        print(f"trained codec: {outcome.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
