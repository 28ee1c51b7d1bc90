"""A small client of the codec endpoint (serve/app.py), on the standard library's urllib.

    client = CodecClient("http://127.0.0.1:8000")
    result = client.compress(png_bytes, rate_point="r300")   # .data, .bpp, .rate_point, .model_version
    png = client.decompress(result.data)

Refusals come back as ``RemoteError`` (a ResulicError) with the service's message and status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import ResulicError


class RemoteError(ResulicError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class RemoteResult:
    data: bytes
    headers: dict[str, str]

    def header(self, name: str, default: str = "") -> str:
        from ..serving.handling import HEADER_PREFIX  # not at the top: `resulic --help` builds this module's parser

        return self.headers.get((HEADER_PREFIX + name).lower(), default)

    @property
    def bpp(self) -> float:
        return float(self.header("Bpp", "nan"))

    @property
    def rate_point(self) -> str:
        return self.header("Rate-Point")

    @property
    def model_version(self) -> str:
        return self.header("Model-Version")


class CodecClient:
    def __init__(self, url: str, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None, query: dict | None = None,
                 content_type: str = "application/octet-stream") -> RemoteResult:
        import urllib.error  # here, not at the top: every `resulic` command builds this module's parser
        import urllib.parse
        import urllib.request

        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (query or {}).items() if v is not None}
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url, data=body, method=method,
                                         headers={"Content-Type": content_type} if body is not None else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return RemoteResult(response.read(), {k.lower(): v for k, v in response.headers.items()})
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("error") or json.loads(raw).get("detail") or raw.decode()
            except (ValueError, AttributeError):
                message = raw.decode("utf-8", errors="replace")[:500]
            raise RemoteError(f"{url}: HTTP {exc.code}: {message}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError(f"{url}: cannot reach the service ({reason})") from None

    def compress(self, image: bytes, rate_point: str | None = None, text: str | None = None, srr: bool | None = None,
                 pfo_iterations: int | None = None, pfo_seconds: float | None = None, bpp: float | None = None,
                 level: int | None = None, one_pass: bool | None = None) -> RemoteResult:
        """Image file bytes (PNG, JPEG, ...) -> the bitstream and its headers (``bpp``: per-image
        rate control of a variable-rate model; ``level``: its rate level)."""
        query = dict(rate_point=rate_point, text=text, srr=srr, pfo_iterations=pfo_iterations, pfo_seconds=pfo_seconds,
                     bpp=bpp, level=level, one_pass=one_pass)
        return self._request("POST", "/v1/compress", image, query)

    def decompress(self, data: bytes, one_pass: bool | None = None) -> RemoteResult:
        """A bitstream -> PNG bytes (``.data``); ``one_pass``: one network evaluation."""
        return self._request("POST", "/v1/decompress", data, {"one_pass": one_pass})

    def models(self) -> dict:
        return json.loads(self._request("GET", "/v1/models").data)

    def health(self) -> dict:
        return json.loads(self._request("GET", "/healthz").data)


def compress_files(url: str, sources, destinations, **options) -> list[str]:
    """Compress image files over HTTP into bitstream files (written atomically); one line each."""
    from ..images import write_atomic

    client = CodecClient(url)
    lines = []
    for src, dst in zip(sources, destinations):
        result = client.compress(_read(src), **options)
        write_atomic(dst, result.data)
        lines.append(f"{src} -> {dst}: {len(result.data)} bytes, {result.bpp:.5f} bpp "
                     f"(rate point {result.rate_point}, model version {result.model_version})")
    return lines


def decompress_files(url: str, sources, destinations) -> list[str]:
    from ..images import write_atomic

    client = CodecClient(url)
    lines = []
    for src, dst in zip(sources, destinations):
        result = client.decompress(_read(src))
        write_atomic(dst, result.data)
        lines.append(f"{src} -> {dst}: PNG, {result.header('Width')}x{result.header('Height')} "
                     f"(rate point {result.rate_point}, model version {result.model_version})")
    return lines


def _read(path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ResulicError(f"{path}: cannot read ({exc.strerror})") from None


# --------------------------------------------------------------------------------------------
# `resulic remote compress|decompress --url ...`


def add_parser(sub) -> None:
    remote = sub.add_parser("remote", help="compress/decompress through a running codec endpoint (serve/)",
                            description="Use a codec endpoint over HTTP (see docs/serving.md).")
    verbs = remote.add_subparsers(dest="remote_command", metavar="ACTION", required=True)
    for verb, what in (("compress", "image(s) -> .rslc file(s)"), ("decompress", ".rslc file(s) -> PNG")):
        p = verbs.add_parser(verb, help=what, description=f"{what}, by the service at --url")
        p.add_argument("input", help="a file or a folder")
        p.add_argument("-o", "--output", help="output file or folder (default: beside the input)")
        p.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default: http://127.0.0.1:8000)")
        if verb == "decompress":
            p.add_argument("-f", "--force", action="store_true",
                           help="overwrite existing output images (default: only images a decompress wrote)")
        if verb == "compress":
            p.add_argument("--rate-point", help="a rate point of the service (GET /v1/models)")
            p.add_argument("--text", help="the original's caption (sent whole, or the source of --srr)")
            p.add_argument("--srr", action="store_true", help="send the semantic residual of --text")
            p.add_argument("--pfo-iterations", type=int, help="prompt fidelity optimisation iterations (with --srr)")
            p.add_argument("--pfo-seconds", type=float, help="Pfo time budget")


def cmd_remote(args) -> int:
    from pathlib import Path

    from .common import SUFFIX, file_pairs
    from ..images import IMAGE_SUFFIXES

    if args.remote_command == "compress":
        pairs, _ = file_pairs(Path(args.input), args.output, lambda p: p.suffix.lower() in IMAGE_SUFFIXES, SUFFIX, "_rslc")
        options = dict(rate_point=args.rate_point, text=args.text, srr=args.srr or None,
                       pfo_iterations=args.pfo_iterations, pfo_seconds=args.pfo_seconds)
        lines = compress_files(args.url, *zip(*pairs), **options)
    else:
        pairs, _ = file_pairs(Path(args.input), args.output, lambda p: p.suffix == SUFFIX, ".png", "_decoded")
        if not args.force:
            from ..images import is_decoded_by_us

            for _, dst in pairs:
                if dst.exists() and not is_decoded_by_us(dst):
                    raise ResulicError(f"{dst} exists and was not written by a decompress (the original photo?): "
                                       "choose another -o, or pass --force to overwrite it")
        lines = decompress_files(args.url, *zip(*pairs))
    print("\n".join(lines))
    return 0
