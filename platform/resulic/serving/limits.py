"""What one request may ask of the codec endpoint, and the guards that refuse the rest before
any model works: body and image sizes, bitstream headers against the decode limits, and the HTTP
status of every refusal."""

from __future__ import annotations

from pydantic import Field

from ..config import StrictModel
from ..errors import (
    BitstreamError, ConfigError, DecodeLimitError, ImageError, ModelLoadError, ModelMismatchError, ResulicError,
)

STRIDE = 128  # every model pads images to this (ModelConfig.stride); the ingress checks sizes with it

class RequestError(ResulicError):
    """A request the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

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

def check_body_size(length: int, limits: ServeLimits) -> None:
    if length > limits.max_body_bytes:
        raise RequestError(f"request body is over the limit of {limits.max_body_bytes:,} bytes", 413)

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
            raise limit_error(exc) from None
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
        raise limit_error(exc) from None
    except BitstreamError as exc:
        raise RequestError(str(exc), status_for(exc)) from None

# What each DecodeLimits field is called in ServeLimits.
_SERVE_LIMIT_NAMES = {"max_pixels": "max_decode_pixels"}

def limit_error(exc: DecodeLimitError) -> RequestError:
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
