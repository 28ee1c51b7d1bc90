"""The text coder: exact round trips, the empty and very long message, corrupt sections refused."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resulic.codec.container import Container, Header, pack
from resulic.errors import BitstreamError, ModelLoadError
from resulic.semantics import text_model
from resulic.semantics.text_coding import decode_ids, encode_ids, message_bits

from .conftest import shared_path


@pytest.fixture(scope="module")
def clip_tokenizer():
    from resulic.models.tokenizer import clip_tokenizer_from_bpe

    return clip_tokenizer_from_bpe(shared_path("vocab", "bpe_simple_vocab_16e6.txt.gz"))


def test_every_caption_of_the_measuring_split_round_trips(clip_tokenizer):
    _, measure = text_model.split_captions(shared_path("datasets", "captions", "flickr2w_captions.jsonl"))
    assert len(measure) > 1000
    total_bytes = total_tokens = 0
    for caption in measure:
        ids = clip_tokenizer(caption, add_special_tokens=False).input_ids
        data = encode_ids(ids)
        assert decode_ids(data) == ids
        total_bytes, total_tokens = total_bytes + len(data), total_tokens + len(ids)
    assert 8 * total_bytes / total_tokens <= 10  # the target, every section byte counted


def test_empty_message_is_zero_bytes_and_anything_else_is_not():
    assert encode_ids([]) == b"" and decode_ids(b"") == []
    assert len(encode_ids([320])) >= 1


def test_very_long_and_unusual_token_sequences_round_trip():
    rng = random.Random(0)
    long_ids = [rng.randrange(0, text_model.START_ID) for _ in range(1500)]  # mostly unseen bigrams
    data = encode_ids(long_ids)
    assert decode_ids(data) == long_ids
    assert len(data) * 8 / len(long_ids) < 24  # rare tokens cost about log2(49407) + backoff
    byte_tokens = list(range(512))  # the tiny profile's vocabulary
    assert decode_ids(encode_ids(byte_tokens)) == byte_tokens


def test_code_length_is_within_about_a_byte_of_the_information():
    ids = [320, 2368, 525, 320, 15723, 269]
    bits = message_bits(ids)
    # a grid point can fall in the interval a byte early, never much later
    assert bits / 8 - 1 <= len(encode_ids(ids)) <= bits / 8 + 2


@pytest.mark.parametrize("bad", [[-1], [49406], [49407], [10**6]])
def test_special_or_out_of_range_ids_are_refused(bad):
    with pytest.raises(ValueError):
        encode_ids([1, *bad])


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_arbitrary_bytes_either_decode_canonically_or_raise_bitstream_error(blob):
    try:
        ids = decode_ids(blob)
    except BitstreamError:
        return
    assert encode_ids(ids) == blob  # only the one code of its tokens is accepted


def test_damaged_sections_are_refused():
    ids = [320, 2368, 525, 320, 15723, 269, 320, 1929, 530]
    data = encode_ids(ids)
    refused = 0
    for i in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[i] ^= flip
            try:
                assert decode_ids(bytes(damaged)) != ids
            except BitstreamError:
                refused += 1
    for damaged in (data[:-1], data + b"\x00", data + b"\x57"):
        with pytest.raises(BitstreamError):
            decode_ids(damaged)
    assert refused > 0


def test_a_file_with_a_corrupt_text_section_raises_bitstream_error(codec, encoded):
    from resulic.codec.container import unpack

    c = unpack(encoded.data)
    header = Header(c.header.fingerprint, c.header.width, c.header.height, text_mode=1)
    for junk in (b"\xff" * 5, b"\x00", encode_ids([320, 2368]) + b"\x01"):
        with pytest.raises(BitstreamError):
            codec.decode(pack(Container(header, junk, c.latent)))


def test_the_model_file_is_pinned(tmp_path):
    copy = tmp_path / "model.npz"
    copy.write_bytes(text_model.MODEL_FILE.read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match="pins"):
        text_model.load(copy, text_model.MODEL_SHA256)
    assert text_model.default_model().meta["order"] == 3


def test_split_is_deterministic_and_about_a_tenth():
    names = [f"img{i}.jpg" for i in range(2000)]
    share = sum(map(text_model.is_measure_split, names)) / len(names)
    assert 0.07 < share < 0.13
    assert [text_model.is_measure_split(n) for n in names] == [text_model.is_measure_split(n) for n in names]


def test_the_section_bound_holds_for_the_costliest_messages_and_refuses_longer_sections_at_once():
    from resulic.errors import DecodeLimitError
    from resulic.semantics.text_coding import max_section_bytes

    # The rarest tokens after one another (the costliest messages there are) fit the bound...
    model = text_model.default_model()
    rarest = sorted(range(text_model.START_ID), key=lambda s: model.uni[s])[:20]
    for n in (1, 10, 75):
        ids = [rarest[i % len(rarest)] for i in range(n)]
        assert len(encode_ids(ids)) <= max_section_bytes(n)
        assert decode_ids(encode_ids(ids), max_tokens=n) == ids
    # ...and a section past it is refused before any arithmetic (a 50 MB one decoded for ~50 s).
    with pytest.raises(DecodeLimitError, match="never take more than"):
        decode_ids(bytes(50 << 20), max_tokens=75)
    assert max_section_bytes(75) < 1000
