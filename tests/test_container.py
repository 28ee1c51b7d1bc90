"""The file format: every field round-trips; damaged or foreign data only raises BitstreamError."""

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resulic.codec.container import (
    FIELD_RANGES, GUIDANCE_SCALE, Container, Header, pack, read_varint, unpack, write_varint,
)
from resulic.errors import BitstreamError


def _in_range(name):
    low, high = FIELD_RANGES[name]
    if name == "guidance":
        return st.integers(low * GUIDANCE_SCALE, high * GUIDANCE_SCALE).map(lambda g: g / GUIDANCE_SCALE)
    # the ends of every range are drawn often: that is where the writer and the reader disagreed
    return st.sampled_from([low, high]) | st.integers(low, high)


headers = st.builds(
    Header,
    fingerprint=st.binary(min_size=4, max_size=4),
    width=_in_range("width"),
    height=_in_range("height"),
    text_mode=_in_range("text_mode"),
    steps=st.none() | _in_range("steps"),
    guidance=st.none() | _in_range("guidance"),
    seed=st.none() | _in_range("seed"),
    level=st.none() | _in_range("level"),
)


@st.composite
def containers(draw):
    header = draw(headers)
    text = draw(st.binary(max_size=300)) if header.text_mode else b""
    return Container(header, text, draw(st.binary(min_size=1, max_size=400)))


@given(st.integers(0, 2**35 - 1))
def test_varint_round_trip(value):
    data = write_varint(value)
    assert read_varint(data, 0, "v", 2**35) == (value, len(data))


@given(containers())
def test_every_field_round_trips(container):
    assert unpack(pack(container)) == container


def test_the_ranges_are_the_readers():
    """FIELD_RANGES is what the file holds: the documented 32-bit seed, S up to N_r's 999, ..."""
    assert FIELD_RANGES["seed"] == (0, 2**32 - 1) and FIELD_RANGES["steps"] == (1, 999)
    assert FIELD_RANGES["width"] == (1, 1 << 16) and FIELD_RANGES["level"] == (0, 127)


# Any integer a caller might pass, far past every range and below zero (the seed 2^40).
wide_ints = st.integers(-(2**70), 2**70) | st.sampled_from([-1, 0, 2**32, 2**35, 2**40, 1 << 16 + 1, 1000, 128])


@settings(max_examples=600)
@given(headers, st.sampled_from(["width", "height", "text_mode", "steps", "seed", "level"]), wide_ints)
def test_every_value_the_writer_accepts_the_reader_reads_back(header, name, value):
    """The issue's silent data loss: pack() wrote seeds that unpack() refused. Now every field
    value either fails pack() with a one-line ValueError or round-trips exactly."""
    header = dataclasses.replace(header, **{name: value})
    container = Container(header, b"\x01" if header.text_mode else b"", b"\x00\x01")
    try:
        data = pack(container)
    except ValueError as exc:
        low, high = FIELD_RANGES[name]
        assert not low <= value <= high and "\n" not in str(exc)
        return
    assert unpack(data) == container


@settings(max_examples=300)
@given(headers, st.floats(allow_nan=True, allow_infinity=True) | st.floats(-1, 101))
def test_every_guidance_the_writer_accepts_the_reader_reads_back(header, guidance):
    container = Container(dataclasses.replace(header, guidance=guidance), b"", b"\x00")
    container = Container(dataclasses.replace(container.header, text_mode=0), b"", b"\x00")
    try:
        data = pack(container)
    except ValueError as exc:
        assert "\n" not in str(exc)
        assert not (math.isfinite(guidance) and 0 <= guidance <= 100)
        return
    assert unpack(data).header.guidance == round(guidance * GUIDANCE_SCALE) / GUIDANCE_SCALE


@pytest.mark.parametrize("value", [True, 1.5, "3", None.__class__])
def test_non_integers_are_refused_not_truncated(value):
    with pytest.raises(ValueError, match="not an integer"):
        pack(Container(Header(b"\x00" * 4, 8, 8, seed=value), b"", b"\x00"))


def test_default_header_is_twelve_bytes():
    c = Container(Header(b"\x01\x02\x03\x04", 768, 512), b"", b"\x00" * 100)
    assert len(pack(c)) == 100 + 12  # magic, version/flags, 4 fingerprint, 2+2 size, 2 CRC


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(containers(), st.data())
def test_mutated_truncated_or_extended_files_raise_bitstream_error(container, data):
    good = bytearray(pack(container))
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(good) - 1))
        good[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        good = good[: data.draw(st.integers(0, len(good) - 1))]
    elif kind == "extend":
        good += data.draw(st.binary(min_size=1, max_size=8))
    else:
        i = data.draw(st.integers(0, len(good)))
        good[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        out = unpack(bytes(good))
    except BitstreamError:
        return
    # a 16-bit CRC lets through 1 in 65536 damaged files; then parsing must still be sane
    assert out.latent and 1 <= out.header.width <= 1 << 16


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_raise_bitstream_error(blob):
    try:
        unpack(blob)
    except BitstreamError:
        pass


@pytest.mark.parametrize(
    "blob,message",
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not a ResULIC file"),
        (bytes([0xC5, 0xF0]) + b"\x00" * 20, "version"),
        (bytes([0xC5, 0x20, 1, 2]), "truncated"),
    ],
)
def test_clear_messages(blob, message):
    with pytest.raises(BitstreamError, match=message):
        unpack(blob)


def test_header_as_dict_names_the_text_mode():
    h = Header(b"\x00" * 4, 10, 20, text_mode=2, steps=4)
    assert h.as_dict()["text_mode"] == "residual" and h.as_dict()["steps"] == 4
