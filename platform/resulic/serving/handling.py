"""The codec endpoint's request-independent parts: service config, rate-point catalog, request
options, input guards and response headers. ``serve/app.py`` (Ray Serve) and the plain FastAPI
baseline in ``benchmarks/bench_serve.py`` both call these; nothing here imports Ray.

Rate points. A service serves named rate points, each from a source: ``models:/<name>@<alias>``,
``models:/<name>/<version>`` or a trained-codec folder. The catalog resolves every source to a
*pinned* model id (``models:/<name>/<version>`` or the folder's absolute path) and its 4-byte
fingerprint. The pinned id is Serve's multiplexed model id: a replica loads one backbone and, per
pinned id, only the trained parts (compressor + control module). Decompression finds the model by
the fingerprint in the file's header, so files made by a version the catalog has since moved away
from (an alias swap) still decode while that version is remembered.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from ..config import RATE_LEVELS, StrictModel
from ..errors import (
    BitstreamError, ConfigError, DecodeLimitError, ImageError, ModelLoadError, ModelMismatchError, ResulicError,
)

RATE_POINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEADER_PREFIX = "X-Resulic-"
HISTORY = 32  # fingerprints of earlier versions the catalog still decodes
STRIDE = 128  # every model pads images to this (ModelConfig.stride); the ingress checks sizes with it


class RequestError(ResulicError):
    """A request the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------
# Configuration


class ServeLimits(StrictModel):
    """What one request may ask of the service."""

    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1, description="request bodies over this get 413")
    max_pixels: int = Field(4_000_000, ge=1, description="images over this get 413, checked before decoding pixels")
    max_text_chars: int = Field(1000, ge=0, description="the optional caption of the original")
    max_pfo_iterations: int = Field(50, ge=0, description="the most Pfo iterations a request may ask for")
    max_pfo_seconds: float = Field(30.0, ge=0, description="the most Pfo seconds a request may ask for")
    # Decode limits (resulic.codec.limits.DecodeLimits), checked from a bitstream's header first.
    max_decode_pixels: int = Field(
        1_048_576, ge=1, description="bitstreams whose image, padded to 128 px, has more pixels get 413",
    )
    max_steps: int | None = Field(
        None, ge=1, description="bitstreams asking for more diffusion steps get 422; null: 4 x the rate point's S",
    )
    max_guidance: float = Field(20.0, ge=0, description="bitstreams asking for a larger guidance scale get 422")
    max_text_tokens: int = Field(75, ge=0, description="bitstreams whose text section holds more tokens get 422")

    def decode_limits(self):
        """These limits as the codec's ``DecodeLimits``."""
        from ..codec.limits import DecodeLimits

        return DecodeLimits(self.max_decode_pixels, self.max_steps, self.max_guidance, self.max_text_tokens)


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


# --------------------------------------------------------------------------------------------
# Catalog


@dataclass(frozen=True)
class RatePoint:
    name: str
    source: str  # as configured
    model_id: str  # pinned: models:/<name>/<version> or an absolute folder path
    version: str  # the registry version, or "local" for a folder
    fingerprint: str  # hex


def _manifest_fingerprint(folder: Path) -> str:
    from ..codec.store import read_manifest  # inside the folder, size-limited, one-line errors

    try:
        return str(read_manifest(folder)["fingerprint"])[:64]
    except (ModelLoadError, KeyError):
        raise ModelLoadError(f"{folder}: not a trained-codec folder (no readable manifest.json)") from None


