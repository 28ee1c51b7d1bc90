"""MLflow: where runs go, finding a run again by its deterministic name, batched logging.

Default store: ``sqlite:///<working folder>/mlflow.db`` with artifacts in ``mlartifacts/`` beside
the database (absolute, so Ray worker processes write to the same place) — every experiment the
platform creates, so nothing lands in MLflow's own default, ``./mlruns``. ``MLFLOW_TRACKING_URI``
points everything at a tracking server instead (the only sane choice on a multi-node cluster; the
server has its own artifact root).

MLflow records every local artifact location as an absolute path (its SQLite store resolves a
relative one against the working folder), so a moved or copied clone would point at the old
folder's ``mlartifacts/``. :func:`relocate_store` moves those records along: the first client this
process opens on a store whose folder changed rewrites them to the database's own folder (when its
``mlartifacts/`` came along, or the old one is gone).

Experiments are created with MLflow 3's experiment kind set to model training
(``mlflow.experimentKind = custom_model_development``): without it the UI opens them on its GenAI
view (traces) instead of the runs and their metrics.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterable

RUN_NAME_TAG = "resulic.run_name"
STORAGE_TAG = "resulic.storage_path"
CONFIG_HASH_TAG = "resulic.config_hash"
MAX_PARAM_LENGTH = 6000
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
ARTIFACT_FOLDER = "mlartifacts"


def tracking_uri(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def client(uri: str):
    from mlflow.tracking import MlflowClient

    relocate_store(uri)
    return MlflowClient(tracking_uri=uri)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working folder, or absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).resolve()


def artifact_root(uri: str) -> str | None:
    """Where a local store's experiments keep artifacts (``mlartifacts/`` beside the database);
    None for a tracking server, which has its own."""
    db = sqlite_path(uri)
    return (db.parent / ARTIFACT_FOLDER).as_uri() if db is not None else None


# MLflow's columns that hold a local store's artifact locations (absolute paths or file: URIs).
LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("model_versions", "source"),
                    ("model_versions", "storage_location"), ("logged_models", "artifact_location"))
_relocated: set[Path] = set()  # databases this process has checked


def relocate_store(uri: str) -> list[tuple[str, str]]:
    """Point a local store's artifact locations at the folder its database is in now.

    The platform's experiments keep their artifacts in ``<database folder>/mlartifacts``; when the
    recorded folder is another one (the clone was moved or copied) and either that folder's
    ``mlartifacts/`` is gone or the database's own ``mlartifacts/`` exists, every location under the
    old folder is rewritten to the new one (experiments, runs, model versions, logged models), in one
    transaction. Checked once per database and process; a tracking server or a missing database is
    left alone. Returns the (old, new) folders rewritten."""
    db = sqlite_path(uri)
    if db is None or db in _relocated or not db.is_file():
        return []
    import sqlite3

    from mlflow.utils.file_utils import local_file_uri_to_path

    new_dir = db.parent
    moves = []
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return []
        suffix = f"/{ARTIFACT_FOLDER}"
        roots = {row[0] for row in con.execute("SELECT artifact_location FROM experiments WHERE artifact_location LIKE ?",
                                               (f"file:///%{suffix}",))}
        for root in sorted(roots):
            old_uri = root[: -len(suffix)]
            old_dir = Path(local_file_uri_to_path(old_uri))
            if old_dir == new_dir or (old_dir.exists() and old_dir.resolve() == new_dir.resolve()):
                continue
            if (old_dir / ARTIFACT_FOLDER).exists() and not (new_dir / ARTIFACT_FOLDER).exists():
                continue  # the database alone was copied: its artifacts are still where they were
            moves.append((old_uri, old_dir, new_dir))
        if moves:
            with con:  # one transaction
                for old_uri, old_dir, new_dir_ in moves:
                    for old, new in ((old_uri + "/", new_dir_.as_uri() + "/"), (f"{old_dir}/", f"{new_dir_}/")):
                        for table, column in LOCATION_COLUMNS:
                            if table in tables:
                                con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                            f"WHERE substr({column}, 1, ?) = ?", (new, len(old) + 1, len(old), old))
    _relocated.add(db)
    return [(str(old_dir), str(new_dir_)) for _, old_dir, new_dir_ in moves]


def training_view_url(ui: str, experiment_id: str | None = None) -> str:
    """The MLflow UI's page of an experiment's runs in its "Model training" view.

    MLflow 3's UI (3.17 here) opens every experiment in its GenAI view (traces, "Detect Issues")
    unless the page's ``workflowType`` parameter or the browser's remembered choice says
    otherwise; the experiment's kind tag does not decide it (seen in headless Chromium:
    benchmarks/ui_screenshots.py).
    """
    page = f"experiments/{experiment_id}" if experiment_id is not None else "experiments"
    return f"{ui.rstrip('/')}/#/{page}?workflowType=machine_learning"


def ensure_experiment(mlflow_client, name: str) -> str:
    """The experiment's id; created if needed, in the platform's artifact root, as a training experiment."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        return mlflow_client.create_experiment(name, artifact_location=artifact_root(mlflow_client.tracking_uri),
                                               tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
    kind = experiment.tags.get(EXPERIMENT_KIND_TAG)
    if kind is None or kind.endswith("_inferred"):  # MLflow's own guess, or an experiment from before this tag
        mlflow_client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    return experiment.experiment_id


def find_run(mlflow_client, experiment_id: str, run_name: str, storage: str):
    """The run that an earlier submission of the same (name, storage path) created, if any."""
    runs = mlflow_client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}' and tags.`{STORAGE_TAG}` = '{storage}'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def start_run(mlflow_client, experiment_id: str, run_name: str, storage: str, tags: dict[str, str]) -> str:
    run = mlflow_client.create_run(
        experiment_id, run_name=run_name, tags={RUN_NAME_TAG: run_name, STORAGE_TAG: storage, **tags}
    )
    return run.info.run_id


def reopen_run(mlflow_client, run_id: str) -> None:
    mlflow_client.update_run(run_id, status="RUNNING")


def log_params(mlflow_client, run_id: str, params: dict[str, object]) -> None:
    """Log params that the run does not have yet (MLflow refuses to change a logged value)."""
    from mlflow.entities import Param

    existing = mlflow_client.get_run(run_id).data.params
    new = [
        Param(key, str(value)[:MAX_PARAM_LENGTH])
        for key, value in params.items()
        if key not in existing
    ]
    for i in range(0, len(new), 100):
        mlflow_client.log_batch(run_id, params=new[i : i + 100])


def log_metrics(mlflow_client, run_id: str, rows: Iterable[tuple[int, dict[str, float]]],
                timestamp_ms: int | None = None) -> None:
    """``rows`` of (step, {name: value}), in as few requests as possible. Logging the same rows
    again with the same ``timestamp_ms`` adds nothing: MLflow keeps one copy of a metric row
    with the same key, step, value and timestamp."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    metrics = [Metric(key, float(value), now, step) for step, values in rows for key, value in values.items()]
    for i in range(0, len(metrics), 1000):
        mlflow_client.log_batch(run_id, metrics=metrics[i : i + 1000])
