"""The registry convention against a real SQLite MLflow store: register a trained-codec folder,
alias it, fetch it back, load it; evaluate straight from a models:/ URI."""

import json
import shutil

import pytest

from resulic.codec.store import load_codec, save_codec
from resulic.errors import ModelLoadError
from resulic.services.registry import fetch_codec, register_codec, resolve, set_alias


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where MLflow's own default artifact root (./mlruns) would land
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="module")
def folder(codec, tmp_path_factory):
    return save_codec(codec, tmp_path_factory.mktemp("trained") / "r300")


def test_register_alias_fetch_load(store, folder, codec, tmp_path):
    v1 = register_codec(folder, "resulic-tiny", tags={"stage": "test"})
    v2 = register_codec(folder, "resulic-tiny")
    assert (v1, v2) == ("1", "2")
    set_alias("resulic-tiny", "champion", v1)
    mv = resolve("models:/resulic-tiny@champion")
    assert str(mv.version) == "1" and mv.tags["fingerprint"] == codec.fingerprint.hex() and mv.tags["stage"] == "test"
    fetched = fetch_codec("models:/resulic-tiny@champion", tmp_path / "fetched")
    # the codec folder, plus the pyfunc flavour's MLmodel (tests/test_pyfunc.py)
    assert sorted(p.name for p in fetched.iterdir()) == sorted([*(p.name for p in folder.iterdir()), "MLmodel"])
    assert load_codec(fetched).fingerprint == codec.fingerprint
    assert (fetch_codec("models:/resulic-tiny/2", tmp_path / "v2") / "manifest.json").is_file()
    _assert_one_artifact_root_and_training_kind(store, tmp_path, "resulic-registry")


def test_a_folder_stored_as_shared_pieces_is_registered_whole(store, codec, tmp_path):
    """A shipped folder keeps its weights as pieces beside it (codec/store.py): the registry's copy
    must load on a machine without them."""
    from resulic.codec.store import share_pieces

    pieced = save_codec(codec, tmp_path / "set" / "c")
    share_pieces(pieced)
    assert not (pieced / "compressor.safetensors").exists()
    version = register_codec(pieced, "resulic-pieced")
    fetched = fetch_codec(f"models:/resulic-pieced/{version}", tmp_path / "fetched")
    assert (fetched / "compressor.safetensors").is_file() and (fetched / "control.safetensors").is_file()
    assert "pieces" not in json.loads((fetched / "manifest.json").read_text())
    shutil.rmtree(tmp_path / "set" / "pieces")
    assert load_codec(fetched).fingerprint == codec.fingerprint


def _assert_one_artifact_root_and_training_kind(uri, tmp_path, experiment_name):
    from mlflow import MlflowClient

    from resulic.services.tracking import EXPERIMENT_KIND_TAG, TRAINING_KIND

    experiment = MlflowClient(uri).get_experiment_by_name(experiment_name)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND  # the UI opens it on its runs, not on traces
    assert experiment.artifact_location.startswith((tmp_path / "mlartifacts").as_uri())
    assert any((tmp_path / "mlartifacts").rglob("manifest.json"))
    assert not (tmp_path / "mlruns").exists()


def test_bad_uris_and_folders(store, tmp_path, folder):
    with pytest.raises(ModelLoadError, match="expected models:/"):
        resolve("models:/only-a-name")
    with pytest.raises(ModelLoadError, match="no MLflow tracking store at"):  # the URI names no database yet
        fetch_codec("models:/nothing@champion")
    assert not (tmp_path / "mlflow.db").exists()
    register_codec(folder, "something")
    with pytest.raises(ModelLoadError, match="not in the registry"):
        fetch_codec("models:/nothing@champion")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="manifest.json is missing or unreadable"):
        register_codec(tmp_path / "empty", "x")


def test_evaluate_from_the_registry(store, folder, tmp_path):
    from resulic.evaluation.evaluate import EvaluateConfig, evaluate

    version = register_codec(folder, "resulic-eval")
    set_alias("resulic-eval", "champion", version)
    cfg = EvaluateConfig(models=["models:/resulic-eval@champion"], images="samples", max_images=1, max_side=128,
                         num_workers=0, metrics={"names": ["psnr"]}, output_dir=str(tmp_path / "ev"))
    ev = evaluate(cfg, progress=False)
    data = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert data["rate_points"][0]["model"] == "models:/resulic-eval@champion"
    assert data["rate_points"][0]["fingerprint"] == json.loads((folder / "manifest.json").read_text())["fingerprint"]
    assert set(data["results"]) == {"bpp", "psnr-rgb", "latent_bpp", "text_bpp", "estimated_bpp",
                                    "encoding_time", "decoding_time"}
    assert ev.plots  # rd-psnr.png
    _assert_one_artifact_root_and_training_kind(store, tmp_path, "resulic-evaluate")  # tracked: the URI is set


def test_a_registry_uri_without_a_store_says_how_to_point_at_one_and_creates_nothing(tmp_path, monkeypatch, capsys):
    from resulic.cli.commands import main

    monkeypatch.chdir(tmp_path)  # a folder without mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ModelLoadError, match="MLFLOW_TRACKING_URI") as caught:
        fetch_codec("models:/resulic@champion")
    assert "--tracking-uri" in str(caught.value) and "no tracking URI set" in str(caught.value)
    (tmp_path / "photo.rslc").write_bytes(b"x")
    assert main(["decompress", str(tmp_path / "photo.rslc"), "--model", "models:/resulic@champion"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--tracking-uri" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.rslc"]  # no mlflow.db, no mlruns/


def test_tracking_uri_option_finds_a_store_elsewhere(store, folder, tmp_path, monkeypatch, capsys):
    from resulic.cli.commands import main

    register_codec(folder, "resulic-elsewhere")
    set_alias("resulic-elsewhere", "champion", "1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    (elsewhere / "photo.rslc").write_bytes(b"not a file the codec wrote")
    code = main(["decompress", str(elsewhere / "photo.rslc"), "--model", "models:/resulic-elsewhere@champion",
                 "--tracking-uri", store])
    err = capsys.readouterr().err
    assert code == 2 and "tracking store" not in err and "not a ResULIC file" in err  # found the model, refused the file
    assert not (elsewhere / "mlflow.db").exists()
