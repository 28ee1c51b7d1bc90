"""The codec end to end with the tiny profile: real files, deterministic decoding."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resulic.codec import Codec, DecodeLimits, unpack
from resulic.config import ModelConfig, build_config
from resulic.errors import BitstreamError, DecodeLimitError, ModelMismatchError


def pixels(img):
    return np.asarray(img)


def test_round_trip_restores_the_size(codec, photo, encoded):
    out = codec.decompress(encoded.data)
    assert out.size == photo.size == (200, 150)
    assert out.mode == "RGB"


def test_bpp_is_the_file_size(encoded, photo):
    assert encoded.bpp == len(encoded.data) * 8 / (photo.size[0] * photo.size[1])
    assert encoded.latent_bytes + 12 == len(encoded.data)  # default header: 12 bytes


def test_decoding_twice_and_in_a_second_codec_gives_identical_pixels(codec, encoded):
    first = pixels(codec.decompress(encoded.data))
    assert np.array_equal(first, pixels(codec.decompress(encoded.data)))
    other = Codec.build()  # same seeds -> same model on any machine
    assert other.fingerprint == codec.fingerprint
    assert np.array_equal(first, pixels(other.decompress(encoded.data)))


def test_the_decoder_makes_two_network_evaluations_per_useful_step(codec, encoded):
    result = codec.decode(encoded.data)
    S = codec.config.rate_point.sampling_steps
    assert result.network_evaluations == 2 * (S - 1)  # CFG: two branches per call


def test_overrides_travel_in_the_header(codec, photo):
    r = codec.encode(photo, steps=4, guidance=1.0, seed=7, text="a cat on a sofa")
    c = unpack(r.data)
    assert (c.header.steps, c.header.guidance, c.header.seed) == (4, 1.0, 7)
    d = codec.decode(r.data)
    assert d.text == "a cat on a sofa"
    assert d.network_evaluations == 3  # S - 1 calls, one branch without guidance
    # settings equal to the rate point's cost nothing
    same = codec.encode(photo, steps=codec.config.rate_point.sampling_steps)
    assert unpack(same.data).header.steps is None


def test_a_different_seed_gives_a_different_image(codec, photo, encoded):
    other = codec.encode(photo, seed=1234)
    assert not np.array_equal(pixels(codec.decompress(other.data)), pixels(codec.decompress(encoded.data)))


def test_file_from_another_model_is_refused(encoded):
    config = build_config(ModelConfig, {}, ["rate_point.seed=7"])
    other = Codec.build(config)
    assert other.fingerprint != unpack(encoded.data).header.fingerprint
    with pytest.raises(ModelMismatchError, match="made by model"):
        other.decompress(encoded.data)


def test_invalid_settings_are_rejected(codec, photo):
    with pytest.raises(ValueError, match="steps"):
        codec.encode(photo, steps=10_000)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_damaged_files_only_raise_the_codecs_error(codec, encoded, data):
    blob = bytearray(encoded.data)
    kind = data.draw(st.sampled_from(["flip", "truncate", "random"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        blob = bytearray(data.draw(st.binary(max_size=len(blob))))
    with pytest.raises(BitstreamError):
        codec.decompress(bytes(blob))


def test_the_fingerprint_does_not_drift_with_use(codec, encoded):
    codec.decode(encoded.data)
    assert codec._fingerprints(codec.backbone.identity) == [codec.fingerprint]


def test_a_huge_claimed_size_is_refused_before_decoding(codec):
    from resulic.codec import Container, Header, pack

    blob = pack(Container(Header(codec.fingerprint, 60000, 60000), b"", b"\x00" * 8))
    with pytest.raises(DecodeLimitError, match="over the limit of 16,000,000; raise the limit with DecodeLimits"):
        codec.decompress(blob)
    small = DecodeLimits(max_pixels=128 * 256)  # counted after padding: 129 x 100 decodes 256 x 128
    blob = pack(Container(Header(codec.fingerprint, 129, 100), b"", b"\x00" * 8))
    with pytest.raises(DecodeLimitError, match="256x128 = 32,768") as refused:
        codec.decompress(blob, limits=DecodeLimits(max_pixels=128 * 256 - 1))
    assert refused.value.limit == "max_pixels"
    with pytest.raises(BitstreamError, match="latent stream is corrupt"):  # within the limit: decoded, then refused
        codec.decompress(blob, limits=small)


def test_steps_guidance_and_text_are_bounded_by_the_limits(codec, photo):
    S = codec.config.rate_point.sampling_steps
    many_steps = codec.encode(photo, steps=4 * S + 1)
    with pytest.raises(DecodeLimitError, match=f"asks for {4 * S + 1} diffusion steps, over the limit of {4 * S}"):
        codec.decode(many_steps.data)
    assert codec.decode(many_steps.data, limits=DecodeLimits(max_steps=4 * S + 1)).image.size == photo.size
    strong = codec.encode(photo, guidance=25.0)
    with pytest.raises(DecodeLimitError, match="guidance 25") as refused:
        codec.decode(strong.data)
    assert refused.value.limit == "max_guidance"
    worded = codec.encode(photo, text="a red barn by a pond under a grey sky")
    assert len(worded.text_tokens) > 3
    with pytest.raises(DecodeLimitError, match="more than 3 tokens") as refused:
        codec.decode(worded.data, limits=DecodeLimits(max_text_tokens=3))
    assert refused.value.limit == "max_text_tokens"



def test_an_encode_without_srr_or_pfo_never_synthesises_z_c(codec, photo, monkeypatch):
    """z_c (the decoder's latent) is computed on first use: a plain encode writes its file without
    running the compressor's synthesis (at 4K its native convolutions were the encode's peak
    memory); srr, which pictures z_c to caption it, still gets it."""
    from resulic.codec.container import unpack

    plain = codec.compress(photo)
    calls = []
    real = type(codec.compressor)._synthesis

    def counted(self, *args):
        calls.append(1)
        return real(self, *args)

    monkeypatch.setattr(type(codec.compressor), "_synthesis", counted)
    assert codec.compress(photo) == plain and calls == []
    coded = codec.compressor.compress(codec.latent_of(photo))
    assert calls == [] and torch.equal(coded.z_c, coded.z_c) and calls == [1]  # once, then kept
    assert unpack(plain).latent == coded.data
