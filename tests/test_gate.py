"""The gate in front of the champion (resulic/tune/gate.py, tune/promote.gated_promotion): a
trial replaces the champion, or the shipped codec, only when it is better on held-out real files
at equal or lower bpp by more than the noise; otherwise the reference is kept and served."""

import json

import pytest

from resulic.tune.gate import HELDOUT, Measured, heldout_images, judge, measure, table


def measured(label, psnr, bits=1000):
    n = len(psnr)
    return Measured(label, [f"i{k}" for k in range(n)], [bits] * n, [256 * 256] * n, list(psnr))


def test_judge_needs_no_more_bits_and_a_gain_above_the_noise():
    ref = measured("ref", [20.0, 21.0, 19.0, 22.0])
    clear = judge(measured("a", [20.5, 21.6, 19.4, 22.5]), ref)  # +0.5 dB, steady
    assert clear.better and clear.delta_db == pytest.approx(0.5) and clear.margin_db < 0.5
    noisy = judge(measured("b", [21.5, 20.0, 20.5, 21.0]), ref)  # +0.25 dB on average, ±1 dB apart
    assert not noisy.better and "within the noise" in noisy.reason and noisy.margin_db > 0.25
    tiny_gain = judge(measured("c", [20.05, 21.05, 19.05, 22.05]), ref)  # steady but below 0.1 dB
    assert not tiny_gain.better and tiny_gain.margin_db == pytest.approx(0.1)
    costlier = judge(measured("d", [22.0, 23.0, 21.0, 24.0], bits=1001), ref)  # +2 dB bought with bits
    assert not costlier.better and "more bits" in costlier.reason
    worse = judge(measured("w", [18.0, 19.0, 17.0, 20.0], bits=900), ref)  # fewer bits, 2 dB worse
    assert not worse.better and "worse" in worse.reason
    same = judge(ref, ref)
    assert not same.better and same.delta_db == 0
    with pytest.raises(ValueError):
        judge(measured("e", [20.0]), ref)
    assert "reference: ref" in table(clear) and "candidate: a" in table(clear)


def test_heldout_images_are_not_the_sweeps_photos():
    from resulic.images import SAMPLE_NAMES

    images = heldout_images(HELDOUT)
    assert len(images) == 8 and {img.size for _, img in images} == {(256, 256)}
    assert not {name.rstrip("0123456789") for name, _ in images} & set(SAMPLE_NAMES)


def test_measure_counts_the_real_files(codec):
    images = heldout_images(limit=2)
    m = measure(codec, images, "tiny")
    assert m.bits == [len(codec.compress(img)) * 8 for _, img in images]
    assert m.bpp == pytest.approx(sum(m.bits) / (2 * 256 * 256)) and all(5 < p < 60 for p in m.psnr)


def _sweep_with_one_trial(tmp_path, codec, monkeypatch):
    """A finished sweep as promotion reads it: a parent run with sweep/results.json, and the
    trial's run holding its codec under codec/."""
    from mlflow import MlflowClient

    from resulic.services import tracking
    from resulic.codec.store import save_codec
    from resulic.tune.sweep import SWEEP_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = tracking.ensure_experiment(client, "sweeps")
    trial_run = tracking.start_run(client, experiment, "sweep-g-t1-s1", str(tmp_path / "runs"), {})
    client.log_artifacts(trial_run, str(save_codec(codec, tmp_path / "trained")), "codec")
    parent = tracking.start_run(client, experiment, "sweep-g", str(tmp_path), {SWEEP_TAG: "sweep-g", "kind": "sweep"})
    (tmp_path / "sweep").mkdir()
    rows = [{"trial_id": "t1", "final_run": trial_run, "complete": True, "values": {"loss.lambda_rate": 0.3},
             "bpp": 0.1, "distortion": 0.01, "distortion_metric": "val_mse", "objective": 0.02, "psnr": 20.0}]
    (tmp_path / "sweep" / "results.json").write_text(json.dumps(rows))
    client.log_artifacts(parent, str(tmp_path / "sweep"), "sweep")
    return uri


def test_a_trial_no_better_than_the_champion_is_not_promoted(tmp_path, codec, monkeypatch):
    from resulic.services import registry
    from resulic.tune.promote import PromoteConfig, gated_promotion

    uri = _sweep_with_one_trial(tmp_path, codec, monkeypatch)
    cfg = PromoteConfig(sweep="sweep-g", experiment="sweeps", model_name="resulic-g")
    images = heldout_images(limit=3)
    # With no champion the reference is the shipped codec; the untrained tiny trial is far worse.
    first = gated_promotion(cfg, images)
    assert first.promotion is None and first.kept == "the shipped codec"
    assert first.model.endswith("small-codecs/variable") and "kept the shipped codec" in first.report("resulic-g")
    assert not registry.is_registry_uri(first.model)
    # A champion that is the very same codec: equal, so kept.
    from resulic.codec.store import save_codec

    registry.set_alias("resulic-g", "champion", registry.register_codec(save_codec(codec, tmp_path / "champ"), "resulic-g",
                                                                       tracking_uri=uri), tracking_uri=uri)
    second = gated_promotion(cfg, images)
    assert second.promotion is None and second.model == "models:/resulic-g@champion"
    assert second.verdict.delta_db == 0 and "kept the champion" in second.report("resulic-g")
    assert str(registry.resolve("models:/resulic-g@champion", uri).version) == "1"
