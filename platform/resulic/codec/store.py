"""Trained-codec folders and model resolution.

A trained-codec folder holds only safe, declarative files; loading never executes code from it:

    config.yaml              the ModelConfig (backbone reference: profile, hub id or folder, revision)
    compressor.safetensors   the latent compressor, including its integer CDF tables, so that the
                             coder uses exactly the tables the encoder used (no re-derivation)
    control.safetensors      the control module (every parameter outside the frozen UNet)
    manifest.json            format, version, model fingerprint and the files' SHA-256
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import ModelConfig, build_config, load_config
from ..errors import ModelLoadError
from ..images import current_umask
from ..models.backbone import Backbone, load_backbone
from ..models.compressor import LatentCompressor
from ..models.control import build_control_unet, control_state_dict, load_control_state
from .codec import Codec

FOLDER_FORMAT = "resulic-codec"
FOLDER_VERSION = 1
FILES = ("config.yaml", "compressor.safetensors", "control.safetensors")
# Where a folder's config.yaml may point backbone.source (besides a hub id in the local cache):
# os.pathsep-separated; the default is the cluster's shared model folder (docs/cluster.md).
BACKBONE_ROOTS_ENV = "RESULIC_BACKBONE_ROOTS"
DEFAULT_BACKBONE_ROOTS = ("/shared/models",)
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
# Buffers that the compressor rebuilds exactly from its weights (the coding tables, by
# ``update()``) or from its config (the context models' masks): not saved, so a folder holds
# weights only. Older folders that hold them still load.
DERIVED_BUFFERS = (*CDF_BUFFERS, "mask")
GAIN_PARAMETERS = ("log_gain", "log_inverse_gain")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_codec(codec: Codec, folder: str | Path, half: bool = False) -> Path:
    """Write ``codec``'s trained parts to ``folder`` (replaced whole, never left half-written).
    ``half`` stores float weights as float16 (the coding tables stay exact): only for a codec
    whose weights are already float16 values, or its fingerprint would no longer match."""
    folder = Path(folder)
    if folder.exists() and not _replaceable(folder):
        raise ModelLoadError(f"{folder}: exists and is not a trained-codec folder; refusing to replace it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0o700 would outlive the rename: the umask decides, as for mkdir
    try:
        (tmp / "config.yaml").write_text(yaml.safe_dump(codec.config.model_dump(mode="json"), sort_keys=False))
        # Only weights are halved: buffers (coding tables, likelihood bounds) are kept as they are.
        weights = {n for n, _ in codec.compressor.named_parameters()} | set(control_state_dict(codec.cdm))
        store = (lambda k, v: v.half() if half and v.is_floating_point() and k in weights else v)
        compressor_state = {k: store(k, v.detach().cpu()).contiguous() for k, v in codec.compressor.state_dict().items()
                            if k.rpartition(".")[2] not in DERIVED_BUFFERS}
        save_file(compressor_state, tmp / "compressor.safetensors")
        control = {k: store(k, v.cpu()).contiguous() for k, v in control_state_dict(codec.cdm).items()}
        save_file(control, tmp / "control.safetensors")
        manifest = {
            "format": FOLDER_FORMAT,
            "version": FOLDER_VERSION,
            "fingerprint": codec.fingerprint.hex(),
            "rate_point": codec.config.rate_point.name,
            "backbone": codec.config.backbone.model_dump(mode="json"),
            "files": {name: _sha256(tmp / name) for name in FILES},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for path in tmp.iterdir():  # safetensors writes its files 0o600, whatever the umask
            path.chmod(0o666 & ~current_umask())
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _replaceable(folder: Path) -> bool:
    """Only an empty folder or an earlier trained-codec folder may be overwritten."""
    if not folder.is_dir():
        return False
    if not any(folder.iterdir()):
        return True
    try:
        return json.loads((folder / "manifest.json").read_text()).get("format") == FOLDER_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_compressor_state(compressor: LatentCompressor, state: dict[str, torch.Tensor], new_gains: bool = False) -> None:
    """Load a saved compressor state. Coding tables left out of it are rebuilt from the weights
    (bit-exact: ``update()`` is what made them); ``new_gains`` lets a variable-rate compressor
    start from a fixed-rate one's state (its gains keep their initial values)."""
    # The CDF tables' sizes depend on training; give each buffer the saved size first.
    for key, tensor in state.items():
        prefix, _, name = key.rpartition(".")
        if name in CDF_BUFFERS:
            module = compressor.get_submodule(prefix)
            module.register_buffer(name, torch.empty_like(tensor))
    missing, unexpected = compressor.load_state_dict(state, strict=False)
    allowed = DERIVED_BUFFERS + (GAIN_PARAMETERS if new_gains else ())
    missing = [k for k in missing if k.rpartition(".")[2] not in allowed]
    if missing or unexpected:
        raise RuntimeError(f"missing keys {missing[:4]}, unexpected keys {unexpected[:4]}")
    if not any(k.rpartition(".")[2] == "_quantized_cdf" for k in state):
        compressor.update(force=True)


def load_trained_parts(
    folder: Path, config: ModelConfig, backbone: Backbone, new_gains: bool = False
) -> tuple[LatentCompressor, torch.nn.Module]:
    """The compressor and control module saved in ``folder``, built for ``config`` (whose
    compressor and control sizes must be the saved ones; its rate point may differ).
    ``new_gains``: ``config`` adds gain vectors to the saved fixed-rate compressor."""
    compressor_state = _read_safetensors(folder / "compressor.safetensors")
    control_state = _read_safetensors(folder / "control.safetensors")
    try:
        compressor = LatentCompressor(config.compressor)
        load_compressor_state(compressor, compressor_state, new_gains)
        cdm = build_control_unet(backbone.unet, config.control)
        load_control_state(cdm, control_state)
    except (KeyError, RuntimeError, ValueError, OSError) as exc:
        raise ModelLoadError(f"{folder}: weights do not fit the model config ({exc})") from None
    return compressor, cdm


