"""The ResULIC file: a few header bytes, an optional text section, one rANS stream, a CRC.

At the lowest rate point a Kodak file is ≈140 bytes, so every header byte costs ≈0.7 % of the
rate: sizes are varints, settings the model's rate point implies are not repeated, and the
latent stream runs to the checksum without a length field. The layout is documented in
docs/bitstream.md; this module is its only reader and writer.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

import math
import operator

from ..config import MAX_SEED, RATE_LEVELS
from ..errors import BitstreamError

MAGIC = 0xC5
# 2: the text section holds entropy-coded CLIP token ids (semantics/text_coding.py); 1 held UTF-8.
FORMAT_VERSION = 2
FINGERPRINT_BYTES = 4
CHECKSUM_BYTES = 2
MAX_SIDE = 1 << 16  # pixels; anything larger is not a file we wrote

FLAG_OVERRIDES = 0x1
TEXT_MODE_SHIFT, TEXT_MODE_MASK = 1, 0x6
FLAG_RESERVED = 0x8

TEXT_MODES = {0: "none", 1: "caption", 2: "residual", 3: "residual+pfo"}

OVR_STEPS, OVR_GUIDANCE, OVR_SEED, OVR_LEVEL = 0x1, 0x2, 0x4, 0x8
GUIDANCE_SCALE = 100  # guidance is stored as round(guidance * 100)
MAX_STEPS = 999  # N_r is at most 999 (RatePointConfig.residual_steps), so S never needs more
MAX_GUIDANCE = 100

# Every header field's range, the writer's and the reader's alike: ``pack`` refuses a value
# outside it (ValueError) and ``unpack`` a file holding one (BitstreamError), so nothing is
# written that cannot be read back. The CLI checks its options against these before any work.
FIELD_RANGES = {
    "width": (1, MAX_SIDE),
    "height": (1, MAX_SIDE),
    "text_mode": (0, max(TEXT_MODES)),
    "steps": (1, MAX_STEPS),
    "guidance": (0, MAX_GUIDANCE),
    "seed": (0, MAX_SEED),
    "level": (0, RATE_LEVELS),
}
MAX_VARINT_BYTES = 5  # 35 bits: more than any bounded field needs (the text length is ≤ the file)



@dataclass(frozen=True)
class Header:
    fingerprint: bytes
    width: int
    height: int
    text_mode: int = 0
    # Decoder settings that differ from the ones the model's rate point implies (None = implied).
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    level: int | None = None  # a variable-rate model's rate level (None = the model's default)

    def as_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint.hex(),
            "width": self.width,
            "height": self.height,
            "text_mode": TEXT_MODES[self.text_mode],
            "steps": self.steps,
            "guidance": self.guidance,
            "seed": self.seed,
            "level": self.level,
        }


@dataclass(frozen=True)
class Container:
    header: Header
    text: bytes
    latent: bytes


# -- varints (unsigned LEB128) --------------------------------------------------------------
def write_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_varint(data: bytes, pos: int, what: str, limit: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos >= len(data):
            raise BitstreamError(f"file is truncated (inside {what})")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise BitstreamError(f"malformed {what} (non-minimal varint)")
            if value > limit:
                raise BitstreamError(f"{what} = {value} is out of range (max {limit})")
            return value, pos
    raise BitstreamError(f"malformed {what} (varint too long)")


def _crc(data: bytes) -> bytes:
    return binascii.crc_hqx(data, 0xFFFF).to_bytes(2, "big")


# -- field checks ----------------------------------------------------------------------------
def check_field(name: str, value) -> int | float:
    """``value`` if header field ``name`` can hold it (FIELD_RANGES), else a one-line ValueError
    naming the field and its range. Integers only, except guidance: a finite number (the file
    stores its hundredths)."""
    low, high = FIELD_RANGES[name]
    if name == "guidance":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"guidance {value!r} is not a finite number in {low}..{high}")
        if not low <= value <= high:  # then its hundredths (what the file stores) are in range too
            raise ValueError(f"guidance {value:g} is outside {low}..{high}")
        return value
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # ints and numpy integers; never a float silently truncated
    except TypeError:
        raise ValueError(f"{name} {value!r} is not an integer in {low}..{high}") from None
    if not low <= number <= high:
        raise ValueError(f"{name} {number} is outside {low}..{high}")
    return number


def check_header(h: Header) -> None:
    """Refuse (ValueError, one line) a header the reader would not read back."""
    if not isinstance(h.fingerprint, (bytes, bytearray)) or len(h.fingerprint) != FINGERPRINT_BYTES:
        raise ValueError("fingerprint must be 4 bytes")
    if not (1 <= h.width <= MAX_SIDE and 1 <= h.height <= MAX_SIDE):
        raise ValueError(f"image size {h.width}x{h.height} is outside 1..{MAX_SIDE}")
    if h.text_mode not in TEXT_MODES:
        raise ValueError(f"unknown text mode {h.text_mode}")
    for name in ("width", "height", "steps", "guidance", "seed", "level"):
        if getattr(h, name) is not None:
            check_field(name, getattr(h, name))


# -- pack / unpack ---------------------------------------------------------------------------
def pack(container: Container) -> bytes:
    h = container.header
    check_header(h)
    if h.text_mode == 0 and container.text:
        raise ValueError("text given with text mode 'none'")
    if not container.latent:
        raise ValueError("empty latent stream")
    mask = (OVR_STEPS if h.steps is not None else 0) | (OVR_GUIDANCE if h.guidance is not None else 0) | (
        OVR_SEED if h.seed is not None else 0) | (OVR_LEVEL if h.level is not None else 0)
    flags = (FLAG_OVERRIDES if mask else 0) | (h.text_mode << TEXT_MODE_SHIFT)
    out = bytearray([MAGIC, (FORMAT_VERSION << 4) | flags])
    out += h.fingerprint
    out += write_varint(h.width) + write_varint(h.height)
    if mask:
        out += write_varint(mask)
        if h.steps is not None:
            out += write_varint(h.steps)
        if h.guidance is not None:
            out += write_varint(round(h.guidance * GUIDANCE_SCALE))
        if h.seed is not None:
            out += write_varint(h.seed)
        if h.level is not None:
            out += write_varint(h.level)
    if h.text_mode:
        out += write_varint(len(container.text)) + container.text
    out += container.latent
    return bytes(out + _crc(bytes(out)))


def unpack(data: bytes) -> Container:
    """Parse a file; anything that is not a well-formed ResULIC file raises BitstreamError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError("expected bytes")
    data = bytes(data)
    if len(data) == 0:
        raise BitstreamError("file is empty")
    if data[0] != MAGIC:
        raise BitstreamError("not a ResULIC file (bad magic byte)")
    min_len = 2 + FINGERPRINT_BYTES + 2 + 1 + CHECKSUM_BYTES
    if len(data) < min_len:
        raise BitstreamError(f"file is truncated ({len(data)} bytes)")
    version, flags = data[1] >> 4, data[1] & 0x0F
    if version != FORMAT_VERSION:
        raise BitstreamError(f"unsupported format version {version} (this build reads version {FORMAT_VERSION})")
    body, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
    if _crc(body) != checksum:
        raise BitstreamError("checksum mismatch: the file is corrupt or truncated")
    if flags & FLAG_RESERVED:
        raise BitstreamError("reserved flag set: the file was written by a newer or foreign encoder")
    pos = 2
    fingerprint = body[pos : pos + FINGERPRINT_BYTES]
    pos += FINGERPRINT_BYTES
    width, pos = read_varint(body, pos, "width", MAX_SIDE)
    height, pos = read_varint(body, pos, "height", MAX_SIDE)
    if width == 0 or height == 0:
        raise BitstreamError("image size is zero")
    steps = guidance = seed = level = None
    if flags & FLAG_OVERRIDES:
        mask, pos = read_varint(body, pos, "override mask", 0xF)
        if mask == 0:
            raise BitstreamError("override flag set without overrides")
        if mask & OVR_STEPS:
            steps, pos = read_varint(body, pos, "steps", MAX_STEPS)
            if steps == 0:
                raise BitstreamError("steps = 0")
        if mask & OVR_GUIDANCE:
            g, pos = read_varint(body, pos, "guidance", MAX_GUIDANCE * GUIDANCE_SCALE)
            guidance = g / GUIDANCE_SCALE
        if mask & OVR_SEED:
            seed, pos = read_varint(body, pos, "seed", MAX_SEED)
        if mask & OVR_LEVEL:
            level, pos = read_varint(body, pos, "rate level", RATE_LEVELS)
    text_mode = (flags & TEXT_MODE_MASK) >> TEXT_MODE_SHIFT
    text = b""
    if text_mode:
        length, pos = read_varint(body, pos, "text length", len(body))
        if pos + length > len(body):
            raise BitstreamError("file is truncated (inside the text section)")
        text, pos = body[pos : pos + length], pos + length
    latent = body[pos:]
    if not latent:
        raise BitstreamError("file is truncated (no latent stream)")
    header = Header(fingerprint, width, height, text_mode, steps, guidance, seed, level)
    return Container(header, text, latent)
