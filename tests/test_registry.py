"""The registry convention against a real SQLite MLflow store: register a trained-codec folder,
alias it, fetch it back, load it; evaluate straight from a models:/ URI."""

import json

import pytest

from resulic.codec.store import load_codec, save_codec
from resulic.errors import ModelLoadError
from resulic.registry import fetch_codec, register_codec, resolve, set_alias


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root (./mlruns) lands here
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
    assert sorted(p.name for p in fetched.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert load_codec(fetched).fingerprint == codec.fingerprint
    assert (fetch_codec("models:/resulic-tiny/2", tmp_path / "v2") / "manifest.json").is_file()


def test_bad_uris_and_folders(store, tmp_path):
    with pytest.raises(ModelLoadError, match="expected models:/"):
        resolve("models:/only-a-name")
    with pytest.raises(ModelLoadError, match="not in the registry"):
        fetch_codec("models:/nothing@champion")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no manifest.json"):
        register_codec(tmp_path / "empty", "x")


def test_evaluate_from_the_registry(store, folder, tmp_path):
    from resulic.evaluate import EvaluateConfig, evaluate

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
