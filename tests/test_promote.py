"""Promotion against a real SQLite MLflow store and registry: a sweep's parent run with its
results, child runs holding trained codecs, versions, tags and the champion alias."""

import json

import pytest

from resulic.codec.store import save_codec
from resulic.config import build_config
from resulic.errors import ConfigError
from resulic.services.registry import open_codec
from resulic.tune.promote import PromoteConfig, format_promotions, promote
from resulic.tune.sweep import SWEEP_TAG


@pytest.fixture()
def store(tmp_path, monkeypatch, codec):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("sweeps", artifact_location=(tmp_path / "art").as_uri())
    folder = save_codec(codec, tmp_path / "codec")
    return client, uri, experiment, folder


def _sweep(client, experiment, folder, name, rows):
    """A finished sweep as run_sweep leaves it: a parent with results.json, a child per trial."""
    parent = client.create_run(experiment, run_name=name, tags={SWEEP_TAG: name, "kind": "sweep"}).info.run_id
    for row in rows:
        child = client.create_run(experiment, tags={"mlflow.parentRunId": parent, "stage": "1"}).info.run_id
        client.log_artifacts(child, str(folder), "codec")
        client.set_terminated(child)
        row.update(final_run=child, complete=True, values={"loss.lambda_rate": row["bpp"] * 100})
    (folder.parent / "results.json").write_text(json.dumps(rows))
    client.log_artifact(parent, str(folder.parent / "results.json"), "sweep")
    client.set_terminated(parent)


def _row(trial, bpp, objective):
    return {"trial_id": trial, "bpp": bpp, "distortion": objective - bpp, "objective": objective}


def test_champion_moves_only_on_improvement(store, photo):
    client, uri, experiment, folder = store
    cfg = build_config(PromoteConfig, {"sweep": "s1", "experiment": "sweeps", "tracking_uri": uri, "model_name": "m"})
    _sweep(client, experiment, folder, "s1", [_row("a", 0.02, 0.30), _row("b", 0.03, 0.25)])
    [first] = promote(cfg)
    assert first.trial_id == "b" and first.moved and first.previous is None
    mv = client.get_model_version_by_alias("m", "champion")
    assert str(mv.version) == first.version
    assert mv.tags["bpp_real"] == "0.03" and mv.tags["metric_value"] == "0.25" and mv.tags["trial_id"] == "b"
    assert mv.tags["param.loss.lambda_rate"] == "3.0" and mv.tags["rate_band"] == "all"
    # the version is the trial's own run (the one that trained and logged the codec), no copy of it
    trial_run = client.get_run(mv.tags["training_run"])
    assert mv.run_id == trial_run.info.run_id and mv.source == f"{trial_run.info.artifact_uri}/codec"
    all_runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r for r in all_runs if (r.info.run_name or "").startswith("register-")]
    # promoting the same sweep again registers nothing new and keeps the alias
    [again] = promote(cfg)
    assert again.version == first.version and not again.moved

    # a worse sweep: registered, alias stays; forced: alias moves
    _sweep(client, experiment, folder, "s2", [_row("c", 0.02, 0.40)])
    worse = build_config(PromoteConfig, {**cfg.model_dump(), "sweep": "s2"})
    [kept] = promote(worse)
    assert not kept.moved and kept.previous == pytest.approx(0.25)
    assert str(client.get_model_version_by_alias("m", "champion").version) == first.version
    [forced] = promote(build_config(PromoteConfig, {**worse.model_dump(), "force": True}))
    assert forced.moved and str(client.get_model_version_by_alias("m", "champion").version) == forced.version

    champion = open_codec("models:/m@champion", tracking_uri=uri)
    assert champion.decompress(champion.compress(photo)).size == photo.size


def test_one_champion_per_rate_band(store):
    client, uri, experiment, folder = store
    _sweep(client, experiment, folder, "s", [_row("lo", 0.01, 0.5), _row("hi", 0.08, 0.2), _row("hi2", 0.09, 0.3)])
    cfg = build_config(PromoteConfig, {
        "sweep": "s", "experiment": "sweeps", "tracking_uri": uri, "model_name": "m",
        "bands": [{"name": "low", "max_bpp": 0.05}, {"name": "high", "max_bpp": 0.2}],
    })
    promotions = {p.band: p for p in promote(cfg)}
    assert promotions["low"].trial_id == "lo" and promotions["low"].alias == "champion-low"
    assert promotions["high"].trial_id == "hi" and promotions["high"].alias == "champion-high"


def test_unknown_sweep_and_bad_bands_are_clear(store):
    _, uri, _, _ = store
    with pytest.raises(ConfigError, match="sweep: no sweep named 'nope'"):
        promote(build_config(PromoteConfig, {"sweep": "nope", "experiment": "sweeps", "tracking_uri": uri}))
    with pytest.raises(ConfigError, match="bands: .*increasing max_bpp"):
        build_config(PromoteConfig, {"bands": [{"name": "a", "max_bpp": 0.1}, {"name": "b", "max_bpp": 0.05}]})


def test_a_random_network_never_chooses_the_champion(store):
    """Trials ranked by LPIPS through a random VGG: the champion is chosen by real PSNR instead."""
    client, uri, experiment, folder = store
    rows = [_row("random-best", 0.02, 0.10), _row("psnr-best", 0.03, 0.40)]
    for row, psnr in zip(rows, (18.0, 24.0)):
        row.update(psnr=psnr, distortion_metric="val_lpips-random")
    _sweep(client, experiment, folder, "s", rows)
    cfg = build_config(PromoteConfig, {"sweep": "s", "experiment": "sweeps", "tracking_uri": uri, "model_name": "m"})
    [p] = promote(cfg)
    assert p.trial_id == "psnr-best" and p.metric == "psnr" and p.value == pytest.approx(24.0)
    assert "val_lpips-random" in p.note and "random" in p.note
    mv = client.get_model_version_by_alias("m", "champion")
    assert mv.tags["metric"] == "psnr" and mv.tags["distortion_metric"] == "val_lpips-random"
    assert format_promotions([p], "m").splitlines()[0].startswith("note: the sweep's distortion is val_lpips-random")
    # higher PSNR is better: a later sweep with a lower PSNR keeps the champion
    _sweep(client, experiment, folder, "s2", [{**_row("worse", 0.02, 0.05), "psnr": 20.0,
                                               "distortion_metric": "val_lpips-random"}])
    [kept] = promote(build_config(PromoteConfig, {**cfg.model_dump(), "sweep": "s2"}))
    assert not kept.moved and kept.previous == pytest.approx(24.0)
