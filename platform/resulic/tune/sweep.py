"""A sweep: Ray Tune + Optuna over training configs, one MLflow parent run with a child per trial.

Each trial is a *driver function* (the current Ray API: Train runs inside Tune trials, not
``Tuner(trainer)``): it turns the sampled values into the stage configs, runs them with
``run_training`` (stage 2 from the trial's own stage 1), and forwards every validation report
to Tune with the objective added, so ASHA can stop weak trials after a validation. The parent
run stays active until ``Tuner.fit`` returns (MLflow needs an active parent for children made in
other processes). A stopped sweep resumes from its Tune folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ..services import cluster, tracking
from ..services.storage import storage_from_environment
from ..config import StrictModel, build_config, load_config
from ..errors import ConfigError, ResulicError
from ..train.config import TrainConfig, storage_root
from .objective import BPP_METRIC, ObjectiveConfig, pareto_front
from .space import SearchSpace

SWEEP_TAG = "resulic.sweep"


class SearchConfig(StrictModel):
    algorithm: Literal["tpe", "random"] = "tpe"
    num_samples: int = Field(4, ge=1)
    seed: int = 0
    max_concurrent: int | None = Field(None, ge=1, description="null = as many as the cluster's GPUs (CPUs) allow")
    seed_published: bool = Field(True, description="evaluate the published (λ_R, N_r) points first, where inside")
    points: list[dict[str, Any]] = Field(
        default_factory=list, description="starting points to evaluate first (dotted keys -> values), before the published ones"
    )


class SchedulerConfig(StrictModel):
    asha: bool = Field(True, description="stop weak trials early (scalar objective only)")
    grace_period: int = Field(1, ge=1, description="validations before a trial may be stopped")
    reduction_factor: int = Field(2, ge=2)


class SweepConfig(StrictModel):
    name: str = "sweep-tiny"
    # The training configs of the stages each trial runs, in order (stage 2 from the trial's stage 1).
    stages: list[str] = Field(default_factory=lambda: ["configs/train/stage1.yaml"])
    trial_overrides: list[str] = Field(default_factory=list, description="--set applied to every stage")
    space: dict = Field(default_factory=dict)
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    storage_path: str = "ray_results"
    experiment: str = "resulic-sweeps"
    tracking_uri: str | None = None

    @field_validator("stages")
    @classmethod
    def _one_or_two(cls, v: list[str]) -> list[str]:
        if not 1 <= len(v) <= 2:
            raise ValueError("one stage-1 config, optionally followed by a stage-2 config")
        return v


@dataclass
class Sweep:
    """A validated sweep: its config, the stage configs and the search space."""

    config: SweepConfig
    stages: list[TrainConfig]
    space: SearchSpace | None  # None inside a trial, which only builds its stage configs

    @classmethod
    def load(cls, path: str | Path, overrides=()) -> "Sweep":
        cfg = storage_from_environment(load_config(SweepConfig, path, overrides), "storage_path", str(path))
        return cls.from_config(cfg)

    @classmethod
    def from_config(cls, cfg: SweepConfig) -> "Sweep":
        stages = [load_config(TrainConfig, p, cfg.trial_overrides) if i == 0 else None for i, p in enumerate(cfg.stages)]
        if stages[0].stage != 1:
            raise ConfigError(f"stages[0]: {cfg.stages[0]} is not a stage-1 config")
        if len(cfg.stages) == 2:
            # init_from is set per trial; load with a placeholder so validation passes.
            second = load_config(TrainConfig, cfg.stages[1], [*cfg.trial_overrides, "init_from=<trial stage 1>"])
            if second.stage != 2:
                raise ConfigError(f"stages[1]: {cfg.stages[1]} is not a stage-2 config")
            stages[1] = second
        stages = [_absolute_paths(stage) for stage in stages]
        space = SearchSpace(cfg.space, stages[0], source="space")
        if len(stages) == 2:
            SearchSpace(cfg.space, stages[1], source="space")  # every key must fit both stages
        if cfg.objective.mode == "pareto" and cfg.scheduler.asha:
            cfg = cfg.model_copy(update={"scheduler": cfg.scheduler.model_copy(update={"asha": False})})
        return cls(cfg, stages, space)

    def trial_configs(self, values: dict, trial_name: str) -> list[TrainConfig]:
        """The trial's stage configs: sampled values, its own run names, the sweep's storage and store."""
        storage = storage_root(self.config.storage_path)
        common = [
            f"run.storage_path={storage}/{self.config.name}/runs",
            f"run.experiment={self.config.experiment}",
            f"run.tracking_uri={tracking.tracking_uri(self.config.tracking_uri)}",
        ]
        out = [SearchSpace.apply(self.stages[0], values, [*common, f"run.name={trial_name}-s1"])]
        if len(self.stages) == 2:
            out.append(SearchSpace.apply(
                self.stages[1], values, [*common, f"run.name={trial_name}-s2", f"init_from={trial_name}-s1"]
            ))
        return out


def _absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """Local paths made absolute in the driver: a trial runs in another working folder."""
    updates = []
    if cfg.data.source != "samples" and "://" not in cfg.data.source and Path(cfg.data.source).exists():
        updates.append(f"data.source={Path(cfg.data.source).resolve()}")
    backbone = cfg.model.backbone  # type: ignore[union-attr]
    if backbone.profile == "small" and backbone.source not in ("bundled", "random") and Path(backbone.source).exists():
        updates.append(f"model.backbone.source={Path(backbone.source).resolve()}")
    if not updates:
        return cfg
    return build_config(TrainConfig, cfg.model_dump(mode="json"), updates, source="sweep stage")


def _report_callback(objective: ObjectiveConfig):
    from ray.tune.integration.ray_train import TuneReportCallback

    class ObjectiveReport(TuneReportCallback):
        """Tune's Train->Tune bridge, with the sweep's objective added to each report."""

        def after_report(self, run_context, metrics, checkpoint):
            first = dict(metrics[0])
            value = objective.value(first)
            if value is not None:
                first["objective"] = value
            super().after_report(run_context, [first, *metrics[1:]], checkpoint)

    return ObjectiveReport()


def trial_driver(values: dict, sweep: dict, stages: list[dict], parent_run_id: str) -> None:
    """One trial: its stages on Ray Train, in a child MLflow run per stage."""
    import ray.tune

    from ..services.runtime import configure_threads, quiet_libraries
    from ..train.trainer import run_training

    quiet_libraries()
    configure_threads()
    # The stage configs come resolved from the sweep's driver: a trial runs in another folder.
    config = SweepConfig.model_validate(sweep)
    plan = Sweep(config, [TrainConfig.model_validate(s) for s in stages], space=None)
    trial = ray.tune.get_context().get_trial_id()
    for cfg in plan.trial_configs(SearchSpace.config_values(values), f"{plan.config.name}-{trial}"):
        tags = {"mlflow.parentRunId": parent_run_id, SWEEP_TAG: plan.config.name, "trial_id": trial}
        run_training(cfg, extra_tags=tags, callbacks=[_report_callback(plan.config.objective)])


@dataclass
class SweepOutcome:
    parent_run_id: str
    rows: list[dict]  # one per trial: id, values, metrics, objective, child runs
    front: list[int]  # indices into rows
    best: dict | None


def run_sweep(sweep: Sweep) -> SweepOutcome:
    # torch before Optuna and Ray Tune: a sweep submitted as a job to a local two-node cluster
    # that loaded it later died with "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so"
    # (likely the same cause as its replaced working folder, docs/cluster.md; loading it first
    # costs nothing, the trials need it anyway).
    import torch  # noqa: F401
    import optuna
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    cfg = sweep.config
    storage = storage_root(cfg.storage_path)
    uri = tracking.tracking_uri(cfg.tracking_uri)
    client = tracking.client(uri)
    experiment = tracking.ensure_experiment(client, cfg.experiment)
    existing = tracking.find_run(client, experiment, cfg.name, storage)
    if existing is not None:
        parent = existing.info.run_id
        tracking.reopen_run(client, parent)
    else:
        parent = tracking.start_run(client, experiment, cfg.name, storage, {SWEEP_TAG: cfg.name, "kind": "sweep"})
        tracking.log_params(client, parent, {
            "algorithm": cfg.search.algorithm, "num_samples": cfg.search.num_samples, "seed": cfg.search.seed,
            "objective": cfg.objective.mode, "distortion": cfg.objective.distortion, "beta": cfg.objective.beta,
            "space": json.dumps(cfg.space, sort_keys=True), "stages": ",".join(cfg.stages),
        })

    objective = cfg.objective
    metric = objective.metrics if objective.mode == "pareto" else objective.metrics[0]
    mode = ["min"] * len(metric) if isinstance(metric, list) else "min"
    sampler = (optuna.samplers.TPESampler(seed=cfg.search.seed, multivariate=True) if cfg.search.algorithm == "tpe"
               else optuna.samplers.RandomSampler(seed=cfg.search.seed))
    points = sweep.space.given_points(_defaults(sweep), cfg.search.points)
    points += sweep.space.published_points(_defaults(sweep)) if cfg.search.seed_published else []
    points = [sweep.space.sampler_point(p) for p in points]
    searcher = OptunaSearch(space=sweep.space.suggest, metric=metric, mode=mode, sampler=sampler,
                            points_to_evaluate=points[: cfg.search.num_samples] or None)
    first = sweep.stages[0].workers
    cluster.ensure_ray(first.num_workers * first.cpus_per_worker * (cfg.search.max_concurrent or 1))
    cluster.quiet_data_progress()
    concurrency = cfg.search.max_concurrent or _concurrency(sweep)
    scheduler = None
    if cfg.scheduler.asha and objective.mode == "scalar":
        # max_t one past the last report: reaching max_t makes Tune stop a trial at once, before
        # its driver has published the trained codec.
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=_reports_per_trial(sweep) + 1,
                                  grace_period=cfg.scheduler.grace_period, reduction_factor=cfg.scheduler.reduction_factor)
    resolved = cfg.model_copy(update={"tracking_uri": uri, "storage_path": storage})
    trainable = ray.tune.with_parameters(
        trial_driver, sweep=resolved.model_dump(mode="json"),
        stages=[s.model_dump(mode="json") for s in sweep.stages], parent_run_id=parent,
    )
    trainable = ray.tune.with_resources(trainable, {"CPU": 0.01})  # the driver only waits; Train workers hold the CPUs/GPUs
    tune_path = f"{storage}/{cfg.name}/tune"
    # Results live in MLflow: Tune's own per-trial CSV, JSON and TensorBoard files would only add
    # to ray_results (and a hint to run TensorBoard on a folder in Ray's temp folder to the console).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    try:
        if ray.tune.Tuner.can_restore(tune_path):
            tuner = ray.tune.Tuner.restore(tune_path, trainable=trainable, resume_errored=True)
        else:
            tuner = ray.tune.Tuner(
                trainable,
                tune_config=ray.tune.TuneConfig(
                    search_alg=searcher, scheduler=scheduler, num_samples=cfg.search.num_samples,
                    max_concurrent_trials=concurrency,
                    **({"metric": metric, "mode": mode} if scheduler is not None else {}),
                ),
                run_config=ray.tune.RunConfig(name="tune", storage_path=f"{storage}/{cfg.name}", verbose=0),
            )
        grid = tuner.fit()
        outcome = _summarise(grid, objective, client, experiment, cfg.name, len(sweep.stages))
        _log_parent(client, parent, outcome, objective)
        if outcome.best is None:
            errors = [r["error"] for r in outcome.rows if r["error"]]
            raise ResulicError(f"no trial finished with a result (first error: {errors[0] if errors else 'none'})")
    except ResulicError:
        client.set_terminated(parent, status="FAILED")
        raise
    except Exception as exc:
        client.set_terminated(parent, status="FAILED")
        raise ResulicError(f"sweep failed: {exc}") from exc
    client.set_terminated(parent, status="FINISHED")
    outcome.parent_run_id = parent
    return outcome


def _defaults(sweep: Sweep) -> dict:
    """Values of the space's keys in the base config (to complete the published points)."""
    data = sweep.stages[-1].model_dump(mode="json")
    out = {}
    for key in sweep.space.params:
        node = data
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def _concurrency(sweep: Sweep) -> int:
    import ray

    w = sweep.stages[0].workers
    resources = ray.cluster_resources()
    if w.use_gpu:
        return max(1, int(resources.get("GPU", 0) // w.num_workers))
    # two CPUs stay free for Ray Data and the controllers
    return max(1, int((resources.get("CPU", 1) - 2) // (w.num_workers * w.cpus_per_worker)))


def _reports_per_trial(sweep: Sweep) -> int:
    total = 0
    for stage in sweep.stages:
        total += -(-stage.optim.steps // stage.run.checkpoint_every)
    return max(1, total)


def _summarise(grid, objective: ObjectiveConfig, client, experiment: str, sweep_name: str, n_stages: int) -> SweepOutcome:
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        config = result.config or {}
        trial = metrics.get("trial_id") or (result.path.rstrip("/").rsplit("/", 1)[-1] if result.path else "?")
        children = client.search_runs(
            [experiment], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_name}' and tags.trial_id = '{metrics.get('trial_id', '')}'"
        ) if metrics.get("trial_id") else []
        final = max(children, key=lambda r: int(r.data.tags.get("stage", "0")), default=None)
        for child in children:  # a trial ASHA stopped leaves its current stage's run open
            if child.info.status == "RUNNING":
                client.set_terminated(child.info.run_id, status="KILLED")
        complete = (final is not None and final.info.status == "FINISHED"
                    and int(final.data.tags.get("stage", "0")) == n_stages)
        rows.append({
            "trial_id": trial,
            "final_run": final.info.run_id if complete else None,  # holds the trained codec
            "complete": complete,
            "values": SearchSpace.config_values(config),
            "bpp": metrics.get(BPP_METRIC),
            "distortion": metrics.get(objective.distortion_key(metrics) or objective.distortion),
            "distortion_metric": objective.distortion_key(metrics),  # e.g. val_lpips-random: not a real LPIPS
            "objective": objective.value(metrics),
            "psnr": metrics.get("val_psnr"),
            "error": str(result.error).splitlines()[0] if result.error else None,
            "child_runs": [r.info.run_id for r in children],
        })
    complete = [i for i, r in enumerate(rows) if r["bpp"] is not None and r["distortion"] is not None]
    front = [complete[i] for i in pareto_front([(rows[i]["bpp"], rows[i]["distortion"]) for i in complete])]
    # The best is a trial that ran to the end (its codec exists), when there is one.
    scored = [r for r in rows if r["objective"] is not None and r["complete"]] or [
        r for r in rows if r["objective"] is not None
    ]
    best = min(scored, key=lambda r: r["objective"]) if scored else None
    return SweepOutcome("", rows, front, best)


def _log_parent(client, parent: str, outcome: SweepOutcome, objective: ObjectiveConfig) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "results.json").write_text(json.dumps(outcome.rows, indent=2, default=str) + "\n")
        (folder / "results.md").write_text(results_table(outcome))
        (folder / "pareto_front.json").write_text(
            json.dumps([outcome.rows[i] for i in outcome.front], indent=2, default=str) + "\n"
        )
        _scatter(outcome, objective, folder / "rd_scatter.png")
        client.log_artifacts(parent, str(folder), artifact_path="sweep")
    if outcome.best is not None:
        client.set_tag(parent, "best_trial_id", outcome.best["trial_id"])
        client.log_metric(parent, "best_objective", outcome.best["objective"])
    client.log_metric(parent, "trials", len(outcome.rows))


def results_table(outcome: SweepOutcome) -> str:
    keys = sorted({k for r in outcome.rows for k in r["values"]})
    head = ["trial", *keys, "bpp", "distortion", "objective", "front"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(outcome.rows):
        cells = [r["trial_id"], *[_fmt(r["values"].get(k)) for k in keys], _fmt(r["bpp"]), _fmt(r["distortion"]),
                 _fmt(r["objective"]), "✓" if i in outcome.front else ""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))


def _scatter(outcome: SweepOutcome, objective: ObjectiveConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    pts = [(r["bpp"], r["distortion"]) for r in outcome.rows if r["bpp"] is not None and r["distortion"] is not None]
    if pts:
        ax.scatter(*zip(*pts), label="trials", color="tab:blue")
    front = sorted((outcome.rows[i]["bpp"], outcome.rows[i]["distortion"]) for i in outcome.front)
    if front:
        ax.plot(*zip(*front), "o-", color="tab:red", label="Pareto front")
    from ..evaluation.plots import readable_ticks

    readable_ticks(ax.xaxis)  # trials often differ in the 4th digit of bpp: no offset notation
    readable_ticks(ax.yaxis)
    ax.set_xlabel("bpp (real files, validation)")
    ax.set_ylabel(f"{objective.distortion} (lower is better)")
    ax.set_title("sweep: rate vs distortion")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
