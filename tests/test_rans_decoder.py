"""The bounds-checked rANS decoder: CompressAI's symbols on CompressAI's streams, an error on anything else."""

import pytest
import torch
from compressai.ans import RansDecoder

from resulic.config import CompressorConfig
from resulic.errors import BitstreamError
from resulic.models.compressor import LatentCompressor
from resulic.entropy.rans_decoder import SafeRansDecoder
from resulic.entropy.rans_stream import SharedRansStream


class RecordingStream(SharedRansStream):
    """Keeps the arguments of every decode call, to replay them through both decoders."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def decode_with_indexes(self, token, indexes, cdfs, cdf_lengths, offsets):
        if self._encoder is None:
            self.calls.append((list(indexes), cdfs, list(cdf_lengths), list(offsets)))
        return super().decode_with_indexes(token, indexes, cdfs, cdf_lengths, offsets)


@pytest.fixture(scope="module")
def compressor():
    torch.manual_seed(0)
    c = LatentCompressor(CompressorConfig()).eval()
    c.update(force=True)
    c.stream = RecordingStream()
    c.stream.attach(c)
    return c


@pytest.fixture(scope="module")
def coded(compressor):
    """Streams at several latent scales; 200 puts many symbols in the escape (bypass) code."""
    out = []
    for scale, hw in [(0.5, (16, 16)), (3.0, (32, 48)), (200.0, (16, 32))]:
        z0 = torch.randn(1, 4, *hw, generator=torch.Generator().manual_seed(int(scale * 10))) * scale
        coded = compressor.compress(z0)
        compressor.stream.calls = []
        z_c = compressor.decompress(coded.data, hw)
        out.append((coded, hw, z_c, compressor.stream.calls))
    return out


def test_decodes_the_same_symbols_as_compressais_decoder(coded):
    escapes = 0
    for c, _, z_c, calls in coded:
        assert torch.equal(z_c, c.z_c)
        reference = RansDecoder()
        reference.set_stream(c.data)
        ours = SafeRansDecoder()
        ours.set_stream(c.data)
        for call in calls:
            expected = reference.decode_stream(*call)
            assert ours.decode_stream(*call) == expected
            indexes, _, lengths, offsets = call
            escapes += sum(v - offsets[i] >= lengths[i] - 2 or v < offsets[i] for i, v in zip(indexes, expected))
        ours.finish()
    assert escapes > 100  # the escape path was exercised, not only the table path


def _decode(compressor, data, hw):
    return compressor.decompress(data, hw)


@pytest.mark.parametrize("damage", ["truncate_word", "append_word", "append_byte", "one_byte", "ff_run", "zeros"])
def test_malformed_streams_raise_bitstream_error(compressor, coded, damage):
    c, hw, _, _ = coded[1]
    data = {
        "truncate_word": c.data[:-4],
        "append_word": c.data + b"\x00\x00\x00\x00",
        "append_byte": c.data + b"\x01",
        "one_byte": b"\x07",
        "ff_run": b"\xff" * 100_000,
        "zeros": bytes(len(c.data)),
    }[damage]
    with pytest.raises(BitstreamError, match="latent stream is corrupt"):
        _decode(compressor, data, hw)


def test_every_single_byte_change_is_refused_or_decodes_the_same_twice(compressor, coded):
    c, hw, _, _ = coded[0]
    refused = 0
    for pos in range(0, len(c.data), max(1, len(c.data) // 40)):
        data = bytearray(c.data)
        data[pos] ^= 0x5A
        results = []
        for _ in range(2):
            try:
                results.append(_decode(compressor, bytes(data), hw))
            except BitstreamError as exc:
                results.append(str(exc))
        if isinstance(results[0], str):
            refused += 1
            assert results[0] == results[1]
        else:
            assert torch.equal(results[0], results[1])
    assert refused > 0


def test_a_cdf_index_outside_the_tables_is_refused():
    decoder = SafeRansDecoder()
    decoder.set_stream((1 << 31).to_bytes(8, "little"))
    cdf = [0, 1 << 15, 1 << 16]
    with pytest.raises(BitstreamError, match="CDF index"):
        decoder.decode_stream([1], [cdf], [3], [0])


def test_the_stream_must_be_consumed_exactly():
    decoder = SafeRansDecoder()
    decoder.set_stream((1 << 31).to_bytes(8, "little") + b"\0\0\0\0")
    with pytest.raises(BitstreamError, match="4 bytes left"):
        decoder.finish()
