"""Driver side of a training stage: check the data, find or create the MLflow run, run the
``TorchTrainer`` and publish the result as a trained-codec folder.

Resuming is Ray Train's: the same ``run.name`` under the same ``run.storage_path`` restores the
latest checkpoint (a finished run simply has nothing left to do). The MLflow run is found again
by the same name, and refused if the config that defines the result has changed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..services import cluster, tracking
from ..services import storage as storage_lib
from ..config import ModelConfig
from ..data.dataset import check_images, dataset_hash, epoch_items, resolve_records, split_validation, train_dataset
from ..errors import ConfigError, ModelLoadError, ResulicError
from ..images import write_atomic
from ..models.backbone import PRIOR_SUBFOLDER
from ..models.backbone import SMALL_PRIOR as PRIOR_BUNDLED
from .checkpoint import CODEC_DIR, PRIOR_DIR
from .config import TrainConfig, storage_root

SHIPPED_PREFIX = "shipped:"  # init_from: shipped:<rate point> starts from a shipped codec
MODEL_DIR = storage_lib.MODEL_DIR  # <storage>/<run name>/model: the run's final trained-codec folder
TRAINING_INFO = "training.json"


@dataclass
class TrainingOutcome:
    run_name: str
    mlflow_run_id: str
    checkpoint_path: str
    model_dir: str  # the final trained-codec folder: <storage>/<run>/model (a path or a URI)
    metrics: dict
    resumed: bool


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def resolve_init(cfg: TrainConfig, storage: str) -> tuple[str | None, str | None]:
    """(location of the model stage 2 starts from, its MLflow run id if it was trained here).

    ``init_from`` is a run name under the storage path (its published ``model`` folder) or a
    trained-codec folder; the location may be a URI, which each worker downloads.
    """
    if cfg.init_from is None:
        return None, None
    if cfg.init_from.startswith(SHIPPED_PREFIX):  # a rate point that ships with the package
        from ..codec import shipped

        return str(shipped.folder_for(cfg.init_from[len(SHIPPED_PREFIX):])), None
    for location in (storage_lib.join(storage, cfg.init_from, MODEL_DIR), cfg.init_from):
        if storage_lib.file_exists(storage_lib.join(location, "manifest.json")):
            parent = None
            info = storage_lib.join(location, TRAINING_INFO)
            if storage_lib.file_exists(info):
                folder = Path(location) if not storage_lib.is_uri(location) else storage_lib.download_folder(location)
                parent = json.loads((folder / TRAINING_INFO).read_text()).get("mlflow_run_id")
            return (location if storage_lib.is_uri(location) else str(Path(location).resolve())), parent
    raise ConfigError(
        f"init_from: {cfg.init_from!r} is neither a finished run under {storage} nor a trained-codec folder"
    )


def _trainer(cfg: TrainConfig, storage: str, loop_config: dict, datasets: dict, callbacks=()):
    import ray.train
    from ray.train.torch import TorchTrainer

    from .loop import train_loop_per_worker

    w = cfg.workers
    resources = {"CPU": w.cpus_per_worker, **({"GPU": 1} if w.use_gpu else {})}
    has_score = bool(loop_config["validation"])
    checkpointing = ray.train.CheckpointConfig(
        num_to_keep=cfg.run.keep_checkpoints,
        checkpoint_score_attribute=cfg.run.checkpoint_score if has_score else None,
        checkpoint_score_order=cfg.run.checkpoint_score_order,
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=w.num_workers, use_gpu=w.use_gpu, resources_per_worker=resources,
                                                    placement_strategy=w.placement_strategy),
        run_config=ray.train.RunConfig(
            name=cfg.run.name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures,
                                                   controller_failure_limit=start_retries(cfg.run.schedule_timeout_s)),
            checkpoint_config=checkpointing,
            callbacks=list(callbacks),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # not a line per report
            # Train's print patch re-emits every print of the loop through a logger: shown twice.
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
        ),
        datasets=datasets,
    )


def same_science(stored_hash: str | None, cfg: TrainConfig) -> bool:
    """Whether a run tagged with ``stored_hash`` was started with ``cfg``'s science: today's hash
    (values that differ from their defaults), or the every-key hash that runs started by earlier
    releases carry."""
    return stored_hash in (cfg.science_hash(), cfg.science_hash(every_key=True))


def run_training(cfg: TrainConfig, *, extra_tags: dict[str, str] | None = None, callbacks=()) -> TrainingOutcome:
    """Run (or resume) one stage. ``extra_tags`` go on a new MLflow run (a sweep passes
    ``mlflow.parentRunId``); ``callbacks`` are Ray Train callbacks (a sweep passes Tune's)."""
    storage = storage_root(cfg.run.storage_path)
    local = "://" not in storage
    run_dir = Path(storage) / cfg.run.name if local else None
    records = resolve_records(cfg.data.source, Path(storage) / "_data" if local else Path(".cache/resulic"))
    train_records, validation = split_validation(records, cfg.data.validation_images)
    check_images(train_records, cfg.data.crop_size)
    check_images(validation, 16)
    if cfg.workers.num_workers > len(train_records):
        raise ConfigError(
            f"workers.num_workers: {cfg.workers.num_workers} workers but only {len(train_records)} training image(s)"
        )
    init_folder, parent_run = resolve_init(cfg, storage)

    uri = tracking.tracking_uri(cfg.run.tracking_uri)
    client = tracking.client(uri)
    experiment = tracking.ensure_experiment(client, cfg.run.experiment)
    config_hash = cfg.science_hash()
    existing = tracking.find_run(client, experiment, cfg.run.name, storage)
    if existing is not None:
        if not same_science(existing.data.tags.get(tracking.CONFIG_HASH_TAG), cfg):
            raise ConfigError(
                f"run.name: {cfg.run.name!r} already exists in {storage} with a different config "
                f"({existing.data.tags.get(tracking.CONFIG_HASH_TAG)} != {config_hash}); pick a new run.name "
                "or restore the config to resume it"
            )
        run_id = existing.info.run_id
        tracking.reopen_run(client, run_id)
    else:
        model_cfg: ModelConfig = cfg.model  # type: ignore[assignment]
        tags = {
            "stage": str(cfg.stage),
            tracking.CONFIG_HASH_TAG: config_hash,
            "code_version": code_version(),
            "dataset_hash": dataset_hash(records),
            "dataset_source": cfg.data.source,
            "profile": model_cfg.backbone.profile,
            "rate_point": model_cfg.rate_point.name,
            "lpips_backbone": "vgg16 (loaded)" if cfg.loss.lpips_vgg_weights else "random (no VGG16 weights)",
        }
        if init_folder:
            tags["init_from"] = init_folder
        if parent_run:
            tags["parent_stage_run"] = parent_run
        prior_run = _prior_run(model_cfg)
        if prior_run:  # lineage: the stage-0 run whose prior this stage builds on
            tags["prior_run"] = prior_run
        tags.update(extra_tags or {})
        run_id = tracking.start_run(client, experiment, cfg.run.name, storage, tags)
    tracking.log_params(client, run_id, {**cfg.flat(), "lambda_rate_effective": cfg.lambda_rate})

    loop_config = {
        "train": cfg.model_dump(mode="json"),
        "init_folder": init_folder,
        "validation": [{"path": r.path, "caption": r.caption} for r in validation],
        "tracking_uri": uri,
        "run_id": run_id,
        "fail_marker": str((run_dir or Path(".cache/resulic") / cfg.run.name) / ".injected_failure"),
        "run_dir": str(run_dir) if run_dir is not None else None,  # checkpoints Train may not have registered
    }
    if cfg.stage != 0 and cfg.model.compressor.linear_transform:  # type: ignore[union-attr]
        loop_config["klt_sources"] = [{"path": r.path, "latent": r.latent} for r in train_records]
    cluster.ensure_ray(cfg.workers.num_workers * cfg.workers.cpus_per_worker)
    cluster.quiet_data_progress()
    if cfg.data.loader == "worker":  # the workers crop their own rows (data.loader)
        loop_config["train_items"] = epoch_items(train_records, cfg.data.crop_size)
        datasets = {}
    else:
        datasets = {"train": train_dataset(train_records, cfg.data.crop_size, cfg.data.caption_dropout, cfg.data.hflip)}
    try:
        result = _trainer(cfg, storage, loop_config, datasets, callbacks).fit()
    except ResulicError:
        client.set_terminated(run_id, status="FAILED")
        raise
    except Exception as exc:  # Ray wraps worker errors; keep the message, not the traceback
        client.set_terminated(run_id, status="FAILED")
        raise ResulicError(f"training failed: {_unplaced_message(exc, cfg) or _root_message(exc)}") from exc
    if result.checkpoint is None:
        client.set_terminated(run_id, status="FAILED")
        raise ResulicError("training finished without a checkpoint")
    model_dir = storage_lib.join(storage, cfg.run.name, MODEL_DIR)
    with result.checkpoint.as_directory() as folder:
        info = {"run_name": cfg.run.name, "mlflow_run_id": run_id, "checkpoint": result.checkpoint.path, "stage": cfg.stage}
        published = PRIOR_DIR if cfg.stage == 0 else CODEC_DIR
        _publish(Path(folder) / published, model_dir, info)
        client.log_artifacts(run_id, str(Path(folder) / published), artifact_path=published)
    client.set_tag(run_id, "checkpoint", result.checkpoint.path)
    client.set_terminated(run_id, status="FINISHED")
    return TrainingOutcome(cfg.run.name, run_id, result.checkpoint.path, model_dir, dict(result.metrics or {}), existing is not None)


def _prior_run(model_cfg: ModelConfig) -> str | None:
    """The MLflow run id of the stage-0 run that trained ``backbone.source``'s prior, if any."""
    source = model_cfg.backbone.source
    if model_cfg.backbone.profile != "small" or source == "random":
        return None
    info = (PRIOR_BUNDLED if source == "bundled" else Path(source)) / TRAINING_INFO
    if not info.is_file():
        return None
    return json.loads(info.read_text()).get("mlflow_run_id")


def _publish(codec_folder: Path, target: str, info: dict) -> None:
    """Copy the final codec to ``<storage>/<run>/model``, replacing an earlier copy whole."""
    if not ((codec_folder / "manifest.json").is_file() or (codec_folder / PRIOR_SUBFOLDER / "config.json").is_file()):
        raise ModelLoadError(f"{codec_folder}: the final checkpoint holds no trained codec or prior")
    staged = Path(tempfile.mkdtemp(prefix="resulic-model-")) / MODEL_DIR
    shutil.copytree(codec_folder, staged)
    write_atomic(staged / TRAINING_INFO, (json.dumps(info, indent=2) + "\n").encode())
    if storage_lib.is_uri(target):
        storage_lib.upload_folder(staged, target)
    else:
        target_path = Path(target)
        tmp = target_path.with_name(f".{target_path.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.move(str(staged), tmp)
        if target_path.exists():
            shutil.rmtree(target_path)
        tmp.rename(target_path)
    shutil.rmtree(staged.parent, ignore_errors=True)


def start_retries(schedule_timeout_s: float) -> int:
    """How many times Ray Train may start a worker group again after one that could not be placed
    in time (each try waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, 60 s by default), so that all
    tries together last about ``schedule_timeout_s`` (Train's ``controller_failure_limit``)."""
    raw = os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")
    try:
        per_try = float(raw)
    except ValueError:
        per_try = 0.0
    if not per_try > 0:
        raise ResulicError(f"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S={raw!r}: expected a number of seconds > 0")
    return max(0, math.ceil(schedule_timeout_s / per_try) - 1)


def _unplaced_message(exc: BaseException, cfg: TrainConfig) -> str | None:
    """One line for a worker group that could never be placed: what it asked for, the keys that
    set it, and what the cluster's nodes have; None for any other failure."""
    if not any(type(e).__name__ == "WorkerGroupStartupTimeoutError" or "worker group startup timed out" in str(e)
               for e in _causes(exc)):
        return None
    w = cfg.workers
    asked = f"{w.num_workers} worker(s) of {w.cpus_per_worker:g} CPU{' and 1 GPU' if w.use_gpu else ''}"
    try:
        import ray

        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        have = ", ".join(f"{r.get('CPU', 0):g} CPU" + (f" + {r['GPU']:g} GPU" if r.get("GPU") else "") for r in nodes)
    except Exception:  # noqa: BLE001 (the message must not fail: the cluster may be gone)
        have = "unknown"
    return (f"its {asked} could not be placed within run.schedule_timeout_s ({cfg.run.schedule_timeout_s:g} s); "
            f"the cluster's nodes have {have or 'nothing'} — lower workers.num_workers or workers.cpus_per_worker, "
            f"or add a node that fits a worker")


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps, outermost first: Ray nests a worker's exception in several
    wrappers, and Train's controller errors hold theirs as ``controller_failure``."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 32:
        chain.append(seen)
        seen = seen.__cause__ or getattr(seen, "controller_failure", None)
    return chain


def _root_message(exc: BaseException) -> str:
    """The innermost cause's message."""
    seen = _causes(exc)[-1]
    text = str(seen).strip().splitlines()
    return text[-1] if text else seen.__class__.__name__
