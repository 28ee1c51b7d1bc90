"""The per-worker training loop that Ray Train runs on every worker.

Every worker: build the backbone and the trained parts (from the run's latest checkpoint, the
stage-1 model, or fresh), wrap them in DDP, and step through its shard of the Ray Data pipeline.
Every ``checkpoint_every`` steps rank 0 validates through real files, writes a checkpoint and
reports it (all workers report: it is a barrier). Rank 0 alone talks to MLflow, and only after
the checkpoint is stored: the metrics MLflow shows are those of steps a checkpoint holds, so a
restarted run never logs a step twice and never leaves a gap.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..services import cluster  # noqa: F401  (sets Ray's environment before ray is imported)
from ..config import RATE_LEVELS, ModelConfig
from ..data.dataset import center_crop, load_image, worker_batches
from ..metrics.weights import RANDOM_SUFFIX
from ..models.backbone import load_backbone
from ..evaluation.roundtrip import psnr
from ..services.runtime import configure_threads, quiet_libraries
from ..services.storage import download_folder, is_uri
from .checkpoint import (
    PRIOR_DIR, fresh_parts, load_state, newest_stored_checkpoint, parts_from_folder, save_checkpoint, save_prior_checkpoint,
    snapshot_codec,
)
from .config import TrainConfig
from .model import TrainableCodec
from .prior import TrainablePrior, validation_loss
from .perceptual import build_lpips


# A checkpoint's state: the MLflow rows (steps since the previous checkpoint, its validation)
# that were logged right after it was stored.
STORED_METRICS = "mlflow_rows"


class InjectedFailure(RuntimeError):
    """Raised once by the ``run.fail_once_at_step`` test switch."""


def _optimizers(trainable: TrainableCodec, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    groups = trainable.parameter_groups()
    o = cfg.optim
    main = [{"params": groups["main"], "name": "main"}]
    if groups.get("transform"):
        main.append({"params": groups["transform"], "lr": o.transform_lr or o.lr, "name": "transform"})
    if "gains" in groups:  # log-domain gains: their own lr, and no decay pulling every anchor to gain 1
        main.append({"params": groups["gains"], "lr": o.gain_lr or o.lr, "weight_decay": 0.0, "name": "gains"})
    optimizers = {"main": torch.optim.AdamW(main, lr=o.lr, weight_decay=o.weight_decay)}
    if groups.get("aux"):  # stage 0 has no entropy models; a frozen compressor trains none
        optimizers["aux"] = torch.optim.AdamW(groups["aux"], lr=o.aux_lr, weight_decay=0.0)
    if "disc" in groups:
        optimizers["disc"] = torch.optim.Adam(groups["disc"], lr=o.disc_lr or o.lr, betas=(0.5, 0.9))
    return optimizers


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """The learning rates' multiplier at ``step`` (1-based) of ``total``."""
    o = cfg.optim
    warmup = min(1.0, step / o.warmup_steps) if o.warmup_steps else 1.0
    if o.schedule == "constant" or total <= 1:
        return warmup
    progress = min(1.0, (step - 1) / (total - 1))
    return warmup * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


FROZEN_WHILE_ENTROPY_LEARNS = ("transform", "gains")


def _set_lr(optimizers: dict[str, torch.optim.Optimizer], base: dict[str, list[float]], factor: float,
            frozen: bool = False) -> None:
    """Every group's rate at ``factor`` of its base; ``frozen``: the transforms and gains at 0."""
    for name, opt in optimizers.items():
        for group, lr in zip(opt.param_groups, base[name]):
            group["lr"] = 0.0 if frozen and group.get("name") in FROZEN_WHILE_ENTROPY_LEARNS else lr * factor


def _batches(shard, batch_size: int):
    """Endless batches from this worker's shard; each pass is a new epoch of crops."""
    while True:
        seen = False
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=False, prefetch_batches=2):
            seen = True
            yield batch
        if not seen:
            raise RuntimeError("this worker's data shard is empty: use fewer workers or more images")


def _images(batch: dict, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(batch["image"], dtype=np.uint8)).permute(0, 3, 1, 2).float().div(255).to(device)


