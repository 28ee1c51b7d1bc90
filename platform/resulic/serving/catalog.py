"""The rate-point catalogue: what a codec deployment serves (its config) and which model each
rate point is now.

A service serves named rate points, each from a source: ``models:/<name>@<alias>``,
``models:/<name>/<version>`` or a trained-codec folder. The catalog resolves every source to a
*pinned* model id (``models:/<name>/<version>`` or the folder's absolute path) and its 4-byte
fingerprint. The pinned id is Serve's multiplexed model id: a replica loads one backbone and, per
pinned id, only the trained parts (compressor + control module). Decompression finds the model by
the fingerprint in the file's header, so files made by a version the catalog has since moved away
from (an alias swap) still decode while that version is remembered.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from ..config import StrictModel
from ..errors import ModelLoadError
from .limits import RequestError, ServeLimits

RATE_POINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

HISTORY = 32  # fingerprints of earlier versions the catalog still decodes

class RatePointsConfig(StrictModel):
    """What a codec deployment serves; Serve's ``user_config`` for the codec deployment, so
    changing it (e.g. an alias or a version) swaps models without restarting replicas."""

    rate_points: dict[str, str] = Field(
        default_factory=lambda: {"default": "models:/resulic@champion"},
        description="rate point name -> models:/<name>@<alias>, models:/<name>/<version> or a trained-codec folder",
    )
    default_rate_point: str | None = Field(None, description="used when a request names none; default: the first")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default: MLFLOW_TRACKING_URI / MLflow's")
    follow_aliases_s: float | None = Field(
        30.0, gt=0, description="re-resolve aliases this often, so a promotion (a moved alias) swaps models with no "
        "deploy; null = only when the config changes",
    )

    @field_validator("rate_points")
    @classmethod
    def _names(cls, rate_points: dict[str, str]) -> dict[str, str]:
        if not rate_points:
            raise ValueError("at least one rate point")
        for name in rate_points:
            if not RATE_POINT_NAME.match(name):
                raise ValueError(f"{name!r}: rate point names are letters, digits, '_', '.', '-' (up to 64)")
        return rate_points

    @model_validator(mode="after")
    def _default_known(self) -> "RatePointsConfig":
        if self.default_rate_point is not None and self.default_rate_point not in self.rate_points:
            raise ValueError(f"default_rate_point {self.default_rate_point!r} is not one of {sorted(self.rate_points)}")
        return self

    @property
    def default(self) -> str:
        return self.default_rate_point or next(iter(self.rate_points))

class ServeAppConfig(StrictModel):
    """The Serve application's ``args`` (serve/config.*.yaml)."""

    models: RatePointsConfig = Field(default_factory=RatePointsConfig)
    limits: ServeLimits = Field(default_factory=ServeLimits)
    device: str = Field("cpu", description="torch device of the codec replicas (cuda with num_gpus: 1)")
    codec_options: dict = Field(
        default_factory=dict, description="Serve options of the codec deployment (autoscaling_config, "
        "max_ongoing_requests, user_config, ...) when built from Python; config files set them under deployments[]",
    )

def rate_points_config(data: dict | None, source: str = "user_config") -> RatePointsConfig:
    """Validate a ``RatePointsConfig`` from plain data, as a ConfigError naming ``source``."""
    from ..config import build_config

    return build_config(RatePointsConfig, dict(data or {}), (), source=source)

@dataclass(frozen=True)
class RatePoint:
    name: str
    source: str  # as configured
    model_id: str  # pinned: models:/<name>/<version> or an absolute folder path
    version: str  # the registry version, or "local" for a folder
    fingerprint: str  # hex
    # Fingerprints of the files it made through an earlier bundled prior, which it still decodes.
    earlier: tuple[str, ...] = ()

    def fingerprints(self) -> tuple[str, ...]:
        return (self.fingerprint, *self.earlier)

    @classmethod
    def from_dict(cls, d: dict) -> "RatePoint":
        """From ``asdict`` after a JSON round trip (``earlier`` comes back a list)."""
        return cls(**{**d, "earlier": tuple(d.get("earlier") or ())})

def _manifest_fingerprints(folder: Path) -> tuple[str, tuple[str, ...]]:
    from ..codec.store import read_manifest  # inside the folder, size-limited, one-line errors

    try:
        manifest = read_manifest(folder)
        return str(manifest["fingerprint"])[:64], _earlier(manifest.get("earlier_fingerprints"))
    except (ModelLoadError, KeyError):
        raise ModelLoadError(f"{folder}: not a trained-codec folder (no readable manifest.json)") from None

def _earlier(value) -> tuple[str, ...]:
    """A manifest's list or a registry tag's comma-separated text: at most a few short hex ids."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(str(item)[:64] for item in items[:8] if item)

def pin(name: str, source: str, tracking_uri: str | None = None) -> RatePoint:
    """Resolve one rate point's source to a pinned model id and its fingerprint (no weights read)."""
    from ..services import registry

    if registry.is_registry_uri(source):
        mv = registry.resolve(source, tracking_uri)
        fingerprint = (mv.tags or {}).get("fingerprint")
        if not fingerprint:
            raise ModelLoadError(f"{source}: version {mv.version} has no fingerprint tag (not registered by resulic)")
        return RatePoint(name, source, f"models:/{mv.name}/{mv.version}", str(mv.version), fingerprint,
                         _earlier((mv.tags or {}).get("earlier_fingerprints")))
    folder = Path(source).expanduser().resolve()
    if not folder.is_dir():
        raise ModelLoadError(f"rate point {name}: {source} is neither a models:/ URI nor a trained-codec folder")
    return RatePoint(name, source, str(folder), "local", *_manifest_fingerprints(folder))

