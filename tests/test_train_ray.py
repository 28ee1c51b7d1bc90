"""Staged training on a real local Ray cluster with a real SQLite MLflow store: two CPU workers,
tiny profile, a failure injected once, a resubmission, then stage 2 from stage 1."""

from pathlib import Path

import pytest

from resulic.codec.store import load_codec
from resulic.config import build_config
from resulic.errors import ConfigError
from resulic.train.config import TrainConfig
from resulic.train.trainer import run_training

pytestmark = pytest.mark.slow


def _config(tmp: Path, stage: int, name: str, init_from: str | None = None, **extra) -> TrainConfig:
    data = {
        "stage": stage,
        "init_from": init_from,
        "data": {"source": "samples", "validation_images": 1, "validation_size": 96},
        "optim": {"steps": 4, "batch_size": 1},
        "workers": {"num_workers": 2, "cpus_per_worker": 1},
        "run": {
            "name": name,
            "storage_path": str(tmp / "ray_results"),
            "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
            "experiment": "tests",
            "checkpoint_every": 2,
        },
    }
    for key, value in extra.items():
        section, _, field = key.partition("__")
        data.setdefault(section, {})[field] = value
    return build_config(TrainConfig, data)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, ray_cluster):
    return tmp_path_factory.mktemp("training")


@pytest.fixture(scope="module")
def stage1(workdir, monkeypatch_module, ray_cluster):
    """Ray Data feeds it, and its two workers take every CPU the cluster has free (issue 26: a
    crop actor that reserved a CPU of its own then waited for ever, with no message)."""
    monkeypatch_module.chdir(workdir)  # ./mlartifacts of the SQLite store lands here
    free = ray_cluster.available_resources().get("CPU", 0)
    assert free >= 2, f"the session's Ray has {free} CPUs free"
    cfg = _config(workdir, 1, "s1", run__fail_once_at_step=3, workers__cpus_per_worker=free / 2, data__loader="ray_data")
    return cfg, run_training(cfg)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _client(workdir):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


