"""One rANS stream for every entropy model of a codec.

CompressAI's entropy models each open their own rANS coder per call, so an ELIC-style codec
with 5 channel groups x 2 checkerboard halves plus the hyper-latent writes 11 strings, each
with its own 8-byte flush and a length to store. At ultra-low rates (≈140 bytes per Kodak
image) that is most of the file. CompressAI models call their coder through the
``entropy_coder`` attribute (``encode_with_indexes`` / ``decode_with_indexes``); this class
takes that place and sends every call into one buffered rANS stream, in the order the latent
codecs already visit the groups. The entropy models, their tables and the traversal stay
CompressAI's; so does the encoder. Decoding uses ``SafeRansDecoder`` (``rans_decoder``), which
reads the same streams but never past their end, and requires each stream to be consumed
exactly as the encoder wrote it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from torch import nn

from .compressai_parts import BufferedRansEncoder, EntropyModel
from .rans_decoder import SafeRansDecoder


class SharedRansStream:
    """Stand-in for ``EntropyModel.entropy_coder`` that writes to / reads from one stream."""

    name = "ans"  # what EntropyModel.__getstate__ records

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._encoder: BufferedRansEncoder | None = None
        self._decoder: SafeRansDecoder | None = None
        self._symbols: list[list[int]] = []

    def attach(self, module: nn.Module) -> None:
        for sub in module.modules():
            if isinstance(sub, EntropyModel):
                sub.entropy_coder = self

    # -- the interface CompressAI's EntropyModel calls ---------------------------------------
    def encode_with_indexes(self, symbols, indexes, cdfs, cdf_lengths, offsets) -> int:
        if self._encoder is None:
            raise RuntimeError("encode_with_indexes outside SharedRansStream.encoding()")
        self._encoder.encode_with_indexes(symbols, indexes, cdfs, cdf_lengths, offsets)
        self._symbols.append(list(symbols))
        return len(self._symbols) - 1  # a token in place of a byte string

    def decode_with_indexes(self, token, indexes, cdfs, cdf_lengths, offsets) -> list[int]:
        if self._encoder is not None:
            # While encoding, the latent codecs "decode" what they just coded to get y_hat:
            # hand back the symbols instead of reading a stream that does not exist yet.
            return self._symbols[token]
        if self._decoder is None:
            raise RuntimeError("decode_with_indexes outside SharedRansStream.decoding()")
        return self._decoder.decode_stream(indexes, cdfs, cdf_lengths, offsets)

    # -- sessions ----------------------------------------------------------------------------
    @contextmanager
    def encoding(self) -> Iterator["_EncodeResult"]:
        with self._lock:
            self._encoder, self._symbols = BufferedRansEncoder(), []
            result = _EncodeResult()
            try:
                yield result
                result.data = self._encoder.flush()
            finally:
                self._encoder, self._symbols = None, []

    @contextmanager
    def decoding(self, data: bytes) -> Iterator[None]:
        with self._lock:
            self._decoder = SafeRansDecoder()
            try:
                self._decoder.set_stream(data)
                yield
                self._decoder.finish()  # every byte read, the state back where the encoder began
            finally:
                self._decoder = None


class _EncodeResult:
    data: bytes = b""
