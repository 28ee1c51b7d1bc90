"""A rANS decoder that reads CompressAI's streams exactly and is safe on any input.

CompressAI's C++ ``RansDecoder`` never checks the end of its input: a crafted stream (e.g. a
long run of ``0xFF``, which keeps its escape-coding loop asking for more bits) reads past the
end of the buffer into whatever memory follows — different pixels on every run, or SIGSEGV.
This decoder mirrors its arithmetic step by step (64-bit rANS, 16-bit precision, 4-bit bypass
escape for values outside a table's range; ``compressai/cpp_exts/rans/rans_interface.cpp``), so
every stream CompressAI's ``BufferedRansEncoder`` writes decodes to the same symbols, but:

* every read is bounds-checked: a stream that runs out raises ``BitstreamError``;
* an escape longer than the encoder can write (more than 8 nibbles, a value over 31 bits) is
  refused instead of shifting bits into undefined behaviour;
* a CDF index outside the model's tables is refused;
* ``finish()`` requires the stream to be consumed exactly as written: every word read and the
  state back at the encoder's initial value. rANS decoding retraces the encoder's states in
  reverse, so a well-formed stream always ends there, and trailing or altered bytes almost
  always do not.

It is pure Python: memory-safe by construction, and decode cost is bounded by the number of
symbols the header implies (measured in docs/security.md).
"""

from __future__ import annotations

from bisect import bisect_right

from ..errors import BitstreamError

PRECISION = 16  # CompressAI's entropy_coder_precision
BYPASS_PRECISION = 4
MAX_BYPASS_VAL = (1 << BYPASS_PRECISION) - 1
MAX_BYPASS_NIBBLES = 8  # the encoder escapes an int32: at most 32 bits
RANS64_L = 1 << 31  # lower bound of the normalised state; also the encoder's initial state
WORD_BYTES = 4


class SafeRansDecoder:
    """Drop-in for ``compressai.ans.RansDecoder`` (``set_stream`` / ``decode_stream``) plus ``finish``."""

    def __init__(self) -> None:
        self._words: list[int] = []
        self._pos = 0
        self._state = 0

    def set_stream(self, data: bytes) -> None:
        data = bytes(data)
        if len(data) < 2 * WORD_BYTES or len(data) % WORD_BYTES:
            raise BitstreamError(
                f"latent stream is corrupt ({len(data)} bytes; a rANS stream is a whole number of "
                f"4-byte words, at least 2)"
            )
        self._words = list(memoryview(data).cast("I")) if _LITTLE_ENDIAN else _words_le(data)
        self._state = self._words[0] | (self._words[1] << 32)
        self._pos = 2

    def decode_stream(self, indexes, cdfs, cdf_lengths, offsets) -> list[int]:
        words, n_words = self._words, len(self._words)
        pos, x = self._pos, self._state
        mask = (1 << PRECISION) - 1
        n_tables = len(cdfs)
        if not (len(cdf_lengths) == len(offsets) == n_tables):
            raise BitstreamError("entropy model tables are inconsistent")
        out = [0] * len(indexes)
        for i, idx in enumerate(indexes):
            if not 0 <= idx < n_tables:
                raise BitstreamError(f"latent stream is corrupt (CDF index {idx} outside 0..{n_tables - 1})")
            cdf = cdfs[idx]
            size = cdf_lengths[idx]
            max_value = size - 2
            cum = x & mask
            s = bisect_right(cdf, cum, 0, size) - 1
            if not 0 <= s <= max_value:
                raise BitstreamError("latent stream is corrupt (symbol outside its table)")
            start = cdf[s]
            x = (cdf[s + 1] - start) * (x >> PRECISION) + cum - start
            if x < RANS64_L:
                if pos >= n_words:
                    raise BitstreamError("latent stream is corrupt (it ends before its last symbol)")
                x = (x << 32) | words[pos]
                pos += 1
            value = s
            if value == max_value:  # escape: the value follows in 4-bit pieces
                self._pos, self._state = pos, x
                value = self._bypass_value(max_value)
                pos, x = self._pos, self._state
            out[i] = value + offsets[idx]
        self._pos, self._state = pos, x
        return out

    def _get_bits(self) -> int:
        x = self._state
        val = x & MAX_BYPASS_VAL
        x >>= BYPASS_PRECISION
        if x < RANS64_L:
            if self._pos >= len(self._words):
                raise BitstreamError("latent stream is corrupt (it ends inside an escaped value)")
            x = (x << 32) | self._words[self._pos]
            self._pos += 1
        self._state = x
        return val

    def _bypass_value(self, max_value: int) -> int:
        val = self._get_bits()
        n_bypass = val
        while val == MAX_BYPASS_VAL:
            val = self._get_bits()
            n_bypass += val
            if n_bypass > MAX_BYPASS_NIBBLES:
                break
        if n_bypass > MAX_BYPASS_NIBBLES:
            raise BitstreamError("latent stream is corrupt (an escaped value longer than 32 bits)")
        raw = 0
        for j in range(n_bypass):
            raw |= self._get_bits() << (j * BYPASS_PRECISION)
        if raw >= 1 << 31:  # the encoder escapes a non-negative int32
            raise BitstreamError("latent stream is corrupt (an escaped value out of range)")
        value = raw >> 1
        return -value - 1 if raw & 1 else value + max_value

    def finish(self) -> None:
        """Require that the symbols decoded so far consumed the stream exactly as written."""
        if self._pos != len(self._words):
            unread = (len(self._words) - self._pos) * WORD_BYTES
            raise BitstreamError(f"latent stream is corrupt ({unread} bytes left after the last symbol)")
        if self._state != RANS64_L:
            raise BitstreamError("latent stream is corrupt (the coder's final state is not the encoder's start)")


def _words_le(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + WORD_BYTES], "little") for i in range(0, len(data), WORD_BYTES)]


_LITTLE_ENDIAN = memoryview(b"\x01\x00\x00\x00").cast("I")[0] == 1