@pytest.mark.timeout(900)  # the first test to use stage1: a worker group that can never start fails here
def test_stage1_restarts_after_a_failure_without_gaps_or_repeats(workdir, stage1):
    cfg, outcome = stage1
    assert (workdir / "ray_results" / "s1" / ".injected_failure").read_text() == "3"
    history = _client(workdir).get_metric_history(outcome.mlflow_run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert outcome.metrics["step"] == 4


def test_stage1_checkpoints_params_metrics_and_images(workdir, stage1):
    _, outcome = stage1
    checkpoints = [p for p in (workdir / "ray_results" / "s1").glob("checkpoint_*") if p.is_dir()]
    assert checkpoints and all((c / "codec" / "manifest.json").is_file() for c in checkpoints)
    run = _client(workdir).get_run(outcome.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.steps"] == "4" and run.data.params["model.rate_point.residual_steps"] == "300"
    # no VGG16 weights here: validation LPIPS is through a random VGG and named so
    for key in ("loss_eps", "bpp_estimated", "loss_guide", "images_per_second", "val_bpp_real", "val_psnr",
                "val_lpips-random"):
        assert key in run.data.metrics, key
    assert run.data.tags["stage"] == "1" and len(run.data.tags["dataset_hash"]) == 16
    artifacts = [a.path for a in _client(workdir).list_artifacts(outcome.mlflow_run_id, "images")]
    assert any("validation" in p for p in artifacts)
    codec = load_codec(outcome.model_dir)  # the published model is a working codec
    from resulic.images import sample_images

    img = sample_images(1)[0][1].crop((0, 0, 100, 90))
    assert codec.decompress(codec.compress(img)).size == (100, 90)


def test_resubmitting_resumes_and_logs_the_rows_its_checkpoint_could_not(workdir, stage1):
    """Resubmitting a finished run resumes it: the same MLflow run and checkpoint, no step logged
    twice. And the restart logs the rows its checkpoint could not: with MLflow down for longer
    than its client's retries, the rows logged right after a checkpoint never arrive (the worker
    fails, Ray Train restarts from that checkpoint). Simulated on the store itself: the rows of
    steps 3 and 4 (the last checkpoint's) are deleted before the resubmission, which logs them
    again, once, as the very rows that were lost (same step, time and value: on a store that
    still holds them they add nothing). One resubmission checks both: a Ray Train run here takes
    tens of seconds."""
    import sqlite3

    cfg, first = stage1
    client = _client(workdir)
    lost = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(first.mlflow_run_id, "loss")
                  if m.step in (3, 4))
    assert [step for step, _, _ in lost] == [3, 4]
    with sqlite3.connect(workdir / "mlflow.db") as db:
        db.execute("DELETE FROM metrics WHERE run_uuid = ? AND step IN (3, 4)", (first.mlflow_run_id,))
    assert sorted(m.step for m in client.get_metric_history(first.mlflow_run_id, "loss")) == [1, 2]

    again = run_training(cfg)
    assert again.resumed and again.mlflow_run_id == first.mlflow_run_id
    assert again.checkpoint_path == first.checkpoint_path
    history = client.get_metric_history(first.mlflow_run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]  # 1 and 2 not again, 3 and 4 back once
    assert sorted((m.step, m.timestamp, m.value) for m in history if m.step in (3, 4)) == lost
    assert [m.step for m in client.get_metric_history(first.mlflow_run_id, "val_psnr")] == [2, 4]

    changed = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": 5e-4})})
    with pytest.raises(ConfigError, match="already exists .* with a different config"):
        run_training(changed)


def test_stage2_starts_from_stage1_and_records_the_link(workdir, stage1):
    _, first = stage1
    # data.loader 'worker' (each worker crops its own rows): the loader Ray Train runs here
    # without Ray Data, whose start costs seconds a run; stage 1 above runs through Ray Data.
    cfg = _config(workdir, 2, "s2", init_from="s1", optim__steps=2, data__loader="worker")
    outcome = run_training(cfg)
    run = _client(workdir).get_run(outcome.mlflow_run_id)
    assert run.data.tags["parent_stage_run"] == first.mlflow_run_id
    assert run.data.tags["init_from"].endswith("s1/model")
    assert "loss_lpips" in run.data.metrics and "loss_mse" in run.data.metrics
    assert run.data.tags["lpips_backbone"].startswith("random")


def test_a_variable_rate_model_trains_from_a_fixed_rate_one(workdir, stage1):
    """One model for every rate (issue 17): gains added to s1's compressor, each sample at its own
    λ_R, validation at the default level and at each anchor, a published model whose file
    carries its level."""
    variable = {"lambda_rates": [8.0, 2.0, 0.5], "residual_steps": [60, 40, 20], "default_level": 64}
    cfg = _config(workdir, 1, "s1-variable", init_from="s1", optim__steps=2, loss__lambda_rate=2.0, loss__lambda_eps=0,
                  workers__num_workers=1, data__loader="worker")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={
        "compressor": cfg.model.compressor.model_copy(update={"gain_anchors": 3}),
        "rate_point": cfg.model.rate_point.model_copy(update={"variable": variable}),
    })})
    cfg = TrainConfig.model_validate(cfg.model_dump(mode="json"))
    outcome = run_training(cfg)
    metrics = _client(workdir).get_run(outcome.mlflow_run_id).data.metrics
    for level in (0, 64, 127):
        assert f"val_bpp_real_level{level}" in metrics
    assert metrics["val_bpp_real_level0"] < metrics["val_bpp_real_level127"]
    codec = load_codec(outcome.model_dir)
    assert codec.config.rate_point.variable.lambda_rates == variable["lambda_rates"]
    from PIL import Image

    data = codec.encode(Image.new("RGB", (96, 96), "gray"), level=10).data
    assert codec.decode(data).header.level == 10


def test_a_training_workers_rendezvous_listens_on_the_loopback(ray_cluster):
    """docs/security.md: PyTorch's TCPStore — a training run's rendezvous, held by its rank-0
    worker — listens on every interface whatever address it is given. A local Ray's workers
    preload services/loopback's library (cluster.loopback_preload), so it listens on 127.0.0.1."""
    from resulic.services.loopback import LoopbackUnavailable, build, is_loopback

    try:
        build()
    except LoopbackUnavailable as exc:
        pytest.skip(str(exc))

    @ray_cluster.remote
    def rendezvous_listeners():
        import psutil
        import torch.distributed as dist

        store = dist.TCPStore("127.0.0.1", 0, 1, True)
        return [c.laddr.ip for c in psutil.Process().net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == store.port]

    addresses = ray_cluster.get(rendezvous_listeners.remote(), timeout=120)
    assert addresses and all(is_loopback(ip) for ip in addresses), addresses
