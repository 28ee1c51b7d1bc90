"""``resulic train | sweep | promote``: the platform's jobs as subcommands (the same as
``jobs/train.py``, ``jobs/sweep.py`` and ``jobs/promote.py``)."""

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


def cmd_train(args) -> int:
    from ..config import load_config
    from ..train.config import TrainConfig
    from ..train.trainer import run_training

    outcome = run_training(load_config(TrainConfig, args.config, args.overrides))
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


COMMANDS = {"train": cmd_train, "sweep": cmd_sweep, "promote": cmd_promote}
