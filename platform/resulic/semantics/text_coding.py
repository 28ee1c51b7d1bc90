"""Exact arithmetic coding of CLIP token ids with the fixed model in ``text_model``.

The coder is arithmetic coding carried out with Python's exact integers instead of a
fixed-width register: after k symbols the interval is ``[L / D, (L + R) / D)`` with
``D`` the product of the k totals. The message is the shortest byte string ``b`` (from a fixed
starting length) whose value ``int(b) / 256**len(b)``, read as a binary fraction followed by
zeros, lies inside the final interval. That is within one byte of -log2 P(message) bits — no
flush, no register bits, no carry handling — and captions of up to a few hundred tokens cost
microseconds of big-integer arithmetic.

End of the message: the end-of-text token coded with the model (its cost is measured in
``benchmarks/bench_text_coding.py``; it is cheaper than a token count). The container's
section length says how many bytes follow. The empty message is zero bytes; any other message
is at least one byte.

The decoder re-encodes what it decoded and requires the same bytes, so every byte string has at
most one meaning and corrupted sections are refused (``BitstreamError``) instead of decoding to
other tokens silently — except for the rare corruption that happens to be another valid code.
"""

from __future__ import annotations

import math
from typing import Sequence

from ..errors import BitstreamError, DecodeLimitError
from .text_model import CODABLE, END_ID, START_ID, VOCAB_SIZE, TextModel, default_model

MAX_DECODED_TOKENS = 4096  # a section that does not end by then is corrupt


def _check_ids(ids: Sequence[int]) -> list[int]:
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < START_ID]
    if bad:
        raise ValueError(f"token ids must be in 0..{START_ID - 1} (no special tokens), got {bad[:3]}")
    return ids


def _interval(model: TextModel, ids: list[int], end: bool) -> tuple[int, int, int]:
    low, width, denom = 0, 1, 1
    history = model.start()
    for s in [*ids, END_ID] if end else ids:
        cum, freq, total = model.interval(history, s)
        low, width, denom = low * total + width * cum, width * freq, denom * total
        history = model.advance(history, s)
    return low, width, denom


def _shortest_bytes(low: int, width: int, denom: int) -> bytes:
    """Shortest n (from a deterministic start) and m with m / 256^n in [low/denom, (low+width)/denom)."""
    info_bits = denom.bit_length() - width.bit_length()  # about -log2(width / denom)
    n = max(1, info_bits // 8 - 1)
    while True:
        scale = 1 << (8 * n)
        m = -((-low * scale) // denom)  # ceil(low * 256^n / denom)
        if m * denom < (low + width) * scale:
            return m.to_bytes(n, "big")
        n += 1


def encode_ids(ids: Sequence[int], model: TextModel | None = None, *, end_symbol: bool = True) -> bytes:
    """Code token ids (CLIP vocabulary, no start/end tokens). ``end_symbol=False`` leaves the
    end out (the caller must then transmit the count; used only to measure that alternative)."""
    ids = _check_ids(ids)
    if not ids:
        return b""
    return _shortest_bytes(*_interval(model or default_model(), ids, end_symbol))


def max_section_bytes(max_tokens: int, model: TextModel | None = None) -> int:
    """The longest section a message of ``max_tokens`` tokens (and its end symbol) can code to:
    every symbol at the model's highest cost, plus the code's one byte of slack."""
    model = model or default_model()
    return math.ceil((max_tokens + 1) * model.max_symbol_bits / 8) + 1


def decode_ids(
    data: bytes, model: TextModel | None = None, *, count: int | None = None, max_tokens: int | None = None
) -> list[int]:
    """Inverse of :func:`encode_ids`. ``count`` decodes that many tokens of a message coded
    without the end symbol. Anything that is not a valid code raises ``BitstreamError``; a
    message longer than ``max_tokens`` raises ``DecodeLimitError`` as soon as it is (a decode
    limit: each token costs arithmetic on numbers as long as the section)."""
    model = model or default_model()
    data = bytes(data)
    if max_tokens is not None and len(data) > max_section_bytes(max_tokens, model):
        # Refused before any arithmetic: decoding costs time in the section's length squared.
        raise DecodeLimitError(
            f"the text section holds more than {max_tokens} tokens: it is {len(data):,} bytes, and "
            f"{max_tokens} tokens never take more than {max_section_bytes(max_tokens, model):,}", "max_text_tokens"
        )
    if not data:
        if count:
            raise BitstreamError("text section is empty but tokens were expected")
        return []
    # value offset within the current interval as a fraction num / den:
    # num / den = (v - L/D) / (R/D), updated without keeping L, R, D themselves.
    num, den = int.from_bytes(data, "big"), 1 << (8 * len(data))
    limit = count if count is not None else MAX_DECODED_TOKENS
    ids: list[int] = []
    history = model.start()
    while True:
        if count is not None and len(ids) == count:
            break
        total = model.total(history)
        target = num * total // den
        s = model.lookup(history, target)
        cum, freq, _ = model.interval(history, s)
        if freq == 0 or not cum <= target < cum + freq:
            raise BitstreamError("text section is corrupt (value outside the model's range)")
        num, den = num * total - cum * den, den * freq
        if s == END_ID and count is None:
            break
        if s == END_ID or s == START_ID:
            raise BitstreamError("text section is corrupt (unexpected end token)")
        ids.append(s)
        history = model.advance(history, s)
        if max_tokens is not None and len(ids) > max_tokens:
            raise DecodeLimitError(
                f"the text section holds more than {max_tokens} tokens (or is corrupt)", "max_text_tokens"
            )
        if len(ids) > limit:
            raise BitstreamError(f"text section is corrupt (no end after {limit} tokens)")
    if encode_ids(ids, model, end_symbol=count is None) != data:
        raise BitstreamError("text section is corrupt (not the canonical code of its tokens)")
    return ids


def message_bits(ids: Sequence[int], model: TextModel | None = None, *, end_symbol: bool = True) -> float:
    """-log2 P(message) under the model: what an ideal coder would spend (for the benchmark)."""
    ids = _check_ids(ids)
    if not ids:
        return 0.0
    _, width, denom = _interval(model or default_model(), ids, end_symbol)
    return math.log2(denom) - math.log2(width)  # math.log2 takes integers of any size


__all__ = ["encode_ids", "decode_ids", "message_bits", "VOCAB_SIZE", "CODABLE", "MAX_DECODED_TOKENS"]
