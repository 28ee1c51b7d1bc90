"""Request handling: a compress request's options, multipart bodies, and the codec work of a
request (compress, decompress, a batch of decompressions) as replies with the endpoint's headers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import RATE_LEVELS
from ..errors import DecodeLimitError, ResulicError
from .catalog import RatePoint
from .limits import RequestError, ServeLimits, limit_error, open_upload, status_for

HEADER_PREFIX = "X-Resulic-"

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
        exc = limit_error(exc)
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
