"""A local MLflow store (mlflow.db + mlartifacts/) keeps working when its folder is moved or copied:
MLflow records absolute artifact locations, and resulic.services.tracking.relocate_store rewrites them to
the database's folder the first time a client opens the moved store."""

import shutil
import sqlite3

import pytest

from resulic.services import tracking
from resulic.codec.store import load_codec, save_codec
from resulic.services.registry import fetch_codec, register_codec, set_alias


def _locations(db) -> list[str]:
    with sqlite3.connect(db) as con:
        return [row[0] for table, column in tracking.LOCATION_COLUMNS[:4]
                for row in con.execute(f"SELECT {column} FROM {table}") if row[0]]


@pytest.fixture()
def clone(tmp_path, monkeypatch, codec):
    """A clone's folder with a store that holds a run's artifact and a registered codec."""
    home = tmp_path / "clone"
    home.mkdir()
    monkeypatch.chdir(home)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store: ./mlflow.db
    tracking._relocated.clear()
    uri = tracking.tracking_uri()
    client = tracking.client(uri)
    run = tracking.start_run(client, tracking.ensure_experiment(client, "moved"), "r", str(home), {})
    (home / "note.txt").write_text("logged before the move")
    client.log_artifact(run, str(home / "note.txt"), "notes")
    set_alias("resulic-moved", "champion", register_codec(save_codec(codec, tmp_path / "r300"), "resulic-moved"))
    assert all(str(home) in loc for loc in _locations(home / "mlflow.db"))
    return home, run


def _read(client, run, tmp_path) -> str:
    dst = tmp_path / "downloaded"
    dst.mkdir(exist_ok=True)
    return open(client.download_artifacts(run, "notes/note.txt", str(dst))).read()


def _reopen(folder, monkeypatch):
    monkeypatch.chdir(folder)
    tracking._relocated.clear()  # a new process
    return tracking.client(tracking.tracking_uri())


def test_a_moved_store_reads_its_artifacts_and_registry(clone, tmp_path, monkeypatch, codec):
    home, run = clone
    moved = tmp_path / "elsewhere" / "clone"
    moved.parent.mkdir()
    shutil.move(home, moved)
    client = _reopen(moved, monkeypatch)
    locations = _locations(moved / "mlflow.db")
    assert locations and all(str(moved) in loc and str(home) + "/" not in loc for loc in locations)
    assert _read(client, run, tmp_path) == "logged before the move"
    fetched = fetch_codec("models:/resulic-moved@champion", tmp_path / "fetched")
    assert load_codec(fetched).fingerprint == codec.fingerprint
    assert tracking.relocate_store(tracking.tracking_uri()) == []  # once per process and store


def test_a_copied_store_reads_its_own_artifacts(clone, tmp_path, monkeypatch):
    home, run = clone
    copy = tmp_path / "copy"
    shutil.copytree(home, copy)
    (copy / "mlartifacts" / run / "artifacts/notes/note.txt").write_text("the copy's")
    client = _reopen(copy, monkeypatch)
    assert _read(client, run, tmp_path) == "the copy's"
    assert all(str(home) + "/" in loc for loc in _locations(home / "mlflow.db"))  # the original is untouched


def test_a_database_copied_alone_keeps_pointing_at_the_artifacts(clone, tmp_path, monkeypatch):
    home, run = clone
    alone = tmp_path / "db-only"
    alone.mkdir()
    shutil.copy(home / "mlflow.db", alone / "mlflow.db")
    client = _reopen(alone, monkeypatch)
    assert all(str(home) + "/" in loc for loc in _locations(alone / "mlflow.db"))
    assert _read(client, run, tmp_path) == "logged before the move"
