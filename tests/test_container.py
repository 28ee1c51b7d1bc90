"""The file format: every field round-trips; damaged or foreign data only raises BitstreamError."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resulic.codec.container import Container, Header, pack, read_varint, unpack, write_varint
from resulic.errors import BitstreamError

headers = st.builds(
    Header,
    fingerprint=st.binary(min_size=4, max_size=4),
    width=st.integers(1, 1 << 16),
    height=st.integers(1, 1 << 16),
    text_mode=st.integers(0, 3),
    steps=st.none() | st.integers(1, 999),
    guidance=st.none() | st.integers(0, 10000).map(lambda g: g / 100),
    seed=st.none() | st.integers(0, 2**32 - 1),
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
