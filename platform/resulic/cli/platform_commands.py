"""``resulic train | sweep | promote``: the platform's jobs as subcommands (the same as
``jobs/train.py``, ``jobs/sweep.py`` and ``jobs/promote.py``); ``resulic ui``: the MLflow UI on the
local store."""

from __future__ import annotations


def add_parsers(sub) -> None:
    for name, help_text, example in (
        ("train", "train one stage on Ray Train (MLflow-tracked; the same run.name resumes)", "configs/train/stage1.yaml"),
        ("sweep", "Ray Tune + Optuna sweep over training configs (MLflow parent/child runs)", "configs/sweep/tiny.yaml"),
        ("promote", "register a sweep's best trial per rate band; move the champion alias on improvement",
         "configs/promote/tiny.yaml"),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        p.add_argument("--config", required=True, help=f"YAML, e.g. {example}")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (repeatable)")
    u = sub.add_parser("ui", help="the MLflow UI on the local store, on 127.0.0.1 (one server worker)",
                       description="Start the MLflow UI on a local store (mlflow server, one worker, bound to "
                                   "127.0.0.1), after pointing a moved store's artifact locations at its folder. "
                                   "Ctrl-C stops it.")
    u.add_argument("--tracking-uri", metavar="URI",
                   help="the store, a sqlite:/// URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    u.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default: 5000)")


def cmd_train(args) -> int:
    from ..config import load_config
    from ..services.storage import storage_from_environment
    from ..train.config import TrainConfig

    cfg = storage_from_environment(load_config(TrainConfig, args.config, args.overrides), "run.storage_path", args.config)
    from ..train.trainer import run_training  # torch and Ray: only once the config is whole

    outcome = run_training(cfg)
    print(f"run {outcome.run_name}: MLflow run {outcome.mlflow_run_id}; trained codec {outcome.model_dir}")
    return 0


def cmd_sweep(args) -> int:
    from ..tune.sweep import Sweep, results_table, run_sweep

    outcome = run_sweep(Sweep.load(args.config, args.overrides))
    print(results_table(outcome))
    print(f"MLflow parent run {outcome.parent_run_id}; best trial: {outcome.best['trial_id'] if outcome.best else 'none'}")
    return 0


def cmd_promote(args) -> int:
    from ..config import load_config
    from ..tune.promote import PromoteConfig, format_promotions, promote

    cfg = load_config(PromoteConfig, args.config, args.overrides)
    print(format_promotions(promote(cfg), cfg.model_name))
    return 0


def ui_argv(uri: str, port: int) -> list[str]:
    """``mlflow server`` for a local store: one worker (its default of several did not come up on 2
    busy cores), 127.0.0.1 only, artifacts of anything made through the UI beside the database."""
    import sys
    from pathlib import Path

    from ..services.tracking import ARTIFACT_FOLDER, sqlite_path

    return [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", uri,
            "--artifacts-destination", str(sqlite_path(uri).parent / ARTIFACT_FOLDER),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def cmd_ui(args) -> int:
    import os

    from ..services import tracking
    from ..errors import ResulicError

    if not 1 <= args.port <= 65535:
        raise ResulicError(f"--port {args.port}: a TCP port is 1..65535")
    uri = tracking.tracking_uri(args.tracking_uri)
    db = tracking.sqlite_path(uri)
    if db is None:
        raise ResulicError(f"{uri}: not a local store; a tracking server serves its own UI")
    if not db.is_file():
        raise ResulicError(f"no MLflow store at {db} (make run creates ./mlflow.db; --tracking-uri names another)")
    for old, new in tracking.relocate_store(uri):
        print(f"the store moved: artifact locations under {old} now point to {new}")
    argv = ui_argv(uri, args.port)
    print(f"MLflow UI: {tracking.training_view_url(f'http://127.0.0.1:{args.port}')} (Ctrl-C stops it)", flush=True)
    # The server's job runner (huey consumers for MLflow's GenAI jobs) is not needed for runs and models.
    os.execve(argv[0], argv, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    return 0  # not reached


COMMANDS = {"train": cmd_train, "sweep": cmd_sweep, "promote": cmd_promote, "ui": cmd_ui}
