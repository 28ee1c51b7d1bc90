"""RD evaluation job: trained codecs (folders or models:/ URIs) over an image folder, through
real files, on Ray; CompressAI-format JSON, RD plots, MLflow when tracking is on.

    python jobs/evaluate.py --config configs/evaluate.yaml [--set key=value ...]
"""

from __future__ import annotations

import argparse
import sys

from resulic.errors import ResulicError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/evaluate.yaml", help="job YAML (default: configs/evaluate.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set num_workers=2 (repeatable)")
    args = parser.parse_args(argv)

    from resulic.services.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads()
    from resulic.config import load_config
    from resulic.evaluation.evaluate import EvaluateConfig, evaluate
    from resulic.cli.evaluation_commands import summary

    from resulic.services.runtime import exit_status, stop_on_signals

    try:
        with stop_on_signals():
            cfg = load_config(EvaluateConfig, args.config, args.overrides)
            ev = evaluate(cfg)
    except KeyboardInterrupt as exc:  # Ctrl-C: 130, SIGTERM: 143; no results.json is written
        print("interrupted", file=sys.stderr)
        return exit_status(exc)
    except ResulicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(summary(ev.results))
    print(f"results.json, per_image/, rd-*.png and the files are in {ev.output_dir}")
    if ev.mlflow_run_id:
        print(f"MLflow run {ev.mlflow_run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
