"""Training checkpoints: a trained-codec folder plus the optimiser state and the step.

    <checkpoint>/codec/      the model as ``resulic.codec.store`` writes it: loadable by every tool
    <checkpoint>/state.pt    {"step", "optimizers", "discriminator", "run_id", ...}

so the best or last checkpoint of a run *is* a codec; nothing needs converting. Stage 0 writes
``<checkpoint>/prior/`` instead: a folder that the small profile's ``backbone.source`` loads.
No Ray here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from ..codec import Codec
from ..codec.store import CDF_BUFFERS, load_compressor_state, load_trained_parts, save_codec
from ..config import ModelConfig
from ..errors import ConfigError, ModelLoadError
from ..models.backbone import Backbone, save_prior
from ..models.compressor import LatentCompressor, build_compressor, compressor_for
from ..models.control import build_control_unet
from .model import TrainableCodec

STATE_FILE = "state.pt"
CODEC_DIR = "codec"
PRIOR_DIR = "prior"


KLT_PHOTOS = 48  # latents the linear path's KLT is estimated from (evenly spread over the data)
KLT_MAX_SIDE = 512  # px: photos without a cached latent are encoded at most this large


def fresh_parts(config: ModelConfig, backbone: Backbone, klt_sources: list[dict] | None = None
                ) -> tuple[LatentCompressor, torch.nn.Module]:
    """Seeded initial compressor and control module (the same as ``Codec.build``); a compressor
    with a linear path starts it from the KLT of ``klt_sources`` (rows with ``path`` and maybe
    ``latent``: the training records), which it then needs."""
    compressor = build_compressor(config)
    if config.compressor.linear_transform:
        if not klt_sources:
            raise ConfigError("compressor.linear_transform needs training latents to start from (none given)")
        compressor.init_linear_transform(klt_latents(klt_sources, backbone))
    return compressor, build_control_unet(backbone.unet, config.control)


def klt_latents(sources: list[dict], backbone: Backbone, count: int = KLT_PHOTOS):
    """Latents of up to ``count`` records spread evenly over ``sources`` (sorted by path, so
    every worker picks the same): the cached one, else the photo encoded (its centre, at most
    KLT_MAX_SIDE px, cut to a multiple of 32)."""
    from ..data.dataset import load_image, load_latent

    rows = sorted({row["path"]: row for row in sources}.values(), key=lambda row: row["path"])
    for row in rows[:: max(1, len(rows) // count)][:count]:
        if row.get("latent"):
            yield torch.from_numpy(load_latent(row["latent"]))[None]
            continue
        img = load_image(row["path"])
        img.thumbnail((KLT_MAX_SIDE, KLT_MAX_SIDE))
        w, h = (img.width // 32) * 32, (img.height // 32) * 32
        if min(w, h) < 32:
            continue
        left, top = (img.width - w) // 2, (img.height - h) // 2
        centre = img.crop((left, top, left + w, top + h))
        pixels = torch.from_numpy(np.asarray(centre, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        with torch.no_grad():
            yield backbone.encode(pixels.to(backbone.text_encoder.device))


def check_continues(folder: str | Path, config: ModelConfig) -> bool:
    """ConfigError unless ``config`` may continue the model in ``folder``: the same backbone,
    compressor and control module, only the rate point changed — or a fixed-rate compressor made
    variable (the same compressor plus gains: then True)."""
    folder = Path(folder)
    try:
        saved = ModelConfig.model_validate(yaml.safe_load((folder / "config.yaml").read_text()))
    except FileNotFoundError:
        raise ModelLoadError(f"{folder}: not a trained-codec folder (no config.yaml)") from None
    new_gains = config.compressor.gain_anchors > 0 and saved.compressor.gain_anchors == 0
    saved_compressor = saved.compressor.model_copy(update={"gain_anchors": config.compressor.gain_anchors}) \
        if new_gains else saved.compressor
    for section, before in (("backbone", saved.backbone), ("compressor", saved_compressor), ("control", saved.control)):
        after = getattr(config, section)
        if before != after:
            keys = sorted(k for k in type(after).model_fields if getattr(before, k) != getattr(after, k))
            raise ConfigError(
                f"model.{section}: differs from the model in {folder} ({', '.join(keys)}); a later stage may "
                "change only the rate point"
            )
    return new_gains


def parts_from_folder(
    folder: str | Path, config: ModelConfig, backbone: Backbone, reference_lambda: float | None = None,
    reset_gains: bool = False,
) -> tuple[LatentCompressor, torch.nn.Module]:
    """The trained parts of an earlier model, for a config that may change only the rate point
    (or make a fixed-rate compressor variable: ``reference_lambda`` is the λ_R it was trained at).
    ``reset_gains``: a variable-rate model's gains restart from the config's anchors (init_gains)."""
    folder = Path(folder)
    new_gains = check_continues(folder, config)
    compressor, cdm = load_trained_parts(folder, config, backbone, new_gains)
    if new_gains or reset_gains:
        # The gains start where the saved model's λ_R (loss.lambda_rate) sits among the anchors.
        compressor.init_gains(config.rate_point.variable.lambda_rates, reference_lambda)
    return compressor, cdm


def snapshot_codec(trainable: TrainableCodec, device: torch.device | str) -> Codec:
    """A codec of the current weights, for validation and checkpoints. The compressor is copied
    (its coding tables are rebuilt); the control module is shared, so the caller puts it back in
    training mode afterwards."""
    # A new instance rather than deepcopy: DDP hooks on the live parameters cannot be copied.
    compressor = compressor_for(trainable.config).to(next(trainable.compressor.parameters()).device)
    # The live coding tables are stale (or never built, in a fresh model): left out, they are
    # rebuilt from the current weights.
    state = {k: v.detach().clone() for k, v in trainable.compressor.state_dict().items()
             if k.rpartition(".")[2] not in CDF_BUFFERS}
    load_compressor_state(compressor, state)
    return Codec(trainable.config, trainable.backbone, compressor, trainable.cdm, device)


def save_checkpoint(
    folder: str | Path,
    codec: Codec,
    trainable: TrainableCodec,
    optimizers: dict[str, torch.optim.Optimizer],
    step: int,
    extra: dict | None = None,
) -> Path:
    folder = Path(folder)
    save_codec(codec, folder / CODEC_DIR)
    state = {
        "step": step,
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "discriminator": None if trainable.discriminator is None else trainable.discriminator.state_dict(),
        **(extra or {}),
    }
    torch.save(state, folder / STATE_FILE)
    return folder


def save_prior_checkpoint(
    folder: str | Path, trainable, optimizers: dict[str, torch.optim.Optimizer], step: int, extra: dict | None = None
) -> Path:
    """Stage 0: the prior in diffusers layout (``prior/unet``) plus the optimiser state."""
    folder = Path(folder)
    save_prior(trainable.unet, folder / PRIOR_DIR)
    state = {"step": step, "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()}, **(extra or {})}
    torch.save(state, folder / STATE_FILE)
    return folder


def newest_stored_checkpoint(run_dir: str | Path | None) -> Path | None:
    """The newest complete checkpoint folder of a run on local storage, for a restarted worker
    group that Ray Train hands none. Train gives a restarted group only the checkpoints its
    controller has registered; a node lost between a worker's report (the folder written, its
    steps logged to MLflow) and that registration restarted the run from scratch and logged its
    first steps twice (docs/cluster.md: the node drill on a head with only the job's CPUs).
    The same race hands a restarted group an older registered checkpoint while a newer one is
    written. Ray names the folders by time (checkpoint_<date>_<time>), so the newest sorts last."""
    if run_dir is None:
        return None
    for folder in sorted(Path(run_dir).glob("checkpoint_*"), reverse=True):
        if whole_checkpoint(folder):
            return folder
    return None


def whole_checkpoint(folder: Path) -> bool:
    """Whether a checkpoint folder was written to the end: its state loads and its model is whole
    (a codec folder whose files match its manifest's hashes, or stage 0's prior/). A node lost
    while a checkpoint was being copied to storage leaves a partial one."""
    from ..codec.store import folder_is_whole

    try:
        load_state(folder)
    except Exception:  # noqa: BLE001 - a truncated file fails in many ways (EOF, unpickling, zip): not whole
        return False
    return (folder / PRIOR_DIR).is_dir() or folder_is_whole(folder / CODEC_DIR)


def load_state(folder: str | Path) -> dict:
    path = Path(folder) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: training checkpoint has no state file") from None
