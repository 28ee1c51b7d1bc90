"""The main job on the embedded defaults, the whole platform loop: a small sweep that fine-tunes
the shipped small-profile codec (Ray Tune + Optuna; every trial trains on Ray Train; MLflow parent
and child runs); the best trial promoted to the registry's champion only if it beats the current
champion (or the shipped codec) on held-out real files, else the shipped codec (or champion) kept;
then compress and decompress sample photos through real files with it: bpp, timings and PSNR.

    python jobs/main.py --config configs/main.yaml [--set key=value ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resulic.errors import ResulicError


def train_stages(train) -> str | None:
    """Stage 1, then stage 2 from it; returns the final trained-codec folder (None: no training)."""
    from resulic.config import load_config
    from resulic.services.storage import storage_from_environment
    from resulic.train.config import TrainConfig
    from resulic.train.trainer import run_training

    model = None
    for stage, path in ((1, train.stage1), (2, train.stage2)):
        if path is None:
            continue
        cfg = storage_from_environment(load_config(TrainConfig, path, train.overrides), "run.storage_path", path)
        print(f"training stage {stage}: {path} (run {cfg.run.name}; MLflow experiment {cfg.run.experiment})")
        outcome = run_training(cfg)
        model = outcome.model_dir
        print(f"stage {stage} done: {model}" + (" (resumed a finished run)" if outcome.resumed else ""))
    return model


def sweep_and_promote(cfg) -> tuple[str, str]:
    """The sweep, then the gated promotion (resulic/tune/gate.py): the best trial replaces the
    champion, or with none the shipped codec, only when it is better on held-out real files.
    Returns what to use and serve (the champion's models:/ URI, or the shipped codec's folder)
    and the folder of the trials' runs (each holds <run>/model, a trained-codec folder)."""
    from tqdm import tqdm

    from resulic.config import load_config
    from resulic.train.config import storage_root
    from resulic.tune.gate import heldout_images
    from resulic.tune.promote import PromoteConfig, gated_promotion
    from resulic.tune.sweep import Sweep, results_table, run_sweep

    sweep = Sweep.load(cfg.sweep)
    print(f"sweep {sweep.config.name}: {sweep.config.search.num_samples} trial(s), stages {', '.join(sweep.config.stages)}")
    outcome = run_sweep(sweep)
    print(results_table(outcome))
    trials = f"{storage_root(sweep.config.storage_path)}/{sweep.config.name}/runs"
    promotion = load_config(PromoteConfig, cfg.promote)
    images = heldout_images(cfg.heldout)
    with tqdm(total=2 * len(images), desc="held-out check", unit="img", file=sys.stderr) as bar:
        gated = gated_promotion(promotion, images, bar)
    print(gated.report(promotion.model_name))
    return gated.model, trials


def where_things_are(model: str | None, codec, output_dir: str, trials: str | None = None,
                     tracking_uri: str | None = None) -> str:
    """The job's last lines: the codec it used and where its folder is, where the trained codecs
    are, the command that opens the MLflow UI on these runs, and where the outputs are."""
    import os

    from resulic.services import registry, tracking
    from resulic.codec import shipped

    experiment_id = None
    if registry.is_registry_uri(model):
        folder = registry.trained_folder(model, tracking_uri)
        version = registry.resolve(model, tracking_uri)
        codec_line = f"{model} (version {version.version}, MLflow run {version.run_id}); its folder: {folder or version.source}"
        experiment_id = tracking.client(tracking.tracking_uri(tracking_uri)).get_run(version.run_id).info.experiment_id
    elif model and Path(model).is_dir():
        shipped_folder = shipped.folder_for_fingerprint(codec.fingerprint)
        codec_line = (f"the shipped codec, {os.path.relpath(shipped_folder)}" if shipped_folder is not None
                      and Path(model).resolve() == shipped_folder.resolve() else str(Path(model).resolve()))
    elif model and Path(model).is_file():
        codec_line = f"built from {model} (untrained: no folder)"
    else:
        folder = shipped.folder_for_fingerprint(codec.fingerprint)
        codec_line = (f"the shipped codec, {os.path.relpath(folder)}" if folder is not None
                      else f"{model or os.environ.get('RESULIC_MODEL') or 'tiny'} (embedded profile: no folder)")
    uri = tracking.tracking_uri(tracking_uri)
    if tracking.sqlite_path(uri) is not None:
        exe = Path(sys.executable).parent / "resulic"  # mlflow server, one worker, on 127.0.0.1 only
        exe_name = os.path.relpath(exe) if exe.is_file() and not os.path.relpath(exe).startswith("..") else "resulic"
        ui = f"{exe_name} ui --tracking-uri {uri}\n                 then open {tracking.training_view_url('http://127.0.0.1:5000', experiment_id)}"
    else:
        ui = f"open {tracking.training_view_url(uri, experiment_id)}"
    lines = ["", "where things are:", f"  codec:         {codec_line}"]
    if trials:
        lines.append(f"  codec folders: {trials}/<run>/model (one trained codec per trial)")
    lines += [f"  MLflow UI:     {ui}",
              f"  outputs:       {output_dir} (.rslc files, decoded PNGs, results.json; served/: the same over HTTP)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/main.yaml", help="job YAML (default: configs/main.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set max_images=2 (repeatable)")
    args = parser.parse_args(argv)

    from resulic.services.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads()

    from tqdm import tqdm

    from resulic.config import MainJobConfig, load_config
    from resulic.services.registry import open_codec
    from resulic.evaluation.results import write_results
    from resulic.evaluation.roundtrip import format_table, load_inputs, results_json, roundtrip
    try:
        cfg = load_config(MainJobConfig, args.config, args.overrides)
        items = load_inputs(cfg.images, cfg.max_images, cfg.max_side)  # bad input fails before any training
        trials = None
        if cfg.model:
            model = cfg.model
        elif cfg.sweep:
            model, trials = sweep_and_promote(cfg)
        else:
            model = train_stages(cfg.train)
        codec = open_codec(model)
        print(f"model {codec.fingerprint.hex()} ({codec.config.backbone.profile}, rate point "
              f"{codec.config.rate_point.name}); {len(items)} image(s) -> {cfg.output_dir}")
        with tqdm(total=len(items), desc="round trip", unit="img", file=sys.stderr) as bar:
            rows = roundtrip(codec, items, cfg.output_dir, progress=bar)
        print(format_table(rows))
        write_results(Path(cfg.output_dir, "results.json"),
                      results_json(rows, f"ResULIC {codec.config.rate_point.name} ({codec.fingerprint.hex()})"))
        if cfg.serve:
            from serve.demo import served_model, serve_and_roundtrip

            print(serve_and_roundtrip(served_model(model, codec, cfg.output_dir), items, Path(cfg.output_dir, "served"), cfg.output_dir))
        print(where_things_are(model, codec, cfg.output_dir, trials))
    except ResulicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write to {cfg.output_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
