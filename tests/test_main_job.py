"""The README's main command, on the embedded defaults, shortened to one sample photo."""

import json

from jobs.main import main, where_things_are


def test_main_job_round_trips_sample_photos(tmp_path, capsys, ray_cluster):
    rc = main(["--config", "configs/main.yaml", "--set", "max_images=1", "--set", "max_side=160", "--set", "sweep=null", "--set", "train.stage1=null", "--set", "train.stage2=null",
               "--set", f"output_dir={tmp_path}"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "bpp" in out and "PSNR" in out and "astronaut" in out
    results = json.loads((tmp_path / "results.json").read_text())  # CompressAI's format, as evaluate's
    rows = results["per_image"]
    assert rows[0]["file_bytes"] == (tmp_path / "astronaut.rslc").stat().st_size
    assert results["results"]["bpp"] == [rows[0]["bpp"]] and results["results"]["psnr-rgb"] == [rows[0]["psnr"]]
    assert (tmp_path / "astronaut.png").exists()
    # the last step served the model on 127.0.0.1 and wrote the same file over HTTP
    assert (tmp_path / "served" / "astronaut.rslc").read_bytes() == (tmp_path / "astronaut.rslc").read_bytes()
    assert "same bytes as local" in out and "  true\n" in out
    assert out.rstrip().endswith(f"outputs:       {tmp_path} (.rslc files, decoded PNGs, results.json; served/: the same over HTTP)")
    assert "MLflow UI:     " in out and " ui --tracking-uri sqlite:///" in out


def test_main_job_reports_config_errors(capsys):
    assert main(["--config", "configs/main.yaml", "--set", "max_imgs=1"]) == 2
    assert "max_imgs: unknown key" in capsys.readouterr().err


def test_main_job_reports_a_missing_image_folder(tmp_path, capsys):
    assert main(["--config", "configs/main.yaml", "--set", f"images={tmp_path}/none"]) == 2
    assert "no such image folder" in capsys.readouterr().err


def test_the_job_ends_by_saying_where_things_are(tmp_path, monkeypatch, codec):
    """The last lines of `make run`: the champion's own folder (that of the trial run it is
    registered from), the trials' folders, the MLflow UI command on the same store, the outputs."""
    from mlflow import MlflowClient

    from resulic.services import registry, tracking
    from resulic.codec.store import save_codec

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    experiment = tracking.ensure_experiment(client, "sweeps")
    storage = str(tmp_path / "ray_results" / "sweep-x" / "runs")
    run_id = tracking.start_run(client, experiment, "sweep-x-1-s1", storage, {})
    client.log_artifacts(run_id, str(save_codec(codec, tmp_path / "trained")), "codec")
    registry.set_alias("resulic", "champion", registry.register_run_codec(run_id, "resulic"))

    text = where_things_are("models:/resulic@champion", codec, "outputs/main", f"{tmp_path}/ray_results/sweep-x/runs")
    assert f"codec:         models:/resulic@champion (version 1, MLflow run {run_id}); its folder: {storage}/sweep-x-1-s1/model" in text
    assert f"codec folders: {tmp_path}/ray_results/sweep-x/runs/<run>/model" in text
    assert f"ui --tracking-uri {uri}" in text and text.rstrip().splitlines()[-1].startswith("  outputs:       outputs/main")
    # the page of the champion's experiment in the UI's training view (MLflow 3 opens GenAI's otherwise)
    assert f"then open http://127.0.0.1:5000/#/experiments/{experiment}?workflowType=machine_learning" in text

    folder = save_codec(codec, tmp_path / "folder")
    assert f"codec:         {folder}" in where_things_are(str(folder), codec, "out")
    assert "codec:         tiny (embedded profile: no folder)" in where_things_are(None, codec, "out")
