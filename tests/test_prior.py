"""Stage 0 (the diffusion prior of the small profile): its loss, the TAEF2 backbone, and a real
Ray Train run whose published prior a stage-1 run then builds on (lineage in MLflow)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from resulic.config import BackboneConfig, build_config, load_config, ModelConfig
from resulic.errors import ConfigError, ModelLoadError
from resulic.models.backbone import load_backbone, save_prior
from resulic.train.config import TrainConfig
from resulic.train.prior import TrainablePrior, sd_noise_schedule

REPO = Path(__file__).resolve().parents[1]
SMALL = REPO / "configs" / "model" / "small.yaml"


@pytest.fixture(scope="module")
def small_random():
    return load_backbone(BackboneConfig(profile="small", source="random"))


def test_small_backbone_is_taef2_with_a_32_channel_prior(small_random):
    x = torch.rand(1, 3, 64, 96)
    z = small_random.encode(x)
    assert z.shape == (1, 32, 8, 12)
    assert small_random.decode(z).shape == (1, 3, 64, 96)
    assert small_random.unet.config.in_channels == 32 and small_random.identity.startswith("small:")


def test_prior_loss_is_the_eps_mse_of_sd_schedule(small_random):
    prior = TrainablePrior(small_random, prior_timesteps=200)
    z0 = torch.randn(2, 32, 8, 8)
    torch.manual_seed(3)
    terms = prior(torch.zeros(2, 3, 64, 64), ["", "a boat"], z0)
    # The same draw by hand: t, then eps, in the order forward draws them.
    torch.manual_seed(3)
    t = torch.randint(0, 200, (2,))
    noise = torch.randn_like(z0)
    a = sd_noise_schedule().alphas_cumprod[t].reshape(-1, 1, 1, 1)
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
    with torch.no_grad():
        eps = small_random.unet(z_t, t, encoder_hidden_states=small_random.encode_text(["", "a boat"])).sample
    assert float(terms["loss_eps"].detach()) == pytest.approx(float(((eps - noise) ** 2).mean()), rel=1e-5)
    assert int(t.max()) < 200
    # SD 2.1's schedule: scaled-linear betas from 0.00085 to 0.012 over 1000 steps.
    assert float(sd_noise_schedule().alphas_cumprod[-1]) == pytest.approx(0.0047, abs=2e-4)


def test_stage0_only_for_the_small_profile():
    with pytest.raises(ConfigError, match="stage 0 trains the diffusion prior"):
        build_config(TrainConfig, {"stage": 0})


def test_prior_folder_round_trip_and_bad_folders(small_random, tmp_path):
    save_prior(small_random.unet, tmp_path / "p")
    loaded = load_backbone(BackboneConfig(profile="small", source=str(tmp_path / "p")))
    assert loaded.identity == small_random.identity  # named by weights, not by path
    with pytest.raises(ModelLoadError, match="no diffusion prior"):
        load_backbone(BackboneConfig(profile="small", source=str(tmp_path / "nothing")))


@pytest.mark.slow
def test_stage0_on_ray_then_stage1_builds_on_it(tmp_path, ray_cluster, monkeypatch):
    from mlflow.tracking import MlflowClient

    from resulic.codec.store import load_codec
    from resulic.train.trainer import run_training

    monkeypatch.chdir(tmp_path)
    run = {"storage_path": str(tmp_path / "rr"), "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "experiment": "tests", "checkpoint_every": 2}
    # data.loader 'worker' (no Ray Data start-up in either run): this test is about stage 0 and
    # the lineage; test_train_ray runs the Ray Data loader.
    common = {
        "data": {"source": "samples", "crop_size": 128, "validation_images": 1, "validation_size": 64,
                 "loader": "worker"},
        "optim": {"steps": 2, "batch_size": 1},
        "workers": {"num_workers": 1, "cpus_per_worker": 1},
    }
    model = load_config(ModelConfig, SMALL, ["backbone.source=random"]).model_dump(mode="json")
    s0 = build_config(TrainConfig, {"stage": 0, "model": model, **common, "loss": {"prior_timesteps": 300},
                                    "run": {**run, "name": "s0", "checkpoint_score": "val_loss_eps"}})
    prior = run_training(s0)
    folder = Path(prior.model_dir)
    assert (folder / "unet" / "config.json").is_file()
    assert json.loads((folder / "training.json").read_text())["stage"] == 0
    client = MlflowClient(run["tracking_uri"])
    assert "val_loss_eps" in client.get_run(prior.mlflow_run_id).data.metrics

    model["backbone"]["source"] = str(folder)
    s1 = build_config(TrainConfig, {"stage": 1, "model": model, **common, "run": {**run, "name": "s1"}})
    codec_run = run_training(s1)
    assert client.get_run(codec_run.mlflow_run_id).data.tags["prior_run"] == prior.mlflow_run_id
    monkeypatch.setenv("RESULIC_BACKBONE_ROOTS", str(tmp_path))  # the stage-0 folder is a permitted backbone
    codec = load_codec(codec_run.model_dir)
    # The stage-1 codec's frozen UNet is the published prior.
    reloaded = load_backbone(BackboneConfig(profile="small", source=str(folder)))
    assert codec.backbone.identity == reloaded.identity
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    from PIL import Image

    out = codec.decode(codec.encode(Image.fromarray(img)).data).image
    assert out.size == (64, 64)
