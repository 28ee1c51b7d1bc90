"""Register the best trial of a sweep per rate band in the MLflow registry and move the champion
alias when it beats the current champion (or when forced).

    python jobs/promote.py --config configs/promote/tiny.yaml [--set force=true]

Then: resulic compress photo.png --model models:/resulic@champion
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="promotion YAML, e.g. configs/promote/tiny.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key, e.g. --set force=true (repeatable)")
    args = parser.parse_args(argv)

    from resulic.config import load_config
    from resulic.errors import ResulicError
    from resulic.tune.promote import PromoteConfig, format_promotions, promote

    try:
        cfg = load_config(PromoteConfig, args.config, args.overrides)
        print(format_promotions(promote(cfg), cfg.model_name))
    except ResulicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