def pin(name: str, source: str, tracking_uri: str | None = None) -> RatePoint:
    """Resolve one rate point's source to a pinned model id and its fingerprint (no weights read)."""
    from ..services import registry

    if registry.is_registry_uri(source):
        mv = registry.resolve(source, tracking_uri)
        fingerprint = (mv.tags or {}).get("fingerprint")
        if not fingerprint:
            raise ModelLoadError(f"{source}: version {mv.version} has no fingerprint tag (not registered by resulic)")
        return RatePoint(name, source, f"models:/{mv.name}/{mv.version}", str(mv.version), fingerprint)
    folder = Path(source).expanduser().resolve()
    if not folder.is_dir():
        raise ModelLoadError(f"rate point {name}: {source} is neither a models:/ URI nor a trained-codec folder")
    return RatePoint(name, source, str(folder), "local", _manifest_fingerprint(folder))


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
        catalog.current = {d["name"]: RatePoint(**d) for d in snapshot["rate_points"]}
        catalog._by_fingerprint = OrderedDict((d["fingerprint"], RatePoint(**d)) for d in snapshot["decodable"])
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
            self._by_fingerprint.pop(rp.fingerprint, None)
            self._by_fingerprint[rp.fingerprint] = rp
        while len(self._by_fingerprint) > HISTORY:
            self._by_fingerprint.popitem(last=False)

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
            "decodable": [asdict(rp) for rp in self._by_fingerprint.values()],
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


# --------------------------------------------------------------------------------------------
# Requests


@dataclass
class CompressOptions:
    rate_point: str | None = None
    text: str = ""
    srr: bool = False
    pfo_iterations: int = 0  # 0 = no Pfo
    pfo_seconds: float | None = None
    bpp: float | None = None  # per-image rate control (a variable-rate model)
    level: int | None = None  # a variable-rate model's rate level
    one_pass: bool = False  # the file asks for a one-pass decode

    @property
    def pfo(self) -> bool:
        return self.pfo_iterations > 0


OPTION_NAMES = ("rate_point", "text", "srr", "pfo_iterations", "pfo_seconds", "bpp", "level", "one_pass")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def parse_flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise RequestError(f"{name}={raw!r}: expected true or false")


