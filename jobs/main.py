"""The main job on the embedded defaults: a short stage 1 then stage 2 of the tiny profile on
sample photos (Ray Train, MLflow), then compress and decompress sample photos through real files
with the trained codec and print bpp, encode/decode time and PSNR.

    python jobs/main.py --config configs/main.yaml [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resulic.errors import ResulicError


def train_stages(train) -> str | None:
    """Stage 1, then stage 2 from it; returns the final trained-codec folder (None: no training)."""
    from resulic.config import load_config
    from resulic.train.config import TrainConfig
    from resulic.train.trainer import run_training

    model = None
    for stage, path in ((1, train.stage1), (2, train.stage2)):
        if path is None:
            continue
        cfg = load_config(TrainConfig, path, train.overrides)
        print(f"training stage {stage}: {path} (run {cfg.run.name}; MLflow experiment {cfg.run.experiment})")
        outcome = run_training(cfg)
        model = outcome.model_dir
        print(f"stage {stage} done: {model}" + (" (resumed a finished run)" if outcome.resumed else ""))
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/main.yaml", help="job YAML (default: configs/main.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set max_images=2 (repeatable)")
    args = parser.parse_args(argv)

    from resulic.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads()

    from tqdm import tqdm

    from resulic.codec.store import resolve_codec
    from resulic.config import MainJobConfig, load_config
    from resulic.images import write_atomic
    from resulic.roundtrip import format_table, load_inputs, roundtrip
    try:
        cfg = load_config(MainJobConfig, args.config, args.overrides)
        model = cfg.model or train_stages(cfg.train)
        codec = resolve_codec(model)
        items = load_inputs(cfg.images, cfg.max_images, cfg.max_side)
        print(f"model {codec.fingerprint.hex()} ({codec.config.backbone.profile}, rate point "
              f"{codec.config.rate_point.name}); {len(items)} image(s) -> {cfg.output_dir}")
        with tqdm(total=len(items), desc="round trip", unit="img", file=sys.stderr) as bar:
            rows = roundtrip(codec, items, cfg.output_dir, progress=bar)
        print(format_table(rows))
        write_atomic(Path(cfg.output_dir, "results.json"), (json.dumps([r.as_dict() for r in rows], indent=2) + "\n").encode())
    except ResulicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write to {cfg.output_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"files, decoded PNGs and results.json are in {cfg.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
