"""Register the best trial of a sweep per rate band in the MLflow registry and move the champion
alias when it beats the current champion (or when forced). Same as `resulic promote`.

    python jobs/promote.py --config configs/promote/tiny.yaml [--set force=true]

Then: resulic compress photo.png --model models:/resulic@champion
"""

from __future__ import annotations

import sys

from resulic.cli.commands import main

if __name__ == "__main__":
    sys.exit(main(["promote", *sys.argv[1:]]))