def folder_config(folder: Path) -> ModelConfig:
    """The model config a trained-codec folder was saved with."""
    return load_config(ModelConfig, Path(folder) / "config.yaml")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: not a readable safetensors file ({detail})") from None


def backbone_roots() -> list[Path]:
    raw = os.environ.get(BACKBONE_ROOTS_ENV)
    roots = raw.split(os.pathsep) if raw is not None else DEFAULT_BACKBONE_ROOTS
    return [Path(r).expanduser().resolve() for r in roots if r.strip()]


def check_backbone_source(config: ModelConfig, folder: Path) -> None:
    """A folder's ``backbone.source`` may name a hub id (read from the local cache) or a local
    folder inside ``folder`` or a configured backbone root — never any other path, so a copied
    folder cannot make the loader read weights from wherever its config.yaml says."""
    if config.backbone.profile == "tiny":
        return  # built from a seed; source is not read
    source = config.backbone.source
    if config.backbone.profile == "small" and source in ("bundled", "random"):
        return  # the prior inside the package, or one built from a seed
    local = Path(source).expanduser()
    looks_local = local.is_absolute() or source.startswith((".", "~")) or local.exists()
    if not looks_local:
        if HUB_ID.match(source) and ".." not in source:
            return
        raise ModelLoadError(f"{folder / 'config.yaml'}: backbone.source {source!r} is neither a hub id (org/name) "
                             "nor an allowed local folder")
    resolved = local.resolve()
    allowed = [folder.resolve(), *backbone_roots()]
    if not any(resolved == root or resolved.is_relative_to(root) for root in allowed):
        raise ModelLoadError(
            f"{folder / 'config.yaml'}: backbone.source {source!r} is outside the allowed backbone locations "
            f"({', '.join(str(r) for r in allowed)}); add its folder to {BACKBONE_ROOTS_ENV} to allow it"
        )


def load_codec(folder: str | Path, backbone: Backbone | None = None, device="cpu") -> Codec:
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: no such trained-codec folder")
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{folder}: not a trained-codec folder (no manifest.json)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{manifest_path}: unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FOLDER_FORMAT:
        raise ModelLoadError(f"{manifest_path}: not a ResULIC trained-codec manifest")
    if manifest.get("version") != FOLDER_VERSION:
        raise ModelLoadError(f"{manifest_path}: folder version {manifest.get('version')} is not supported")
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise ModelLoadError(f"{folder}: missing {name}")
        expected = manifest.get("files", {}).get(name)
        if expected != _sha256(path):
            raise ModelLoadError(f"{path}: contents do not match manifest.json (corrupt or edited)")
    config = load_config(ModelConfig, folder / "config.yaml")
    if backbone is None:
        check_backbone_source(config, folder)
        backbone = load_backbone(config.backbone)
    compressor, cdm = load_trained_parts(folder, config, backbone)
    codec = Codec(config, backbone, compressor, cdm, device).to(device)
    if codec.fingerprint.hex() != manifest.get("fingerprint"):
        raise ModelLoadError(
            f"{folder}: the loaded model's fingerprint {codec.fingerprint.hex()} differs from the manifest's "
            f"{manifest.get('fingerprint')} (a different backbone than the one it was saved with?)"
        )
    return codec


TINY = "tiny"  # --model tiny: the embedded test profile (random weights)
# The model commands use without --model (e.g. 'tiny' in the test suite, a models:/ URI on a
# team machine); unset = the shipped codecs.
DEFAULT_MODEL_ENV = "RESULIC_MODEL"


def resolve_codec(model: str | Path | None = None, overrides=(), device="cpu", rate: str | None = None,
                  variable: bool = False) -> Codec:
    """The codec a command should use: a trained-codec folder, a model YAML, ``tiny`` (the
    embedded test profile), or by default the shipped trained codec of the small profile at
    rate point ``rate`` (its default point when None; its variable-rate model with ``variable``)."""
    if model is None:
        model = os.environ.get(DEFAULT_MODEL_ENV) or None
    if model is None:
        if overrides:
            raise ModelLoadError("--set changes a model YAML; the shipped codecs are trained folders")
        from . import shipped

        return shipped.load(rate or (shipped.variable_name() if variable else None), device=device)
    if rate is not None:
        raise ModelLoadError("--rate chooses among the shipped codecs; it cannot be combined with --model")
    if str(model) != TINY and Path(model).is_dir():
        if overrides:
            raise ModelLoadError("--set cannot change a trained codec; it would no longer match its weights")
        return load_codec(model, device=device)
    return Codec.build(source_config(model, overrides), device=device)


def source_config(model: str | Path, overrides=()) -> ModelConfig:
    """The model config of a ``--model`` source (``tiny``, a trained-codec folder or a model
    YAML), read without building the model."""
    if str(model) == TINY:
        return build_config(ModelConfig, {}, overrides, source="<embedded tiny profile>")
    path = Path(model)
    if path.is_dir():
        return folder_config(path)
    if path.is_file():
        return load_config(ModelConfig, path, overrides)
    raise ModelLoadError(f"--model {model}: neither a trained-codec folder nor a model YAML file")
