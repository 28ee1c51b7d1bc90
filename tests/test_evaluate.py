"""RD evaluation end to end through real files: the tiny profile on two Kodak images over two Ray
workers, every metric (random backbones, marked), MLflow logging into a SQLite store, and the
JSON read back by CompressAI's plot reader."""

import json

import pytest

from resulic.evaluation.evaluate import EvaluateConfig, evaluate

from .conftest import shared_path


def compressai_reader():
    from compressai.utils.plot.__main__ import parse_json_file

    return parse_json_file


@pytest.fixture(scope="module")
def kodak_two(tmp_path_factory):
    kodak = shared_path("datasets", "kodak")
    folder = tmp_path_factory.mktemp("kodak2")
    for name in ("kodim01.png", "kodim23.png"):
        (folder / name).symlink_to(kodak / name)
    return folder


@pytest.fixture(scope="module")
def evaluation(kodak_two, ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    mlflow_dir = tmp_path_factory.mktemp("mlflow")
    cfg = EvaluateConfig(name="tiny on Kodak", images=str(kodak_two), crop=256, output_dir=str(out / "run"),
                         num_workers=2, metrics={"random_backbones": True}, track=True, experiment="test-eval",
                         compare_with=[str(shared_path("anchors", "resulic-paper", "ResULIC_Pfo", "kodak.json"))])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_dir}/mlflow.db")
        mp.chdir(mlflow_dir)  # MLflow's default artifact root (./mlruns) lands here
        ev = evaluate(cfg, progress=False)
    return ev, cfg, mlflow_dir


def test_real_files_and_per_image_json(evaluation):
    ev, cfg, _ = evaluation
    out = ev.output_dir
    for stem in ("kodim01", "kodim23"):
        rslc = out / "rp0" / f"{stem}.rslc"
        assert rslc.is_file() and (out / "rp0" / f"{stem}.png").is_file()
        per = json.loads((out / "per_image" / f"{stem}.json").read_text())
        assert per["results"]["bpp"] == [rslc.stat().st_size * 8 / (256 * 256)]  # bpp is the file's size
        assert per["file_bytes"] == [rslc.stat().st_size]
        assert per["results"]["latent_bpp"][0] < per["results"]["bpp"][0]
    assert ev.images == 2


def test_aggregate_json_is_compressai_format_and_marks_random_backbones(evaluation):
    ev, _, _ = evaluation
    data = json.loads((ev.output_dir / "results.json").read_text())
    r = data["results"]
    for key in ("bpp", "psnr-rgb", "ms-ssim-rgb", "lpips-random", "dists-random", "st-lpips", "fid-random",
                "kid-random", "text_bpp", "latent_bpp", "encoding_time", "decoding_time"):
        assert len(r[key]) == 1, key
    assert "lpips" not in r and "fid" not in r  # unmarked names are for real backbones only
    assert data["random_backbone"] is True and "fid-random" in data["random_backbone_metrics"]
    assert data["fid_patches"] == [2] and data["resolution_policy"] == "center crop 256x256"
    assert data["rate_points"][0]["profile"] == "tiny"
    per = [json.loads((ev.output_dir / "per_image" / f"{s}.json").read_text())["results"] for s in ("kodim01", "kodim23")]
    assert r["bpp"][0] == pytest.approx((per[0]["bpp"][0] + per[1]["bpp"][0]) / 2)
    assert r["fid-random"][0] > 0
    reader = compressai_reader()
    for metric in ("psnr", "ms-ssim", "lpips-random", "fid-random"):
        parsed = reader(ev.output_dir / "results.json", metric)
        assert parsed["name"] == "tiny on Kodak" and parsed["xs"] == r["bpp"]


def test_plots_and_mlflow_run(evaluation):
    ev, cfg, mlflow_dir = evaluation
    names = {p.name for p in ev.plots}
    assert {"rd-psnr.png", "rd-ms-ssim.png", "rd-lpips-random.png", "rd-fid-random.png"} <= names
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{mlflow_dir}/mlflow.db")
    exp = client.get_experiment_by_name("test-eval")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.metrics["bpp"] == pytest.approx(ev.results["results"]["bpp"][0])
    assert run.data.tags["random_backbone"] == "True"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "per_image", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/rd-psnr.png" in plots
    del mlflow


def test_worker_errors_reach_the_caller_as_themselves(ray_cluster, tmp_path, monkeypatch):
    from resulic.errors import ModelLoadError
    from resulic.metrics import MetricWeightsError

    (tmp_path / "not-a-codec").mkdir()
    cfg = EvaluateConfig(models=[str(tmp_path / "not-a-codec")], images="samples", max_images=1, max_side=64,
                         num_workers=1, metrics={"names": ["psnr"]}, output_dir=str(tmp_path / "out"))
    with pytest.raises(ModelLoadError, match="manifest.json is missing or unreadable"):
        evaluate(cfg, progress=False)  # raised inside the Ray actor
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("RESULIC_METRIC_WEIGHTS", raising=False)
    cfg = EvaluateConfig(images="samples", max_images=1, num_workers=1, metrics={"names": ["psnr", "fid"]},
                         output_dir=str(tmp_path / "out"))
    with pytest.raises(MetricWeightsError, match="weights-inception"):
        evaluate(cfg, progress=False)  # found missing before any worker starts