def resolve_rate_points(config: RatePointsConfig) -> dict[str, RatePoint]:
    return {name: pin(name, source, config.tracking_uri) for name, source in config.rate_points.items()}

class Catalog:
    """The rate points a deployment serves now, plus the fingerprints of versions it served
    before (so their files still decode after a swap)."""

    def __init__(self, config: RatePointsConfig, resolve: bool = True) -> None:
        self.config = config
        self.current: dict[str, RatePoint] = {}
        self._by_fingerprint: OrderedDict[str, RatePoint] = OrderedDict()
        self.settings: dict[str, dict] = {}  # fingerprint -> model_settings() of models a replica loaded
        if resolve:
            self.refresh(config)

    @classmethod
    def from_snapshot(cls, snapshot: dict) -> "Catalog":
        """A read-only copy of another process's catalog (``as_dict``), e.g. in the ingress."""
        catalog = cls(RatePointsConfig.model_validate(snapshot["config"]), resolve=False)
        catalog.current = {d["name"]: RatePoint.from_dict(d) for d in snapshot["rate_points"]}
        for d in snapshot["decodable"]:
            catalog._remember(RatePoint.from_dict(d))
        catalog.settings = dict(snapshot.get("settings") or {})
        return catalog

    def refresh(self, config: RatePointsConfig | None = None) -> None:
        """Re-resolve every source (aliases may have moved); keep earlier fingerprints."""
        config = config or self.config
        self.apply(config, resolve_rate_points(config))

    def apply(self, config: RatePointsConfig, current: dict[str, RatePoint]) -> None:
        """Switch to rate points resolved elsewhere (``resolve_rate_points``, e.g. on a thread)."""
        self.config, self.current = config, dict(current)
        for rp in current.values():
            self._remember(rp)
        while len(self._by_fingerprint) > HISTORY and self._forget_oldest():
            pass

    def _forget_oldest(self) -> bool:
        """Forget the longest-unserved version whole (every fingerprint it decodes), so that a
        snapshot, which lists versions, holds what this catalog holds; never one served now."""
        oldest = next(iter(self._by_fingerprint.values()))
        if oldest in self.current.values():
            return False
        for fingerprint in oldest.fingerprints():
            if self._by_fingerprint.get(fingerprint) == oldest:
                del self._by_fingerprint[fingerprint]
        return True

    def _remember(self, rp: RatePoint) -> None:
        for fingerprint in rp.fingerprints():
            self._by_fingerprint.pop(fingerprint, None)
            self._by_fingerprint[fingerprint] = rp

    def rate_point(self, name: str | None) -> RatePoint:
        name = name or self.config.default
        try:
            return self.current[name]
        except KeyError:
            raise RequestError(f"unknown rate point {name!r}; this service has {sorted(self.current)}", 404) from None

    def for_fingerprint(self, fingerprint: str) -> RatePoint:
        try:
            return self._by_fingerprint[fingerprint]
        except KeyError:
            raise RequestError(
                f"the bitstream was made by model {fingerprint}, which this service does not serve "
                f"(it serves {', '.join(f'{r.name}={r.fingerprint}' for r in self.current.values())})", 422,
            ) from None

    def allows(self, model_id: str) -> bool:
        """Whether a replica may load ``model_id``: a version it has served, or any version of a
        registered model one of its sources names (files of older versions still decode on a
        replica started after a swap); never a path the config does not name."""
        from ..services.registry import _URI

        if any(rp.model_id == model_id for rp in self._by_fingerprint.values()):
            return True
        wanted = _URI.match(model_id)
        names = {m["name"] for m in map(_URI.match, self.config.rate_points.values()) if m}
        return bool(wanted and wanted["version"] and wanted["name"] in names)

    def as_dict(self) -> dict:
        return {
            "config": self.config.model_dump(mode="json"),
            "default_rate_point": self.config.default,
            "rate_points": [asdict(rp) for rp in self.current.values()],
            # Each version once, in the order it was last remembered (from_snapshot replays it).
            "decodable": [asdict(rp) for rp in dict.fromkeys(reversed(self._by_fingerprint.values()))][::-1],
        }

def load_rate_point(model_id: str, backbone=None, device="cpu", cache_dir: str | Path | None = None,
                    tracking_uri: str | None = None):
    """The ``Codec`` of a pinned model id, built on ``backbone`` when given (one backbone per
    replica: only the trained parts are read)."""
    from ..services import registry
    from ..codec.store import load_codec

    if registry.is_registry_uri(model_id):
        cache = Path(cache_dir or tempfile.gettempdir())
        dst = cache / re.sub(r"[^A-Za-z0-9_.-]", "_", model_id.removeprefix("models:/"))
        folder = dst if (dst / "manifest.json").is_file() else registry.fetch_codec(model_id, dst, tracking_uri)
    else:
        folder = Path(model_id)
    return load_codec(folder, backbone=backbone, device=device)

CACHE_PREFIX = "resulic-serve-"

def replica_cache_dir(root: str | Path | None = None) -> Path:
    """Where a replica keeps downloaded registry versions (one folder per process). Folders left
    by replicas that died without cleaning up are removed first."""
    root = Path(root or tempfile.gettempdir())
    remove_stale_cache_dirs(root)
    path = root / f"{CACHE_PREFIX}{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path

def remove_stale_cache_dirs(root: str | Path) -> list[Path]:
    """Remove ``resulic-serve-<pid>`` folders under ``root`` whose process is gone (ours only:
    same owner; a live or foreign pid is left alone)."""
    import shutil

    removed = []
    for path in Path(root).glob(f"{CACHE_PREFIX}*"):
        pid = path.name.removeprefix(CACHE_PREFIX)
        if not pid.isdigit() or not path.is_dir() or path.is_symlink() or path.stat().st_uid != os.getuid():
            continue
        if _process_exists(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed

def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
