"""Batched decoding (the Serve batching path, off by default): every file gets its single decode's
pixels up to rounding. On CPU a batch changes the kernels' summation order, and about 0.03 % of
the 8-bit values move by one level; that is why Serve does not batch unless asked (serving.md)."""

import numpy as np

from resulic.codec.batch import decode_batch
from resulic.errors import BitstreamError


def test_batch_matches_single_decodes(codec, photo):
    other = photo.transpose(0)  # mirrored: another image of the same size
    small = photo.crop((0, 0, 64, 48))
    files = [codec.encode(photo).data, codec.encode(other, text="a cat").data, codec.encode(small).data, b"junk"]
    results = decode_batch(codec, files)
    for data, result in zip(files[:3], results[:3]):
        batched = np.asarray(result.image).astype(int)
        single = np.asarray(codec.decode(data).image).astype(int)
        assert np.abs(batched - single).max() <= 1 and (batched != single).mean() < 0.01
    assert isinstance(results[3], BitstreamError)
