"""The trained codecs that ship inside the package: the default of every command.

``resulic/weights/small-codecs/`` holds one trained-codec folder per rate point of the ``small``
profile (TAEF2 + the shipped stage-0 prior, trained and chosen by the platform's own sweep) and
``index.json``: the points in rate order, the default one and where they came from. All points
share one backbone, which is loaded once. A file names its model by fingerprint, so decoding
needs no rate choice: the matching point is found from the header. No Ray, no MLflow.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..errors import ModelLoadError
from ..models.backbone import WEIGHTS_DIR

SHIPPED_DIR = WEIGHTS_DIR / "small-codecs"
INDEX = "index.json"


def index(folder: Path = SHIPPED_DIR) -> dict:
    """``{"default": name, "points": [{"name", "folder", "fingerprint", ...}, ...]}``."""
    path = folder / INDEX
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(
            f"no shipped codec in this installation ({path} is missing): pass --model (a trained-codec "
            "folder, a models:/ URI, a model YAML) or --model tiny for the untrained test profile"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or not data.get("points"):
        raise ModelLoadError(f"{path}: lists no rate points")
    return data


def rate_names(folder: Path = SHIPPED_DIR) -> list[str]:
    return [p["name"] for p in index(folder)["points"]]


def variable_name(folder: Path = SHIPPED_DIR) -> str:
    """The shipped point that is one variable-rate model (``--bpp``, ``--level``): the default
    point when it is one (an earlier variable-rate release may ship beside it, kept so that its
    files still decode), else the first in the index."""
    data = index(folder)
    variable = [point["name"] for point in data["points"] if point.get("variable")]
    if data.get("default") in variable:
        return data["default"]
    if variable:
        return variable[0]
    raise ModelLoadError("this installation ships no variable-rate model: --bpp and --level need --model "
                         "(a variable-rate codec, e.g. trained with configs/train/stage1-small-variable.yaml)")


def folder_for(rate: str | None, folder: Path = SHIPPED_DIR) -> Path:
    """The codec folder of a shipped rate point (None: the default one)."""
    data = index(folder)
    name = rate or data.get("default") or data["points"][0]["name"]
    for point in data["points"]:
        if point["name"] == name:
            return folder / point["folder"]
    raise ModelLoadError(f"--rate {name}: not a shipped rate point (choose from {', '.join(rate_names(folder))})")


def folder_for_fingerprint(fingerprint: bytes, folder: Path = SHIPPED_DIR) -> Path | None:
    """The point that wrote a file: made now, or through an earlier bundled prior."""
    for point in index(folder)["points"]:
        if fingerprint.hex() in (point.get("fingerprint"), *point.get("earlier_fingerprints", ())):
            return folder / point["folder"]
    return None


def _backbone(codec_folder: Path):
    from .store import folder_config

    return _backbone_of(folder_config(codec_folder).backbone.model_dump_json())


@lru_cache(maxsize=2)
def _backbone_of(backbone_json: str):
    """One backbone for every shipped point that names it (loaded once per process)."""
    from ..config import BackboneConfig
    from ..models.backbone import load_backbone

    return load_backbone(BackboneConfig.model_validate_json(backbone_json))


def load(rate: str | None = None, device="cpu", folder: Path = SHIPPED_DIR, encode_only: bool = False):
    """The shipped codec of ``rate`` (None: the default point); ``encode_only``: without the parts
    only a decoder needs (``store.load_codec``)."""
    from .store import load_codec

    codec_folder = folder_for(rate, folder)
    if encode_only:
        return load_codec(codec_folder, device=device, encode_only=True)
    return load_codec(codec_folder, backbone=_backbone(codec_folder), device=device)


def load_for_file(data: bytes, device="cpu", folder: Path = SHIPPED_DIR):
    """The shipped codec that wrote ``data`` (its header's fingerprint), or None."""
    from .container import unpack
    from .store import load_codec

    codec_folder = folder_for_fingerprint(unpack(data).header.fingerprint, folder)
    if codec_folder is None:
        return None
    return load_codec(codec_folder, backbone=_backbone(codec_folder), device=device)


def share_pieces(out: Path = SHIPPED_DIR) -> None:
    """Every shipped point's weights stored once (``store.share_pieces``): a tiered point's
    compressor as its two models, each the same piece as where it ships alone, and the control
    module all points share; pieces no point uses any more are removed. Ray uploads the package
    with every job and refuses over 100 MiB: the same 28-MB default twice did not fit."""
    from .store import PIECES_DIR, folder_config
    from .store import share_pieces as share

    used: set[str] = set()
    for point in index(out)["points"]:
        folder = out / point["folder"]
        tiered = folder_config(folder).rate_point.low_tier is not None
        used.update(share(folder, ("main.", "low.") if tiered else ()))
    for piece in (out / PIECES_DIR).glob("*.safetensors"):
        if piece.stem not in used:
            piece.unlink()


def adopt_prior(out: Path | None = None) -> dict:
    """After a new prior is put in ``small-prior``: every shipped point saved again with it (same
    weights; the fingerprint its new files carry) and ``index.json`` updated, each point listing the
    fingerprints of the files it wrote through earlier priors, which it still decodes."""
    from .codec import Codec
    from .store import load_codec, read_manifest, save_codec

    out = out or SHIPPED_DIR
    data = index(out)
    _backbone_of.cache_clear()
    for point in data["points"]:
        codec_folder = out / point["folder"]
        loaded = load_codec(codec_folder, backbone=_backbone(codec_folder))  # names its files as its manifest
        codec = Codec(loaded.config, loaded.backbone, loaded.compressor, loaded.cdm)  # as the current prior does
        if codec.fingerprint.hex() == point["fingerprint"]:
            continue  # made with the current prior already
        save_codec(codec, codec_folder, half=True)
        point["fingerprint"] = codec.fingerprint.hex()
        point["earlier_fingerprints"] = read_manifest(codec_folder)["earlier_fingerprints"]
    (out / INDEX).write_text(json.dumps(data, indent=2) + "\n")
    share_pieces(out)
    return data


def release(points: list[tuple[str, Path]], default: str, provenance: dict, out: Path = SHIPPED_DIR,
            kept: list[tuple[str, Path]] = ()) -> dict:
    """Copy trained codecs into the shipped set: each named by its rate point, its weights
    rounded to float16 (half the size; the fingerprint is recomputed for the rounded weights,
    so files say which release made them), and ``index.json`` listing them in rate order.
    ``kept``: earlier shipped folders listed after them as they are (same bytes, same
    fingerprint), so the files they wrote still decode; copied first, so a point may take a kept
    one's old folder name."""
    import shutil

    import torch

    from .codec import Codec
    from .store import load_codec, save_codec

    out.mkdir(parents=True, exist_ok=True)
    try:  # a point re-released from its own shipped folder keeps where it came from
        before = {p["name"]: p for p in index(out)["points"]}
    except ModelLoadError:
        before = {}
    kept_entries = []
    for name, folder in kept:
        try:
            manifest = json.loads((Path(folder) / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"--keep {name}={folder}: not a trained-codec folder ({exc})") from None
        old = next((p for p in before.values() if p.get("fingerprint") == manifest["fingerprint"]), None)
        if old is None:
            raise ModelLoadError(f"--keep {name}={folder}: not a point of the shipped index (fingerprint {manifest['fingerprint']})")
        if Path(folder).resolve() != (out / name).resolve():
            shutil.rmtree(out / name, ignore_errors=True)
            shutil.copytree(folder, out / name)
        kept_entries.append({**old, "name": name, "folder": name, "kept": "an earlier release: its files still decode"})
    entries = []
    for name, folder in points:
        codec = load_codec(folder, backbone=_backbone(folder))
        with torch.no_grad():
            for module in (codec.compressor, codec.cdm):
                for param in module.parameters():
                    param.copy_(param.half().float())
        codec.compressor.update(force=True)
        config = codec.config.model_copy(update={"rate_point": codec.config.rate_point.model_copy(update={"name": name})})
        released = Codec(config, codec.backbone, codec.compressor, codec.cdm)
        save_codec(released, out / name, half=True)
        entry = {"name": name, "folder": name, "fingerprint": released.fingerprint.hex(),
                 "from": str(folder), **config.rate_point.model_dump(mode="json", exclude_none=True)}
        if Path(folder).resolve() == (out / name).resolve() and name in before:
            entry = {**before[name], **{k: v for k, v in entry.items() if k != "from"}}
        entries.append(entry)
    data = {"default": default, "points": entries + kept_entries, "provenance": provenance}
    (out / INDEX).write_text(json.dumps(data, indent=2) + "\n")
    share_pieces(out)
    return data