def _grid(pairs: list[tuple[Image.Image, Image.Image]]) -> Image.Image:
    """Originals on the top row, reconstructions below."""
    side = max(max(a.size) for a, _ in pairs)
    grid = Image.new("RGB", (side * len(pairs), 2 * side), "white")
    for i, (a, b) in enumerate(pairs):
        grid.paste(a, (i * side, 0))
        grid.paste(b, (i * side, side))
    return grid


@torch.no_grad()
def _validation_tensor(path: str, size: int, device) -> torch.Tensor:
    img = center_crop(load_image(path), size)
    side = (min(img.size) // 8) * 8  # the autoencoder's factor
    img = img.crop((0, 0, side, side))
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float().div(255).to(device)


@torch.no_grad()
def validate(codec, validation: list[dict], size: int, lpips,
             lpips_random: bool = False) -> tuple[dict[str, float], Image.Image | None]:
    """Real files: compress each held-out image, decode it, measure bpp from the bytes.

    LPIPS through a random VGG (no VGG16 weights) is logged as ``val_lpips-random``, as evaluation
    marks such values: it is a pipeline signal, not a perceptual measure, and nothing ranks by it
    as if it were one.
    """
    if not validation:
        return {}, None
    variable = codec.config.rate_point.variable
    if variable is not None:
        # A variable-rate model: the plain keys at its default level, suffixed ones at each anchor.
        metrics, grid = _validate_at(codec, validation, size, lpips, lpips_random, None)
        for k in range(variable.anchors):
            level = round(k * RATE_LEVELS / (variable.anchors - 1))
            at_level, _ = _validate_at(codec, validation, size, lpips, lpips_random, level)
            metrics.update({f"{key}_level{level}": value for key, value in at_level.items()})
        return metrics, grid
    return _validate_at(codec, validation, size, lpips, lpips_random, None)


def _validate_at(codec, validation: list[dict], size: int, lpips, lpips_random: bool,
                 level: int | None) -> tuple[dict[str, float], Image.Image]:
    lpips_key = "val_lpips" + (RANDOM_SUFFIX if lpips_random else "")
    rows, pairs = [], []
    for item in validation:
        img = center_crop(load_image(item["path"]), size)
        enc = codec.encode(img, text=item["caption"], level=level)
        out = codec.decode(enc.data).image
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
        y = torch.from_numpy(np.array(out)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
        device = next(lpips.parameters()).device if lpips is not None else "cpu"
        rows.append({
            "val_bpp_real": enc.bpp,
            "val_bpp_estimated": enc.estimated_bpp,
            "val_psnr": psnr(img, out),
            "val_mse": float(((x - y) / 2).pow(2).mean()),  # on the [0, 1] scale: lower is better
            **({lpips_key: float(lpips(x.to(device), y.to(device)).mean())} if lpips is not None else {}),
        })
        pairs.append((img, out))
    metrics = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    return metrics, _grid(pairs)


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    quiet_libraries()
    configure_threads()
    # Train logs every report call at INFO from this module's logger; keep the console for progress.
    logging.getLogger("ray.train.v2._internal.execution.context").setLevel(logging.WARNING)
    cfg = TrainConfig.model_validate(loop_config["train"])
    model_cfg: ModelConfig = cfg.model  # type: ignore[assignment]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    # The newest whole checkpoint the run has written, registered by Train's controller or not
    # (a node lost in between: newest_stored_checkpoint); Train's own where storage is remote.
    stored = newest_stored_checkpoint(loop_config.get("run_dir"))
    checkpoint = ray.train.Checkpoint.from_directory(str(stored)) if stored is not None else ray.train.get_checkpoint()
    state = None
    lpips, lpips_random = None, True
    if cfg.stage == 0:
        # The prior continues from the checkpoint's UNet, else from backbone.source's.
        with checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext() as folder:
            backbone_cfg = model_cfg.backbone
            if folder is not None:
                backbone_cfg = backbone_cfg.model_copy(update={"source": str(Path(folder) / PRIOR_DIR)})
                state = load_state(folder)
            backbone = load_backbone(backbone_cfg).to(device)
        trainable = TrainablePrior(backbone, cfg.loss.prior_timesteps)
        if cfg.workers.gradient_checkpointing:
            backbone.unet.enable_gradient_checkpointing()
    else:
        backbone = load_backbone(model_cfg.backbone).to(device)
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                compressor, cdm = parts_from_folder(Path(folder) / "codec", model_cfg, backbone)
                state = load_state(folder)
        elif loop_config.get("init_folder"):
            init = loop_config["init_folder"]
            compressor, cdm = parts_from_folder(download_folder(init) if is_uri(init) else init, model_cfg, backbone,
                                               reference_lambda=cfg.lambda_rate, reset_gains=cfg.reset_gains)
        else:
            compressor, cdm = fresh_parts(model_cfg, backbone, loop_config.get("klt_sources"))
        if cfg.workers.gradient_checkpointing:
            cdm.enable_gradient_checkpointing()
        lpips, lpips_random = build_lpips(cfg.loss.lpips_vgg_weights) if cfg.stage == 2 or rank == 0 else (None, True)
        if lpips is not None:
            lpips.to(device)
        features = None
        if cfg.loss.lambda_feature > 0:
            from .feature_loss import FeatureLoss

            features = FeatureLoss().to(device)
        trainable = TrainableCodec(
            model_cfg, backbone, compressor, cdm, cfg.stage, cfg.loss, cfg.lambda_rate,
            lpips if cfg.stage == 2 else None, features, cfg.optim.freeze_compressor, cfg.optim.synthesis_only,
            cfg.optim.freeze_linear_path,
        )
    trainable.train()
    optimizers = _optimizers(trainable, cfg)
    start = 0
    if state is not None:
        start = int(state["step"])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        discriminator = getattr(trainable, "discriminator", None)  # stage 0 has none
        if discriminator is not None and state.get("discriminator") is not None:
            discriminator.load_state_dict(state["discriminator"])
    # Each worker and each restart draws different noise; the stream is reproducible per step.
    torch.manual_seed(cfg.optim.seed + 1000 * rank + start)
    model = ray.train.torch.prepare_model(
        trainable,
        # Every trained parameter takes part in forward (the aux loss included); the coding
        # tables change size on rank 0 alone, so buffers are not broadcast.
        # (a compressor warm-up leaves the control module out of the graph).
        parallel_strategy_kwargs={"find_unused_parameters": cfg.loss.lambda_eps == 0, "broadcast_buffers": False},
    )

    mlflow_client = None
    if rank == 0:
        from ..services import tracking

        mlflow_client = tracking.client(loop_config["tracking_uri"])
        if state is not None and state.get(STORED_METRICS):
            # The rows the checkpoint we resume from was about to log. If MLflow was down for
            # longer than its client's retries, that call failed (and this restart followed):
            # log them now. If it had succeeded, the identical rows add nothing.
            stored = state[STORED_METRICS]
            tracking.log_metrics(mlflow_client, loop_config["run_id"], stored["rows"], stored["timestamp_ms"])
    run_id = loop_config["run_id"]
    total = cfg.optim.steps
    if start >= total:
        if rank == 0:
            print(f"[train] {cfg.run.name}: already at step {start} of {total}; nothing to do", flush=True)
        return
    if rank == 0:
        origin = f"resuming at step {start}" if start else ("from " + loop_config["init_folder"] if loop_config.get("init_folder") else "from scratch")
        print(f"[train] {cfg.run.name}: stage {cfg.stage}, {world} worker(s), steps {start + 1}..{total}, {origin}", flush=True)

    if cfg.data.loader == "worker":
        d = cfg.data
        batches = worker_batches(loop_config["train_items"], d.crop_size, d.caption_dropout, d.hflip,
                                 cfg.optim.batch_size, rank, world, cfg.optim.seed + start)
    else:
        batches = _batches(ray.train.get_dataset_shard("train"), cfg.optim.batch_size)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16) if cfg.workers.bf16 else contextlib.nullcontext()
    )
    # The configured rates (a restored optimizer state holds the last scheduled ones instead).
    base_lr = {name: [g["lr"] for g in opt.param_groups] for name, opt in _optimizers(trainable, cfg).items()}
    pending: list[tuple[int, dict[str, float]]] = []  # rank 0: metrics not yet in MLflow
    t_start, images_seen = time.perf_counter(), 0
    for step in range(start + 1, total + 1):
        t0 = time.perf_counter()
        batch = next(batches)
        images = _images(batch, device)
        latents = torch.from_numpy(np.asarray(batch["latent"], dtype=np.float32)).to(device) if "latent" in batch else None
        frozen = step <= cfg.optim.freeze_transforms_steps
        extra = {"rate_only": True} if frozen else {}  # (stage 0's prior takes no such argument)
        if getattr(trainable, "discriminator", None) is not None:  # the discriminator may learn alone first
            trainable.adversarial_on = step > cfg.loss.adversarial_warmup_steps
        with autocast:
            terms = model(images, list(batch["caption"]), latents, **extra)
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        _set_lr(optimizers, base_lr, lr_factor(step, total, cfg), frozen)
        terms["total"].backward()
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for g in optimizers["main"].param_groups for p in g["params"]],
                                           cfg.optim.grad_clip)
        for opt in optimizers.values():
            opt.step()
        seconds = time.perf_counter() - t0
        images_seen += images.shape[0]

        if rank == 0:
            row = {k: float(v.detach()) for k, v in terms.items() if k != "total"}
            row["step_seconds"] = seconds
            row["lr"] = optimizers["main"].param_groups[0]["lr"]
            row["images_per_second"] = images.shape[0] * world / seconds
            pending.append((step, row))
            if step % cfg.run.log_every == 0 or step == start + 1:
                rate = (step - start) / (time.perf_counter() - t_start)
                eta = (total - step) / rate if rate > 0 else math.inf
                losses = "  ".join(f"{k} {row[k]:.4g}" for k in ("loss", "loss_eps", "loss_guide", "loss_pixel", "loss_feature", "bpp_estimated",
                                             "loss_lpips")
                                   if k in row)
                print(f"[train] step {step}/{total}  {rate:.2f} step/s  {losses}  ETA {eta:.0f} s", flush=True)
            if cfg.run.fail_once_at_step == step:
                marker = Path(loop_config["fail_marker"])
                if not marker.exists():
                    marker.parent.mkdir(parents=True, exist_ok=True)
                    marker.write_text(str(step))
                    raise InjectedFailure(f"run.fail_once_at_step: injected failure at step {step}")

        if step % cfg.run.checkpoint_every == 0 or step == total:
            _checkpoint(step, cfg, trainable, optimizers, device, rank, loop_config, mlflow_client, run_id, pending, lpips,
                        lpips_random)
            pending = []


