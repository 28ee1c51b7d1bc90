"""Train one stage of a ResULIC codec on Ray Train, tracked in MLflow. Same as `resulic train`.

    python jobs/train.py --config configs/train/stage1.yaml [--set key=value ...]

Runs on a local Ray it starts itself, or on a cluster:
    ray job submit --working-dir . -- python jobs/train.py --config configs/train/stage1.yaml

Submitting the same run.name again (same run.storage_path) resumes it from its last checkpoint.
"""

from __future__ import annotations

import sys

from resulic.cli.commands import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