def _optional_number(fields: dict[str, str], name: str, kind: type, what: str):
    """The field as ``kind``, None when absent or blank; a RequestError naming it otherwise."""
    raw = fields.get(name, "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise RequestError(f"{name}={fields[name]!r}: expected {what}") from None


def parse_compress_options(fields: dict[str, str], limits: ServeLimits) -> CompressOptions:
    """Options from query parameters or form fields (strings), checked against ``limits``."""
    unknown = sorted(set(fields) - set(OPTION_NAMES))
    if unknown:
        raise RequestError(f"unknown option(s) {unknown}; known: {list(OPTION_NAMES)}")
    opts = CompressOptions()
    if fields.get("rate_point"):
        opts.rate_point = fields["rate_point"].strip()
    opts.text = fields.get("text", "")
    if len(opts.text) > limits.max_text_chars:
        raise RequestError(f"text has {len(opts.text)} characters, over the limit of {limits.max_text_chars}", 413)
    opts.srr = parse_flag("srr", fields.get("srr", "false"))
    raw_iterations = fields.get("pfo_iterations", "0").strip() or "0"
    try:
        opts.pfo_iterations = int(raw_iterations)
    except ValueError:
        raise RequestError(f"pfo_iterations={raw_iterations!r}: expected an integer") from None
    if not 0 <= opts.pfo_iterations <= limits.max_pfo_iterations:
        raise RequestError(f"pfo_iterations must be in 0..{limits.max_pfo_iterations} (0 = no Pfo)")
    opts.pfo_seconds = _optional_number(fields, "pfo_seconds", float, "a number")
    if opts.pfo_seconds is not None and not (math.isfinite(opts.pfo_seconds) and 0 < opts.pfo_seconds <= limits.max_pfo_seconds):
        raise RequestError(f"pfo_seconds must be in (0, {limits.max_pfo_seconds}]")
    opts.bpp = _optional_number(fields, "bpp", float, "a number of bits per pixel")
    if opts.bpp is not None and not (math.isfinite(opts.bpp) and opts.bpp > 0):
        raise RequestError(f"bpp={fields['bpp']!r}: must be a positive number of bits per pixel, e.g. 0.05")
    opts.level = _optional_number(fields, "level", int, f"an integer 0..{RATE_LEVELS}")
    if opts.level is not None and not 0 <= opts.level <= RATE_LEVELS:
        raise RequestError(f"level must be in 0..{RATE_LEVELS}")
    if opts.bpp is not None and opts.level is not None:
        raise RequestError("bpp and level both set the rate: give one")
    opts.one_pass = parse_flag("one_pass", fields.get("one_pass", "false"))
    if opts.pfo and not opts.srr:
        raise RequestError("Pfo refines the semantic residual: set srr=true with pfo_iterations")
    if opts.srr and not opts.text.strip():
        raise RequestError("srr needs the original's caption as text= (this service runs no captioner)")
    return opts


def check_body_size(length: int, limits: ServeLimits) -> None:
    if length > limits.max_body_bytes:
        raise RequestError(f"request body is over the limit of {limits.max_body_bytes:,} bytes", 413)


# Multipart bodies. A form holds one upload and at most the few options above (OPTION_NAMES); the
# stdlib parser used before took 11 s on the event loop for a 559 KB body of 10,000 fields (the
# 16 MB body limit admitted ~290,000), so parts, header sizes and each option's size are bounded
# and the parsing (python-multipart, streaming, linear) runs on a worker thread.
MAX_MULTIPART_PARTS = 16
MAX_FIELD_BYTES = 16 * 1024  # an option's value (text= is at most max_text_chars characters)


def split_multipart(body: bytes, content_type: str, file_field: str, max_parts: int = MAX_MULTIPART_PARTS,
                    max_field_bytes: int = MAX_FIELD_BYTES) -> tuple[bytes, dict[str, str]]:
    """(the file part, the other fields as strings) of a multipart/form-data body, parsed by
    python-multipart; more than ``max_parts`` parts, a field over ``max_field_bytes``, a repeated
    name or a malformed body is a RequestError (413 / 400) as soon as the parser reaches it."""
    import logging

    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    logging.getLogger("python_multipart").setLevel(logging.CRITICAL)  # its refusals are our 400s, not log lines

    media, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if media != b"multipart/form-data" or not boundary or len(boundary) > 200:
        raise RequestError("malformed multipart/form-data body (no boundary)")
    parts: list[tuple[str | None, list[bytes]]] = []
    state = {"field": b"", "value": b"", "headers": {}, "size": 0, "ended": False}

    def on_part_begin() -> None:
        if len(parts) >= max_parts:
            raise RequestError(f"multipart body has more than {max_parts} parts", 413)
        state.update(headers={}, size=0)
        parts.append((None, []))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state.update(field=b"", value=b"")

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name")
        parts[-1] = (name.decode("utf-8", errors="replace") if name is not None else None, parts[-1][1])

    def on_part_data(data: bytes, start: int, end: int) -> None:
        name, chunks = parts[-1]
        state["size"] += end - start
        if name != file_field and state["size"] > max_field_bytes:
            raise RequestError(f"multipart field {str(name)[:40]!r} is over the limit of {max_field_bytes:,} bytes", 413)
        chunks.append(data[start:end])

    def on_end() -> None:
        state["ended"] = True

    callbacks = dict(on_end=on_end, on_part_begin=on_part_begin, on_header_field=on_header_field, on_header_value=on_header_value,
                     on_header_end=on_header_end, on_headers_finished=on_headers_finished, on_part_data=on_part_data)
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise RequestError(f"malformed multipart/form-data body ({' '.join(str(exc).split())[:100]})") from None
    if not state["ended"]:
        raise RequestError("malformed multipart/form-data body (it ends before its closing boundary)")
    data, fields = None, {}
    for name, chunks in parts:
        if name is None:
            continue
        if name == file_field:
            if data is not None:
                raise RequestError(f"multipart body has more than one {file_field!r} part")
            data = b"".join(chunks)
        elif name in fields:
            raise RequestError(f"multipart field {name[:40]!r} is repeated")
        else:
            fields[name] = b"".join(chunks).decode("utf-8", errors="replace")
    if data is None:
        raise RequestError(f"multipart body has no {file_field!r} part")
    return data, fields


def _image_error(exc: ImageError) -> RequestError:
    message = str(exc).removeprefix("image data: ")
    status = 413 if "exceeds the limit" in message or "decompression bomb" in message else 400
    return RequestError(f"upload: {message}", status)


def check_image_header(data: bytes, limits: ServeLimits) -> tuple[int, int]:
    """Width and height from an upload's header, refused when over ``limits.max_pixels`` or not
    an image; no pixel is decoded (the ingress runs this before a codec replica sees the bytes)."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    if not data:
        raise RequestError("upload: the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
    except UnidentifiedImageError:
        raise RequestError("upload: not an image (or a format Pillow cannot read)", 415) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RequestError(f"upload: refused as a decompression bomb ({exc})", 413) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(f"upload: unreadable or truncated image ({exc})") from None
    if w * h > limits.max_pixels:
        raise RequestError(f"upload: {w}x{h} = {w * h:,} pixels exceeds the limit of {limits.max_pixels:,}", 413)
    return w, h


def open_upload(data: bytes, limits: ServeLimits):
    """The uploaded image as RGB; size checked from the header before any pixel is decoded."""
    from ..images import open_image

    try:
        return open_image(data, max_pixels=limits.max_pixels)
    except ImageError as exc:
        raise _image_error(exc) from None


def bitstream_header(data: bytes, limits: ServeLimits | None = None):
    """A bitstream's header (a corrupt header is a 400). With ``limits``, a header over the
    decode limits that need no model (size, stated steps and guidance) is refused here too
    (413/422), so the ingress answers before any replica works."""
    from ..codec.container import unpack

    try:
        header = unpack(data).header
    except BitstreamError as exc:
        raise RequestError(f"not a ResULIC bitstream: {exc}") from None
    if limits is not None:
        try:
            limits.decode_limits().check_header(header, STRIDE)
        except DecodeLimitError as exc:
            raise _limit_error(exc) from None
    return header


def fingerprint_of(data: bytes, limits: ServeLimits | None = None) -> str:
    """The model fingerprint a bitstream names (``bitstream_header``'s checks)."""
    return bitstream_header(data, limits).fingerprint.hex()


def model_settings(codec) -> dict:
    """What the ingress needs of a loaded model to check a header as the replica would: its rate
    point and stride (``check_settings``), as plain data for the catalog snapshot."""
    return {"rate_point": codec.config.rate_point.model_dump(mode="json"), "stride": codec.config.stride}


def check_header_settings(header, settings: dict | None, limits: ServeLimits) -> None:
    """Refuse, in the ingress, a header the model's settings refuse (its own S over the steps
    limit, S over N_r, a rate level for a fixed-rate model): the same check a replica runs, but
    before the file queues behind running decodes (issue 25: p95 40-90 s for a 4xx under load).
    Without ``settings`` (a model no replica has reported yet) the replica checks it."""
    if not settings:
        return
    from ..codec.limits import check_settings
    from ..config import RatePointConfig

    try:
        check_settings(header, RatePointConfig.model_validate(settings["rate_point"]), int(settings["stride"]),
                       limits.decode_limits())
    except DecodeLimitError as exc:
        raise _limit_error(exc) from None
    except BitstreamError as exc:
        raise RequestError(str(exc), status_for(exc)) from None


# What each DecodeLimits field is called in ServeLimits.
_SERVE_LIMIT_NAMES = {"max_pixels": "max_decode_pixels"}


def _limit_error(exc: DecodeLimitError) -> RequestError:
    name = _SERVE_LIMIT_NAMES.get(exc.limit, exc.limit)
    served = exc.with_hint(f"this service's limits.{name} (set by its operator)")
    return RequestError(str(served), 413 if exc.limit == "max_pixels" else 422)


def status_for(exc: BaseException) -> int:
    """The HTTP status for a library error raised while serving a request."""
    if isinstance(exc, RequestError):
        return exc.status
    if isinstance(exc, DecodeLimitError):
        return 413 if exc.limit == "max_pixels" else 422
    if isinstance(exc, ModelMismatchError):
        return 422
    if isinstance(exc, (BitstreamError, ImageError, ConfigError, ValueError)):
        return 400
    if isinstance(exc, ModelLoadError):
        return 503
    return 500


# --------------------------------------------------------------------------------------------
# Codec work (inside a replica or the baseline app)


@dataclass
class Reply:
    """What a codec call returns across a process boundary: bytes + headers, or an error."""

    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    error: str = ""


def _headers(rp: RatePoint, **extra) -> dict[str, str]:
    out = {"Rate-Point": rp.name, "Model-Version": rp.version, "Model-Fingerprint": rp.fingerprint}
    out.update({k.replace("_", "-").title(): str(v) for k, v in extra.items()})
    return {HEADER_PREFIX + k: v for k, v in out.items()}


def compress_reply(codec, rp: RatePoint, image_bytes: bytes, options: CompressOptions, limits: ServeLimits) -> Reply:
    """Compress an uploaded image with ``codec`` (the one ``rp`` names): the bitstream and headers."""
    try:
        image = open_upload(image_bytes, limits)
        semantics = None
        if options.pfo:
            from ..config import SemanticsConfig
            from ..semantics.pipeline import Semantics

            pfo = {"iterations": options.pfo_iterations, "progress": False}
            if options.pfo_seconds is not None:
                pfo["time_budget_s"] = options.pfo_seconds
            semantics = Semantics(SemanticsConfig(pfo=pfo))
        import warnings

        encode_options = dict(text=options.text, srr=options.srr, pfo=options.pfo, semantics=semantics)
        if options.one_pass:
            from ..codec.codec import ONE_PASS

            encode_options.update(ONE_PASS)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "no captioner": the residual is the whole text
            extra = {}
            if options.bpp is not None:
                from ..codec.rate_control import encode_to_bpp

                result, search = encode_to_bpp(codec, image, options.bpp, **encode_options)
                extra = {"target_bpp": f"{options.bpp:g}", "search_encodes": search.encodes}
            else:
                result = codec.encode(image, level=options.level, **encode_options)
    except ResulicError as exc:
        return Reply(status=status_for(exc), error=str(exc))
    except ValueError as exc:
        return Reply(status=400, error=str(exc))
    if result.level is not None:
        extra["level"] = result.level
    headers = _headers(rp, bpp=f"{result.bpp:.6f}", width=result.width, height=result.height,
                       text_mode=result.semantics.get("text_mode", ""), seconds=f"{result.seconds:.4f}", **extra)
    return Reply(result.data, headers)


def _error_reply(exc: ResulicError) -> Reply:
    if isinstance(exc, DecodeLimitError):
        exc = _limit_error(exc)
    return Reply(status=status_for(exc), error=str(exc))


def refuse_bitstream(codec, data: bytes, limits: ServeLimits) -> Reply | None:
    """The error reply for a bitstream ``codec`` refuses from its header alone (malformed, other
    model, over ``limits``), else None. Cheap: a replica runs it before queueing the decode."""
    try:
        codec.check_file(data, limits.decode_limits())
    except ResulicError as exc:
        return _error_reply(exc)
    return None


def decompress_reply(codec, rp: RatePoint, data: bytes, limits: ServeLimits | None = None,
                     one_pass: bool = False) -> Reply:
    """Decode a bitstream with ``codec`` within ``limits`` (``one_pass``: one network
    evaluation, whatever the file asks): PNG bytes and headers."""
    from ..images import png_bytes

    try:
        result = codec.decode(data, limits=(limits or ServeLimits()).decode_limits(), one_pass=one_pass)
    except ResulicError as exc:
        return _error_reply(exc)
    w, h = result.image.size
    return Reply(png_bytes(result.image, mark=True), _headers(rp, width=w, height=h, seconds=f"{result.seconds:.4f}"))


def decompress_replies(codec, rp: RatePoint, files: list[bytes], limits: ServeLimits | None = None) -> list[Reply]:
    """``decompress_reply`` for several files at once (``resulic.codec.batch``: up to rounding)."""
    from ..codec.batch import decode_batch
    from ..images import png_bytes

    replies = []
    for result in decode_batch(codec, files, (limits or ServeLimits()).decode_limits()):
        if isinstance(result, ResulicError):
            replies.append(_error_reply(result))
            continue
        w, h = result.image.size
        replies.append(Reply(png_bytes(result.image, mark=True), _headers(rp, width=w, height=h, seconds=f"{result.seconds:.4f}",
                                                               batched="true")))
    return replies


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
