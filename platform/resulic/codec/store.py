"""Trained-codec folders: save, load and check them (which codec a command means: ``resolve``).

A trained-codec folder holds only safe, declarative files; loading never executes code from it:

    config.yaml              the ModelConfig (backbone reference: profile, hub id or folder, revision)
    compressor.safetensors   the latent compressor, including its integer CDF tables, so that the
                             coder uses exactly the tables the encoder used (no re-derivation)
    control.safetensors      the control module (every parameter outside the frozen UNet)
    manifest.json            format, version, model fingerprint and the files' SHA-256

The shipped folders (``resulic/weights/small-codecs``) hold one weights file several times: every
point's control module is the same, and a tiered point's compressor is two trained models, each
of which also ships alone. There a weights file may be stored as *pieces* in ``pieces/`` beside
the folders, each named by its SHA-256 and stored once (``share_pieces``): the manifest lists
the pieces (and the key prefix each one's tensors take); the file they make up is rebuilt in
memory and must hash to the manifest's ``files`` entry as a stored file must. A saved folder
(``save_codec``) is always whole; ``materialize`` writes a pieced folder out whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file, save, save_file

from ..config import ModelConfig, build_config, yaml_mapping
from ..errors import ModelLoadError
from ..images import current_umask, write_atomic
from ..models.backbone import WEIGHTS_DIR, Backbone, load_backbone, load_small_encoder
from ..models.compressor import LatentCompressor, compressor_for
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
# Shared pieces of weights files: looked up in pieces/ beside the folder, then in this
# installation's shipped set (so a copy of a shipped folder still loads where it was installed).
PIECES_DIR = "pieces"
INSTALLED_PIECES = WEIGHTS_DIR / "small-codecs" / PIECES_DIR
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

# Size limits on what a codec folder may make the loader read (docs/security.md). Each is far
# above what a real folder holds (the shipped ones: config 0.4 KiB, manifest 0.5 KiB, weights
# 2-5 MiB with headers of 21-39 KiB and 208-338 tensors) and far below what stalls the loader:
# a 61 MB safetensors header of 900k empty tensors took 138 s to load.
MAX_MANIFEST_BYTES = 64 << 10
MAX_CONFIG_BYTES = 16 << 10
MAX_WEIGHTS_BYTES = 4 << 30  # per weights file; each is hashed whole before it is loaded
MAX_SAFETENSORS_HEADER_BYTES = 1 << 20
MAX_TENSORS = 10_000
LIMITS = {"manifest.json": MAX_MANIFEST_BYTES, "config.yaml": MAX_CONFIG_BYTES,
          "compressor.safetensors": MAX_WEIGHTS_BYTES, "control.safetensors": MAX_WEIGHTS_BYTES}


# -- reading a folder's files ---------------------------------------------------------------
def member_path(folder: Path, name: str) -> Path:
    """The file ``folder/name`` really is, refused (one line) when it is a link that leaves the
    folder. The check comes before anything about the target is looked at, so a link to a
    root-only file and a link to nothing get the same answer: a folder cannot probe the disk."""
    path = Path(folder) / name
    real, root = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    if real != root and not real.is_relative_to(root):
        raise ModelLoadError(f"{folder}: {name} is a link out of the folder (refused)")
    return real


def _missing(folder: Path, name: str) -> ModelLoadError:
    # One message for a missing file, an unreadable one and one that is no regular file (a
    # folder, a FIFO, a device): which of them it is tells a caller nothing it needs.
    return ModelLoadError(f"{folder}: {name} is missing or unreadable")


def open_member(folder: Path, name: str):
    """``folder/name`` opened for reading (a binary file object): inside the folder, a regular
    file, at most its size limit. Opened non-blocking so that a FIFO cannot hold the loader."""
    real = member_path(folder, name)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        raise _missing(folder, name) from None
    info = os.fstat(fd)
    limit = LIMITS.get(name, MAX_WEIGHTS_BYTES)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _missing(folder, name)
        raise ModelLoadError(f"{folder}: {name} is {info.st_size:,} bytes, over the limit of {limit:,}")
    return os.fdopen(fd, "rb")


def read_member(folder: Path, name: str) -> bytes:
    with open_member(folder, name) as f:
        try:
            return f.read(LIMITS.get(name, MAX_WEIGHTS_BYTES) + 1)
        except OSError:
            raise _missing(folder, name) from None


def read_manifest(folder: Path) -> dict:
    """A folder's manifest.json as a dict, or a one-line ModelLoadError."""
    data = read_member(folder, "manifest.json")
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):
        raise ModelLoadError(f"{Path(folder) / 'manifest.json'}: not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FOLDER_FORMAT:
        raise ModelLoadError(f"{Path(folder) / 'manifest.json'}: not a ResULIC trained-codec manifest")
    return manifest


def folder_is_whole(folder: Path) -> bool:
    """Whether a trained-codec folder holds every file its manifest lists, each with its hash
    (a folder still being copied does not)."""
    try:
        files = read_manifest(folder).get("files")
        return isinstance(files, dict) and bool(files) and all(
            _member_sha256(folder, name) == digest for name, digest in files.items())
    except (ModelLoadError, OSError):
        return False


def _member_sha256(folder: Path, name: str) -> str:
    if _pieces(folder, name) is not None:
        return hashlib.sha256(save(_read_pieces(folder, name))).hexdigest()
    h = hashlib.sha256()
    with open_member(folder, name) as f:
        try:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        except OSError:
            raise _missing(folder, name) from None
    return h.hexdigest()


def check_safetensors_header(folder: Path, name: str) -> None:
    """Refuse a weights file whose header is over the limits before safetensors parses it:
    safetensors itself admits a 100 MB header, and every tensor in it costs time even empty."""
    if _pieces(folder, name) is not None:
        return  # each piece is checked as it is read
    with open_member(folder, name) as f:
        _check_header(f, Path(folder) / name)


def _check_header(f, path: Path) -> None:
    head = f.read(8)
    if len(head) < 8:
        raise ModelLoadError(f"{path}: not a readable safetensors file (too short)")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_SAFETENSORS_HEADER_BYTES:
        raise ModelLoadError(f"{path}: not a readable safetensors file (a header of {n:,} bytes, over the "
                             f"limit of {MAX_SAFETENSORS_HEADER_BYTES:,})")
    raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise ModelLoadError(f"{path}: not a readable safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path}: not a readable safetensors file (its header is not a JSON object)")
    count = len(header) - ("__metadata__" in header)
    if count > MAX_TENSORS:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({count:,} tensors, over the limit of "
                             f"{MAX_TENSORS:,})")


# -- shared pieces (the shipped folders; module docstring) ------------------------------------
def _pieces(folder: Path, name: str) -> list[tuple[str, str]] | None:
    """``[(key prefix, sha256), ...]``: the pieces ``name`` is stored as, or None (a file in the folder)."""
    manifest = read_manifest(folder)
    pieces = manifest.get("pieces", {})
    if not isinstance(pieces, dict):
        raise ModelLoadError(f"{Path(folder) / 'manifest.json'}: 'pieces' is not a mapping")
    if name not in pieces:
        return None
    entries = pieces[name]
    if not (isinstance(entries, list) and entries and all(
            isinstance(e, dict) and isinstance(e.get("prefix"), str) and isinstance(e.get("sha256"), str)
            and SHA256_HEX.match(e["sha256"]) for e in entries)):
        raise ModelLoadError(f"{Path(folder) / 'manifest.json'}: pieces of {name}: expected a list of "
                             "{prefix, sha256 (64 hex digits)}")
    return [(e["prefix"], e["sha256"]) for e in entries]


def _read_pieces(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """The tensors of ``name`` from its pieces, each checked against the SHA-256 it is named by."""
    state: dict[str, torch.Tensor] = {}
    for prefix, digest in _pieces(folder, name):
        roots = (Path(folder).parent / PIECES_DIR, INSTALLED_PIECES)
        path = next((root / f"{digest}.safetensors" for root in roots if (root / f"{digest}.safetensors").is_file()), None)
        if path is None:
            raise ModelLoadError(f"{folder}: {name} is stored as shared pieces, and piece {digest[:12]} is in "
                                 f"neither {roots[0]} nor {roots[1]} (a shipped folder copied from another installation?)")
        with open_member(path.parent, path.name) as f:
            data = f.read(MAX_WEIGHTS_BYTES + 1)
        if hashlib.sha256(data).hexdigest() != digest:
            raise ModelLoadError(f"{path}: contents do not match its name (corrupt or edited)")
        _check_header(io.BytesIO(data), path)
        try:
            piece = load_bytes(data)
        except (SafetensorError, ValueError) as exc:
            raise ModelLoadError(f"{path}: not a readable safetensors file ({str(exc).strip()[:200]})") from None
        for key, tensor in piece.items():
            if prefix + key in state:
                raise ModelLoadError(f"{folder}: pieces of {name} both hold {prefix + key!r}")
            state[prefix + key] = tensor
    return state


def share_pieces(folder: Path, prefixes: tuple[str, ...] = ()) -> list[str]:
    """Store ``folder``'s weights files as pieces in ``pieces/`` beside it: the tensors under each
    of ``prefixes`` one piece (its keys without the prefix, so the same model inside a tiered one
    and alone is one piece), the rest of a file one more, each named by its SHA-256 and written
    once. A file is pieced only when its pieces rebuild it byte for byte. Returns the pieces the
    folder now uses."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    pool = folder.parent / PIECES_DIR
    pool.mkdir(exist_ok=True)
    used = []
    for name in FILES:
        if not name.endswith(".safetensors"):
            continue
        already = _pieces(folder, name)
        if already is not None:
            used += [digest for _, digest in already]
            continue
        state = _read_safetensors(folder, name)
        pieces, covered = {}, set()
        for prefix in (*sorted(prefixes, key=len, reverse=True), ""):
            keys = [k for k in state if k.startswith(prefix) and k not in covered]
            if keys:
                covered.update(keys)
                pieces[prefix] = save({k[len(prefix):]: state[k] for k in keys})
        if hashlib.sha256(save(state)).hexdigest() != manifest.get("files", {}).get(name):
            continue  # its pieces would not rebuild it exactly (e.g. it carries metadata): stays a file
        entries = []
        for prefix, data in pieces.items():
            digest = hashlib.sha256(data).hexdigest()
            if not (pool / f"{digest}.safetensors").is_file():
                write_atomic(pool / f"{digest}.safetensors", data)
            entries.append({"prefix": prefix, "sha256": digest})
        manifest.setdefault("pieces", {})[name] = entries
        used += [e["sha256"] for e in entries]
    write_atomic(folder / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    for name in manifest.get("pieces", {}):
        (folder / name).unlink(missing_ok=True)
    return used


@contextmanager
def whole_folder(folder: Path):
    """``folder`` itself when its files are all in it, else a temporary whole copy (``materialize``)."""
    manifest = read_manifest(folder)
    if not manifest.get("pieces"):
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="resulic-whole-") as tmp:
        yield materialize(folder, Path(tmp) / Path(folder).name)


def materialize(folder: Path, out: Path) -> Path:
    """``folder`` written out whole to ``out`` (its pieces rebuilt into files; the manifest without
    'pieces'): a folder that loads anywhere, as a registry copy must."""
    folder, out = Path(folder), Path(out)
    manifest = read_manifest(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        data = save(_read_pieces(folder, name)) if _pieces(folder, name) is not None else read_member(folder, name)
        if hashlib.sha256(data).hexdigest() != manifest.get("files", {}).get(name):
            raise ModelLoadError(f"{folder / name}: contents do not match manifest.json (corrupt or edited)")
        write_atomic(out / name, data)
    manifest.pop("pieces", None)
    write_atomic(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())  # last: a folder once whole
    return out


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
    if codec.encode_only:
        raise ModelLoadError("a codec loaded to encode only has no control module to save: load it whole")
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
        if codec.earlier_fingerprints:  # its files made through an earlier bundled prior
            manifest["earlier_fingerprints"] = [fp.hex() for fp in codec.earlier_fingerprints]
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
        read_manifest(folder)
        return True
    except ModelLoadError:
        return False


def load_compressor_state(compressor: LatentCompressor, state: dict[str, torch.Tensor], new_gains: bool = False) -> None:
    """Load a saved compressor state. Coding tables left out of it are rebuilt from the weights
    (bit-exact: ``update()`` is what made them); ``new_gains`` lets a variable-rate compressor
    start from a fixed-rate one's state (its gains keep their initial values)."""
    check_compressor_state(compressor, state, new_gains)
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


def check_compressor_state(compressor: LatentCompressor, state: dict[str, torch.Tensor], new_gains: bool = False) -> None:
    """Refuse (ValueError, one line) a saved state that is not this compressor's: an unknown
    key, a wrong shape or dtype kind, non-finite weights, or coding tables the C++ encoder could
    not use safely (out-of-range lengths, a CDF that is not strictly increasing from 0 to 2^16:
    a zero-width symbol would stall the rANS encoder). Checked before anything is loaded."""
    expected = compressor.state_dict()
    tables: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        prefix, _, name = key.rpartition(".")
        if key not in expected:
            raise ValueError(f"unknown tensor {key!r}")
        if name in CDF_BUFFERS:
            tables.setdefault(prefix, {})[name] = tensor
            continue
        want = expected[key]
        if tuple(tensor.shape) != tuple(want.shape) or tensor.is_floating_point() != want.is_floating_point():
            raise ValueError(f"tensor {key!r} is {tensor.dtype} {tuple(tensor.shape)}, the model config needs "
                             f"{want.dtype} {tuple(want.shape)}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"tensor {key!r} holds non-finite values")
    if not tables:
        return  # the tables are rebuilt from the weights
    modules = dict(compressor.named_modules())
    wanted = {k.rpartition(".")[0] for k in expected if k.rpartition(".")[2] == "_quantized_cdf"}
    if set(tables) != wanted:
        raise ValueError("the coding tables are saved for some entropy models only")
    for prefix, t in tables.items():
        need = {"_quantized_cdf", "_offset", "_cdf_length"} | ({"scale_table"} if f"{prefix}.scale_table" in expected else set())
        if set(t) != need:
            raise ValueError(f"coding tables of {prefix!r}: expected {sorted(need)}, got {sorted(t)}")
        cdf, length, offset = t["_quantized_cdf"], t["_cdf_length"], t["_offset"]
        if any(x.dtype != torch.int32 for x in (cdf, length, offset)) or cdf.ndim != 2 or length.ndim != 1 or offset.ndim != 1:
            raise ValueError(f"coding tables of {prefix!r}: expected int32 [rows, n], [rows], [rows]")
        rows, cols = cdf.shape
        module = modules[prefix]
        channels = t["scale_table"].numel() if "scale_table" in t else getattr(module, "quantiles", cdf).shape[0]
        if not (rows == channels == length.numel() == offset.numel()) or cols < 2 or cols > 1 << 16:
            raise ValueError(f"coding tables of {prefix!r} have inconsistent sizes")
        if "scale_table" in t and not bool((torch.isfinite(t["scale_table"]) & (t["scale_table"] > 0)).all()):
            raise ValueError(f"scale table of {prefix!r} is not finite and positive")
        if not bool(((length >= 2) & (length <= cols)).all()):
            raise ValueError(f"coding tables of {prefix!r}: a CDF length outside 2..{cols}")
        for i in range(rows):
            row = cdf[i, : int(length[i])]
            if int(row[0]) != 0 or int(row[-1]) != 1 << 16 or not bool((row[1:] > row[:-1]).all()):
                raise ValueError(f"coding tables of {prefix!r}: row {i} is not a CDF from 0 to 65536")


def load_trained_parts(
    folder: Path, config: ModelConfig, backbone: Backbone, new_gains: bool = False
) -> tuple[LatentCompressor, torch.nn.Module]:
    """The compressor and control module saved in ``folder``, built for ``config`` (whose
    compressor and control sizes must be the saved ones; its rate point may differ).
    ``new_gains``: ``config`` adds gain vectors to the saved fixed-rate compressor."""
    compressor = load_saved_compressor(folder, config, new_gains)
    control_state = _read_safetensors(folder, "control.safetensors")
    with _weights_fit(folder):
        cdm = build_control_unet(backbone.unet, config.control)
        load_control_state(cdm, control_state)
    return compressor, cdm


def load_saved_compressor(folder: Path, config: ModelConfig, new_gains: bool = False) -> LatentCompressor:
    """The compressor saved in ``folder``, built for ``config`` (see ``load_trained_parts``)."""
    state = _read_safetensors(folder, "compressor.safetensors")
    with _weights_fit(folder):
        compressor = compressor_for(config)
        load_compressor_state(compressor, state, new_gains)
    return compressor


@contextmanager
def _weights_fit(folder: Path):
    """Saved weights that do not fit the model their config builds: one clear line."""
    try:
        yield
    except (KeyError, RuntimeError, ValueError, OSError, AttributeError, TypeError) as exc:
        detail = " ".join(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).split())
        raise ModelLoadError(f"{folder}: weights do not fit the model config ({detail[:300]})") from None


def folder_config(folder: Path) -> ModelConfig:
    """The model config a trained-codec folder was saved with (read as any folder file: inside
    the folder, size-limited, safe YAML without aliases)."""
    folder = Path(folder)
    source = str(folder / "config.yaml")
    try:
        text = read_member(folder, "config.yaml").decode("utf-8")
    except UnicodeDecodeError:
        raise ModelLoadError(f"{source}: not UTF-8 text") from None
    return build_config(ModelConfig, yaml_mapping(text, source), source=source)


def _read_safetensors(folder: Path, name: str) -> dict[str, torch.Tensor]:
    if _pieces(folder, name) is not None:  # rebuilt, and checked against the manifest here (load_codec skips it)
        state = _read_pieces(folder, name)
        if hashlib.sha256(save(state)).hexdigest() != read_manifest(folder).get("files", {}).get(name):
            raise ModelLoadError(f"{Path(folder) / name}: contents do not match manifest.json (corrupt or edited)")
        return state
    check_safetensors_header(folder, name)
    path = member_path(folder, name)
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{Path(folder) / name}: not a readable safetensors file ({detail})") from None


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


def load_codec(folder: str | Path, backbone: Backbone | None = None, device="cpu", encode_only: bool = False) -> Codec:
    """The trained codec in ``folder``, every file checked against its manifest. ``encode_only``
    (the small profile; other profiles load whole): TAEF2 and the compressor, no diffusion prior,
    no control module and no diffusers import — what ``resulic compress`` needs, in a fraction of
    the start-up. A file's bits depend on neither of the parts left out, so such a codec writes
    the files the whole one writes, under the fingerprint the manifest names (a whole load, which
    every decoder does, recomputes it)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: no such trained-codec folder")
    manifest_path = folder / "manifest.json"
    manifest = read_manifest(folder)
    if manifest.get("version") != FOLDER_VERSION:
        raise ModelLoadError(f"{manifest_path}: folder version {str(manifest.get('version'))[:20]!r} is not supported")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ModelLoadError(f"{manifest_path}: no 'files' mapping")
    read_later = {"compressor.safetensors"} if encode_only else {"compressor.safetensors", "control.safetensors"}
    for name in FILES:
        if name in read_later and _pieces(folder, name) is not None:
            continue  # rebuilt from its pieces once, and checked then (_read_safetensors)
        if files.get(name) != _member_sha256(folder, name):
            raise ModelLoadError(f"{folder / name}: contents do not match manifest.json (corrupt or edited)")
    config = folder_config(folder)
    if backbone is None:
        check_backbone_source(config, folder)  # an encoder never reads it; it refuses what a decoder would
    if encode_only and config.backbone.profile == "small":
        fingerprint = manifest.get("fingerprint")
        if not (isinstance(fingerprint, str) and re.fullmatch(r"[0-9a-f]{8}", fingerprint)):
            raise ModelLoadError(f"{manifest_path}: no model fingerprint (8 hex digits)")
        compressor = load_saved_compressor(folder, config)
        return Codec(config, load_small_encoder(), compressor, None, device, fingerprint=bytes.fromhex(fingerprint)).to(device)
    if backbone is None:
        backbone = load_backbone(config.backbone)
    compressor, cdm = load_trained_parts(folder, config, backbone)
    codec = Codec(config, backbone, compressor, cdm, device).to(device)
    # A folder saved with an earlier bundled prior loads with the current one (models/backbone.py).
    if manifest.get("fingerprint") not in {fp.hex() for fp in (codec.fingerprint, *codec.earlier_fingerprints)}:
        raise ModelLoadError(
            f"{folder}: the loaded model's fingerprint {codec.fingerprint.hex()} differs from the manifest's "
            f"{str(manifest.get('fingerprint'))[:16]} (a different backbone than the one it was saved with?)"
        )
    codec.keep_fingerprint(bytes.fromhex(manifest["fingerprint"]))
    return codec