def _checkpoint(step, cfg, trainable, optimizers, device, rank, loop_config, mlflow_client, run_id, pending, lpips,
                lpips_random) -> None:
    import ray.train

    if rank != 0:
        ray.train.report({"step": step}, checkpoint=None)
        return
    if cfg.stage == 0:
        latents = [trainable.backbone.encode(_validation_tensor(item["path"], cfg.data.validation_size, device))
                   for item in loop_config["validation"]]
        metrics = {"val_loss_eps": validation_loss(trainable, latents)} if latents else {}
        grid = None
    else:
        codec = snapshot_codec(trainable, device)
        try:
            metrics, grid = validate(codec, loop_config["validation"], cfg.data.validation_size, lpips, lpips_random)
        finally:
            trainable.train()
    metrics["step"] = step
    # The MLflow rows go into the checkpoint too: a restart from it logs them if this call fails.
    rows = [*pending, (step, {k: v for k, v in metrics.items() if k != "step"})]
    extra = {"run_id": run_id, STORED_METRICS: {"rows": rows, "timestamp_ms": int(time.time() * 1000)}}
    with tempfile.TemporaryDirectory() as folder:
        if cfg.stage == 0:
            save_prior_checkpoint(folder, trainable, optimizers, step, extra)
        else:
            save_checkpoint(folder, codec, trainable, optimizers, step, extra)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
    from ..services import tracking

    tracking.log_metrics(mlflow_client, run_id, rows, extra[STORED_METRICS]["timestamp_ms"])
    if grid is not None:
        mlflow_client.log_image(run_id, grid, key="validation", step=step)
    summary = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "step")
    print(f"[train] checkpoint at step {step}: {summary}", flush=True)
