"""The training job's schema (``configs/train/*.yaml``): stage, model, data, losses, optimiser,
workers and the Ray/MLflow run.

Defaults are a short stage 1 of the embedded ``tiny`` profile on the sample photos, two CPU
workers, local Ray, ``./ray_results`` and the SQLite store ``./mlflow.db``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..config import ModelConfig, StrictModel, load_config


class DataConfig(StrictModel):
    # An image folder, a JSONL manifest ({"path": ..., "caption": ...} per line; paths relative
    # to the manifest, absolute, or URIs such as s3://...), or 'samples' for scikit-image's photos.
    source: str = "samples"
    crop_size: int = Field(128, ge=128, description="random square crops; a multiple of 128 px")
    caption_dropout: float = Field(0.3, ge=0, le=1, description="probability a caption is replaced by ''")
    validation_images: int = Field(1, ge=0, description="held-out images, fixed by name, for validation")
    validation_size: int = Field(128, ge=16, description="centre crop side of validation images")
    hflip: bool = Field(False, description="mirror half of the crops that have no cached latent (a mirrored latent is not the mirrored photo's)")
    # ray_data: a Ray Data pipeline streams crops to the workers' shards (data anywhere the
    # cluster can read, decoded off the training process). worker: each worker crops its share
    # of the records itself, in its own process: on a CPU-bound machine Ray Data's per-row
    # overhead (≈ 0.2 s a row on 2 busy cores) cost more than the training step it fed.
    loader: Literal["ray_data", "worker"] = "ray_data"

    @field_validator("crop_size")
    @classmethod
    def _stride(cls, v: int) -> int:
        if v % 128:
            raise ValueError(f"{v} is not a multiple of 128 (the model's stride)")
        return v


class LossConfig(StrictModel):
    """RESULIC.md §4. Stage 1: eps + λ_R·rate + λ_g·guide. Stage 2 adds λ_d·MSE + λ_p·LPIPS.
    Stage 0 (the diffusion prior): eps only, over t < prior_timesteps."""

    lambda_rate: float | None = Field(None, gt=0, description="λ_R; null = the rate point's lambda_rate")
    lambda_guide: float = Field(1.0, ge=0, description="L_D = ||z_c - z_0||² (RESULIC.md §0 item 9)")
    # 0: a compressor warm-up — the latent codec alone (rate + guide), the control module and the
    # prior are not run (an order of magnitude cheaper a step on a CPU).
    lambda_eps: float = Field(1.0, ge=0, description="weight of the eps-loss (1 in RESULIC.md §4)")
    # The compressor's distortion where it matters: z_c decoded by the frozen autoencoder and
    # compared with the pixels (MSE on the [0, 1] scale). The latent MSE (lambda_guide) weighs
    # every latent channel alike, whatever it does to the picture.
    lambda_pixel: float = Field(0.0, ge=0, description="MSE of VAE-Dec(z_c) against the image, [0, 1] scale")
    # A CPU pays for the decoder's backward by the pixel: the pixel term decodes a random window
    # of the first pixel_samples crops of each batch (the rest see the latent terms only).
    pixel_samples: int = Field(2, ge=1, description="crops per batch whose z_c is decoded for lambda_pixel")
    pixel_window: int = Field(128, ge=8, description="side (px, a multiple of 8) of the decoded window")
    # On the same decoded window: EfficientNet-Lite0 (ImageNet) features against the photo's
    # (train/feature_loss.py). Pixel MSE alone makes z_c decode to smooth averages that ST-LPIPS
    # (the judge, never a loss) ranks below the latent-loss model it started from.
    # Stage 2 applies it to the decoded x̂0 beside lambda_mse (LPIPS-VGG's trunk cannot be fetched here).
    lambda_feature: float = Field(0.0, ge=0, description="perceptual term on the decoded window (stage 1: needs lambda_pixel's window; stage 2: on x̂0)")
    # A variable-rate model's samples draw their rate position from [0, anchors - 1]; a run that
    # serves part of the range (one tier of a tiered release) spends every sample there.
    position_range: tuple[float, float] | None = Field(
        None, description="variable-rate: draw rate positions (0 = first anchor) from [low, high] only")
    # While optim.freeze_transforms_steps holds the transforms and gains, the distortion cannot
    # change and only the bits can: 'lambda' weighs each sample's bits by its anchor's λ_R (the
    # lowest anchor's λ then outweighs the others a hundredfold); 'log' minimises every sample's
    # log bits, the same relative saving at every rate — what a BD-rate measures.
    rate_only_objective: Literal["lambda", "log"] = Field(
        "lambda", description="the rate term while the transforms are frozen: λ_R-weighted bits or log bits")
    lambda_mse: float = Field(1.0, ge=0, description="stage 2: pixel MSE on VAE-decoded x̂0, x in [-1, 1]")
    lambda_lpips: float = Field(1.0, ge=0, description="stage 2: LPIPS-VGG on VAE-decoded x̂0")
    lambda_adversarial: float = Field(0.0, ge=0, description="stage 2: optional hinge-GAN term, off by default")
    # The critic: 'patch', a PatchGAN on pixels, or 'features', heads on the frozen pretrained
    # EfficientNet-Lite0 features (train/discriminator.py; round 12 found the PatchGAN too weak).
    discriminator: Literal["patch", "features"] = Field(
        "patch", description="stage 2: the adversarial term's critic (patch: PatchGAN on pixels; features: heads on EfficientNet-Lite0 features)")
    # A discriminator that starts with the generator never became a critic in a CPU run's few
    # thousand steps (small-profile.md, round 12): it can learn alone first.
    adversarial_warmup_steps: int = Field(
        0, ge=0, description="stage 2: first steps in which only the discriminator learns (the generator's adversarial term is off)")
    prior_timesteps: int = Field(1000, ge=1, le=1000, description="stage 0: t ~ U{0..prior_timesteps-1}")
    # torchvision VGG16 weights (a local .pth) for LPIPS' backbone; without them the backbone is
    # random (LPIPS' own linear layers ship in the package) and the run is tagged so.
    lpips_vgg_weights: str | None = None

    @field_validator("pixel_window")
    @classmethod
    def _window_on_grid(cls, v: int) -> int:
        if v % 8:
            raise ValueError(f"{v} is not a multiple of 8 (the latent grid)")
        return v

    @field_validator("position_range")
    @classmethod
    def _ordered_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 <= v[0] <= v[1]:
            raise ValueError(f"{list(v)}: needs 0 <= low <= high (anchor positions)")
        return v


class OptimConfig(StrictModel):
    steps: int = Field(30, ge=1, description="total optimiser steps of this stage")
    batch_size: int = Field(2, ge=1, description="per worker")
    lr: float = Field(1e-4, gt=0, description="AdamW for compressor + control module")
    aux_lr: float = Field(1e-3, gt=0, description="AdamW for the entropy bottleneck's quantiles")
    weight_decay: float = Field(0.01, ge=0)
    # Adam moves a parameter by about lr per step, so at the compressor's lr a gain vector (log
    # domain) could travel less than a factor e in 1000 steps: too slow for an anchor to reach
    # its rate when a variable model starts from a fixed-rate one.
    gain_lr: float | None = Field(None, gt=0, description="variable-rate gain vectors (default: lr); no weight decay")
    transform_lr: float | None = Field(None, gt=0, description="the compressor's analysis/synthesis transforms (default: lr)")
    disc_lr: float | None = Field(None, gt=0, description="the discriminator's Adam (loss.lambda_adversarial; default: lr)")
    # A compressor started from a good transform (its KLT path) first learns its entropy model
    # with the transforms and gains frozen: until the entropy model has learned, the rate
    # term's gradient is noise that would pull the transforms off their starting point.
    freeze_transforms_steps: int = Field(0, ge=0, description="steps during which only the entropy model learns")
    # The control module learns to read a finished compressor's z_c: the compressor runs without
    # gradients (its z_c exactly as a decoder rebuilds it) and no rate or latent term is trained.
    # Stage 1 with the compressor free moves the rate as well (200 such steps once tripled it).
    freeze_compressor: bool = Field(False, description="train the control module alone (stages 1-2)")
    # The decoder side of a finished compressor learns alone: the analysis, the gains and the
    # entropy model are frozen, so every level's bits stay exactly as they are, while the
    # synthesis (and the inverse gains, which only the decoder applies) learns to rebuild ŷ.
    synthesis_only: bool = Field(False, description="train the compressor's synthesis alone (rates unchanged)")
    # A KLT-started compressor's nonlinear branches start at zero beside its linear path; they
    # can learn what the linear code misses (its low end) while the linear path, which holds the
    # upper rates' fidelity, stays exactly as it is.
    freeze_linear_path: bool = Field(False, description="keep a KLT-started compressor's linear path as it is")
    grad_clip: float | None = Field(None, gt=0)
    # cosine: every learning rate falls along a half cosine from its value at step 0 to
    # min_lr_ratio of it at the last step (a function of the step alone, so a resumed run
    # continues on the same curve); the last steps at a small rate are worth a few tenths of a dB.
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="cosine: the final fraction of each learning rate")
    # Every rate rises linearly over the first warmup_steps: a compressor started from a good
    # point (its KLT path) is not pushed off it while its entropy models are still random.
    warmup_steps: int = Field(0, ge=0, description="steps over which the learning rates rise linearly from 0")
    seed: int = 0


class WorkersConfig(StrictModel):
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1, gt=0)
    bf16: bool = Field(False, description="bf16 autocast of the forward pass (GPUs)")
    gradient_checkpointing: bool = False
    # PACK fills one node first (8 GPU workers on one gpu-8x node); SPREAD puts the workers on
    # different nodes where it can (best effort), so one lost node takes fewer of them.
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"


class RunConfig(StrictModel):
    # Deterministic: submitting the same name with the same storage path resumes that run.
    name: str = "stage1-tiny"
    storage_path: str = Field("ray_results", description="local folder, NFS path or s3://… URI")
    experiment: str = "resulic-train"
    tracking_uri: str | None = Field(None, description="null = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    checkpoint_every: int = Field(10, ge=1, description="steps between validation + checkpoint")
    keep_checkpoints: int = Field(2, ge=1)
    checkpoint_score: str = Field("val_bpp_real", description="validation metric that ranks checkpoints")
    checkpoint_score_order: Literal["min", "max"] = "min"
    max_failures: int = Field(2, ge=-1, description="restarts of the worker group (-1 = unlimited)")
    # Ray Train gives a worker group RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (60 s) to be placed and
    # then tries again, without limit unless one is set: a job whose workers fit no node waited
    # for ever (issue 26). Long enough by default for an autoscaler to add a node.
    schedule_timeout_s: float = Field(900.0, gt=0, description="seconds the worker group may wait to be placed, all tries together, before the run fails")
    log_every: int = Field(5, ge=1, description="steps between progress lines")
    # Test switch: rank 0 raises once when it reaches this step (a marker file in the run folder
    # makes it once), to exercise restart and resume.
    fail_once_at_step: int | None = Field(None, ge=1)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v) or v.startswith("."):
            raise ValueError("use letters, digits, '-', '_' and '.' (it names a folder)")
        return v


class TrainConfig(StrictModel):
    # 0: the diffusion prior (profiles without a pretrained one); 1 and 2: RESULIC.md §4.
    stage: Literal[0, 1, 2] = 1
    # A model YAML (configs/model/*.yaml) or the model config inline; default: the tiny profile.
    model: ModelConfig | str = Field(default_factory=ModelConfig)
    # Stage 2 starts from the whole stage-1 model: a run name under the same storage path, or a
    # trained-codec folder, or shipped:<rate point>. Stage 1 may start from one too (fine-tuning
    # a trained codec to a new rate point); without it stage 1 starts fresh.
    init_from: str | None = None
    # A variable-rate model started from init_from keeps its trained gains unless told: with
    # reset_gains its anchors restart at gain_k = sqrt(loss.lambda_rate / λ_k) for the λ_R list
    # of model.rate_point.variable, uniform over y's channels — to move where its anchors sit.
    reset_gains: bool = Field(False, description="with init_from: start the gains afresh from the anchors' λ_R")
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @field_validator("model")
    @classmethod
    def _load_model_file(cls, v: ModelConfig | str) -> ModelConfig:
        return load_config(ModelConfig, v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _stage_rules(self) -> "TrainConfig":
        if self.stage == 2 and not self.init_from:
            raise ValueError("init_from: stage 2 starts from a stage-1 model; name its run or folder")
        if self.stage == 0 and self.optim.freeze_transforms_steps:
            raise ValueError("optim.freeze_transforms_steps: stage 0 trains the prior, which has no compressor transforms")
        if self.loss.rate_only_objective != "lambda" and not self.optim.freeze_transforms_steps:
            raise ValueError("loss.rate_only_objective: it applies while the transforms are frozen; "
                             "set optim.freeze_transforms_steps")
        if self.optim.freeze_compressor:
            if self.stage == 0:
                raise ValueError("optim.freeze_compressor: stage 0 trains the prior, which has no compressor")
            if self.loss.lambda_eps == 0:
                raise ValueError("optim.freeze_compressor: with loss.lambda_eps 0 nothing would train (the control module learns from the eps-loss)")
            if self.optim.freeze_transforms_steps:
                raise ValueError("optim.freeze_transforms_steps: the whole compressor is frozen (optim.freeze_compressor)")
        if self.optim.synthesis_only:
            if self.stage == 0:
                raise ValueError("optim.synthesis_only: stage 0 trains the prior, which has no compressor")
            if self.optim.freeze_compressor:
                raise ValueError("optim.synthesis_only: the whole compressor is frozen (optim.freeze_compressor)")
            if self.optim.freeze_transforms_steps:
                raise ValueError("optim.freeze_transforms_steps: with optim.synthesis_only the entropy model is frozen, "
                                 "so a rate-only phase would train nothing")
            if self.loss.lambda_pixel == 0 and self.loss.lambda_guide == 0:
                raise ValueError("optim.synthesis_only: with loss.lambda_pixel and loss.lambda_guide both 0 "
                                 "nothing would teach the synthesis")
        if self.optim.freeze_linear_path and (self.stage == 0 or self.optim.freeze_compressor):
            raise ValueError("optim.freeze_linear_path: " + ("stage 0 trains the prior, which has no compressor"
                             if self.stage == 0 else "the whole compressor is frozen (optim.freeze_compressor)"))
        if self.model.rate_point.low_tier is not None and not self.optim.freeze_compressor:  # type: ignore[union-attr]
            raise ValueError("model: rate_point.low_tier puts two trained models behind one rate level; their "
                             "compressors are assembled (jobs/release_small.py tiered), not trained — train each on "
                             "its own, or set optim.freeze_compressor to train the control module they share")
        if self.reset_gains and (not self.init_from or self.model.rate_point.variable is None):  # type: ignore[union-attr]
            raise ValueError("reset_gains: needs init_from and a variable-rate model (model.rate_point.variable)")
        if self.stage == 0 and self.init_from:
            raise ValueError("init_from: stage 0 continues the prior named by model.backbone.source")
        if self.stage == 0 and self.model.backbone.profile != "small":  # type: ignore[union-attr]
            raise ValueError("stage: stage 0 trains the diffusion prior of the 'small' profile; "
                             f"the {self.model.backbone.profile!r} profile's UNet is not trained here")  # type: ignore[union-attr]
        if self.stage == 0 and self.loss.lambda_eps != 1.0:
            raise ValueError("loss.lambda_eps: stage 0 trains the prior on the eps-loss alone; its weight stays 1")
        if self.stage == 2 and self.loss.lambda_eps == 0:
            raise ValueError("loss.lambda_eps: stage 2 decodes x̂0 from the predicted noise; keep the eps-loss (> 0)")
        if self.loss.position_range is not None:
            variable = self.model.rate_point.variable  # type: ignore[union-attr]
            if variable is None:
                raise ValueError("loss.position_range: needs a variable-rate model (model.rate_point.variable)")
            if self.loss.position_range[1] > variable.anchors - 1:
                raise ValueError(f"loss.position_range: {self.loss.position_range[1]} is past the last anchor "
                                 f"({variable.anchors - 1}; positions count anchors from 0)")
        if self.loss.lambda_feature > 0 and self.loss.lambda_pixel == 0 and self.stage != 2:
            raise ValueError("loss.lambda_feature: in stage 1 it judges lambda_pixel's decoded window; set loss.lambda_pixel > 0")
        if self.stage == 1 and self.loss.lambda_adversarial > 0:
            raise ValueError("loss.lambda_adversarial: the adversarial term belongs to stage 2")
        if self.loss.lambda_adversarial == 0:
            if self.loss.adversarial_warmup_steps:
                raise ValueError("loss.adversarial_warmup_steps: there is no discriminator (loss.lambda_adversarial is 0)")
            if self.loss.discriminator != "patch":
                raise ValueError("loss.discriminator: there is no discriminator (loss.lambda_adversarial is 0)")
            if self.optim.disc_lr is not None:
                raise ValueError("optim.disc_lr: there is no discriminator (loss.lambda_adversarial is 0)")
        return self

    @property
    def lambda_rate(self) -> float:
        assert isinstance(self.model, ModelConfig)
        return self.loss.lambda_rate if self.loss.lambda_rate is not None else self.model.rate_point.lambda_rate

    def flat(self) -> dict[str, object]:
        """Dotted keys -> values, for MLflow params."""
        out: dict[str, object] = {}

        def walk(prefix: str, node: object) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = node

        walk("", self.model_dump(mode="json"))
        return out

    def science_hash(self, every_key: bool = False) -> str:
        """Hash of what defines the result (not workers, run bookkeeping, step count or data loader), so a
        resumed run can be checked against the config it was started with. Only values that differ
        from their defaults count: a release that adds a key (at a default that changes nothing)
        leaves every earlier run resumable. ``every_key``: the hash before that rule (defaults
        included), which runs started by earlier releases carry."""
        data = self.model_dump(mode="json", exclude_defaults=not every_key)
        for operational in ("workers", "run"):
            data.pop(operational, None)
        for section, key in (("optim", "steps"), ("data", "loader")):  # loader: how crops reach the workers
            data.get(section, {}).pop(key, None)
            if data.get(section) == {}:
                data.pop(section)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def storage_root(storage_path: str) -> str:
    """A storage path as Ray needs it: URIs as given, local folders absolute."""
    if "://" in storage_path:
        return storage_path
    return str(Path(storage_path).expanduser().resolve())
