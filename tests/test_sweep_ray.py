"""A 2-trial sweep of the tiny profile on a real local Ray with a real SQLite MLflow store."""

import json

import pytest

from resulic.config import build_config
from resulic.tune.space import SearchSpace
from resulic.tune.sweep import Sweep, SweepConfig, run_sweep

pytestmark = pytest.mark.slow
TRIALS = 2  # each trial is a Ray Train run (~25 s on 2 cores); two show every behaviour below

SPACE = {
    "loss.lambda_rate": {"type": "loguniform", "low": 1.0, "high": 36.0},
    "model.rate_point.residual_steps": {
        "type": "int", "low": 50, "high": 300, "low_at_max": 500, "high_at_max": 800, "step": 5,
        "follows": "loss.lambda_rate",
    },
}


@pytest.fixture(scope="module")
def swept(tmp_path_factory, ray_cluster):
    tmp = tmp_path_factory.mktemp("sweep")
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp)
    cfg = build_config(SweepConfig, {
        "name": "t",
        "stages": [str(_repo() / "configs/train/stage1.yaml")],
        # data.loader 'worker': the worker crops its own rows, without Ray Data's seconds of
        # start-up a trial (the sweep is about Tune, Optuna and MLflow; test_train_ray runs Ray Data).
        "trial_overrides": ["optim.steps=2", "run.checkpoint_every=1", "workers.num_workers=1",
                            "data.validation_size=64", "data.loader=worker", f"model={_repo() / 'configs/model/tiny.yaml'}"],
        "space": SPACE,
        # Both trials at once: one's Ray Train start-up overlaps the other's (the session's Ray has 5 CPUs).
        "search": {"num_samples": TRIALS, "seed": 1, "seed_published": False, "max_concurrent": TRIALS},
        "storage_path": str(tmp / "ray_results"),
        "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "experiment": "sweeps",
    })
    sweep = Sweep.from_config(cfg)
    yield tmp, sweep, run_sweep(sweep)
    mp.undo()


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def test_optuna_proposes_values_inside_the_space(swept):
    _, sweep, outcome = swept
    assert len(outcome.rows) == TRIALS
    for row in outcome.rows:
        assert row["error"] is None
        assert sweep.space.contains(row["values"]), row["values"]
    assert len({r["values"]["loss.lambda_rate"] for r in outcome.rows}) == TRIALS


def test_parent_run_has_a_child_per_trial_and_the_artifacts(swept):
    from mlflow.tracking import MlflowClient

    tmp, _, outcome = swept
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'"
    )
    assert len(children) == TRIALS
    for child in children:
        assert "val_bpp_real" in child.data.metrics and "loss" in child.data.metrics
    artifacts = {a.path for a in client.list_artifacts(outcome.parent_run_id, "sweep")}
    assert {"sweep/pareto_front.json", "sweep/results.md", "sweep/rd_scatter.png", "sweep/results.json"} <= artifacts
    assert parent.data.tags["best_trial_id"] == outcome.best["trial_id"]
    path = client.download_artifacts(outcome.parent_run_id, "sweep/pareto_front.json", str(tmp))
    front = json.loads(open(path).read())
    assert front and all(r["trial_id"] in {row["trial_id"] for row in outcome.rows} for r in front)


def test_tune_keeps_no_logger_files_of_its_own(swept):
    """Results are in MLflow: no Tune CSV/JSON/TensorBoard files per trial in ray_results (and no
    TensorBoard hint on the console)."""
    tmp, _, _ = swept
    leftovers = [p.name for pattern in ("events.out.tfevents*", "progress.csv", "result.json")
                 for p in (tmp / "ray_results").rglob(pattern)]
    assert leftovers == []
