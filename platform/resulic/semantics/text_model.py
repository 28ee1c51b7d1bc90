"""The fixed probability model of the text coder: CLIP-BPE token trigrams with Witten-Bell backoff.

The model is part of the codec (RESULIC.md §0 item 2): the decoder has the same table, so
nothing but the message is transmitted. It was fitted once on the fit split of the Flickr2W
caption corpus — its captions and, as separate messages, their phrases (``residual.split_phrases``),
because a semantic residual is a few such phrases — (``python -m resulic.semantics.text_model
--fit CAPTIONS.jsonl --bpe BPE``) and ships in
the package as ``clip_trigram.npz``; its SHA-256 is pinned below, because a different table
decodes every existing file to different tokens (changing it needs a new format version).

Symbols are CLIP token ids 0..49407. ``<|endoftext|>`` (49407) ends a message;
``<|startoftext|>`` (49406) is only the context of the first token and is never coded.

    P3(s | a, b) = (c(a, b, s) + n(a, b) * P2(s | b)) / (C(a, b) + n(a, b))   (Witten-Bell)
    P2(s | b)    = (c(b, s) + n(b) * Pu(s)) / (C(b) + n(b))
    Pu(s)        = (c(s) + m / K) / (N + m)                                 (Witten-Bell to uniform)

with c the fit counts, C(h) = sum of c(h, .), n(h) the number of distinct successors of h (a
history never seen in the fit part uses the level below as it is),
N the number of fit tokens, m the number of distinct fit tokens and K the number of codable
symbols. Every symbol but the start token has a non-zero probability in every context, so any
token sequence can be coded (unknown tokens cost about log2 K ≈ 15.6 bits plus the backoff).
All probabilities are exact integer ratios (``freq / total``): encoder and decoder compute
bit-identical intervals on every machine.
"""

from __future__ import annotations

import bisect
import math
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ModelLoadError

VOCAB_SIZE = 49408
START_ID = 49406
END_ID = 49407  # also the end-of-message symbol
CODABLE = VOCAB_SIZE - 1  # every id but the start token

MODEL_FILE = Path(__file__).with_name("clip_trigram.npz")
# Pinned: a different table means different decoded tokens for every existing file.
MODEL_SHA256 = "935be8456da8ecfb13f91f0711250dcbe21edf6967f622e4af9a844cde22fba5"


@dataclass(frozen=True)
class _Context:
    successors: list[int]  # sorted token ids seen after this context
    prefix: list[int]  # prefix[i] = sum of counts of successors[:i]
    counts: list[int]
    total: int  # C(context)
    types: int  # n(context)


def _contexts(rows: np.ndarray, pruned: np.ndarray, k: int) -> dict[tuple[int, ...], _Context]:
    """Rows (k context ids..., next, count) sorted by context then next -> {context: _Context}."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, k + 2)
    extra = {tuple(int(v) for v in r[:k]): int(r[k]) for r in np.asarray(pruned, dtype=np.int64).reshape(-1, k + 1)}
    out: dict[tuple[int, ...], _Context] = {}
    if len(rows):
        keys = rows[:, :k]
        starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)])
        for a, b in zip(starts, list(starts[1:]) + [len(rows)]):
            context = tuple(int(v) for v in rows[a, :k])
            succ, cnt = rows[a:b, k].tolist(), rows[a:b, k + 1].tolist()
            prefix = [0] + np.cumsum(cnt).tolist()
            out[context] = _Context(succ, prefix, cnt, prefix[-1], len(succ) + extra.get(context, 0))
    return out


class TextModel:
    """Exact integer ``(cum, freq, total)`` of a symbol given the history, and the inverse lookup.

    Orders: unigram (Witten-Bell to uniform), then each n-gram level blends its counts with the
    level below, P_k(s | h) = (c_k(h, s) + n_k(h) P_{k-1}(s | h')) / (C_k(h) + n_k(h)); a history
    unseen at level k uses level k-1 as it is.
    """

    def __init__(self, unigram: np.ndarray, levels: list[tuple[np.ndarray, np.ndarray]], meta: dict) -> None:
        counts = np.asarray(unigram, dtype=np.int64)
        if counts.shape != (VOCAB_SIZE,) or counts[START_ID] != 0:
            raise ModelLoadError("text model: unigram table has the wrong shape")
        self.meta = meta
        n_tokens, n_types = int(counts.sum()), int((counts > 0).sum())
        weights = counts * CODABLE + n_types  # Pu scaled by K (N + m)
        weights[START_ID] = 0
        self.uni = [int(w) for w in weights]
        self.uni_cum = [0] + np.cumsum(weights).tolist()
        self.uni_total = self.uni_cum[-1]
        assert self.uni_total == (n_tokens + n_types) * CODABLE
        self.levels = [_contexts(rows, pruned, k) for k, (rows, pruned) in enumerate(levels, start=1)]
        self.order = 1 + len(self.levels)
        # The most any symbol can cost: its smallest unigram weight, escaped through the least
        # likely escape of every level (a seen symbol costs less than its escape; see interval).
        smallest = min(w for w in self.uni if w > 0)
        self.max_symbol_bits = math.log2(self.uni_total / smallest) + sum(
            max((math.log2((c.total + c.types) / c.types) for c in contexts.values()), default=0.0)
            for contexts in self.levels
        )

    def start(self) -> tuple[int, ...]:
        """The history before the first token."""
        return (START_ID,) * (self.order - 1)

    def interval(self, history: tuple[int, ...], s: int) -> tuple[int, int, int]:
        """(cum, freq, total) of symbol ``s`` after ``history`` (its last order-1 tokens)."""
        cum, freq, total = self.uni_cum[s], self.uni[s], self.uni_total
        for k, contexts in enumerate(self.levels, start=1):
            ctx = contexts.get(history[len(history) - k :])
            if ctx is None:
                continue
            i = bisect.bisect_left(ctx.successors, s)
            c = ctx.counts[i] if i < len(ctx.successors) and ctx.successors[i] == s else 0
            cum = ctx.prefix[i] * total + ctx.types * cum
            freq = c * total + ctx.types * freq
            total = (ctx.total + ctx.types) * total
        return cum, freq, total

    def total(self, history: tuple[int, ...]) -> int:
        return self.interval(history, 0)[2]

    def lookup(self, history: tuple[int, ...], target: int) -> int:
        """The symbol s with cum(s) <= target < cum(s) + freq(s) (binary search; cum is monotone)."""
        lo, hi = 0, VOCAB_SIZE - 1
        while lo < hi:  # largest s with cum(s) <= target
            mid = (lo + hi + 1) // 2
            if self.interval(history, mid)[0] <= target:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def advance(self, history: tuple[int, ...], s: int) -> tuple[int, ...]:
        return (*history, s)[1:] if history else history


def tokenize_corpus(tokenizer, captions: Iterable[str]) -> list[list[int]]:
    return [tokenizer(c, add_special_tokens=False).input_ids for c in captions]


def fit(sequences: list[list[int]], order: int = 3, min_count: int = 1) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Unigram counts and, for each n-gram level k = 1..order-1, rows (k context ids, next, count)
    with count >= min_count, and per context the number of distinct successors pruned away (they
    stay in the escape mass n(context))."""
    unigram = np.zeros(VOCAB_SIZE, dtype=np.int64)
    grams: list[dict[tuple[int, ...], int]] = [dict() for _ in range(order - 1)]
    for seq in sequences:
        symbols = [*seq, END_ID]
        np.add.at(unigram, symbols, 1)
        padded = [START_ID] * (order - 1) + symbols
        for i in range(order - 1, len(padded)):
            for k in range(1, order):
                key = tuple(padded[i - k : i + 1])
                grams[k - 1][key] = grams[k - 1].get(key, 0) + 1
    levels = []
    for k, table in enumerate(grams, start=1):
        kept = sorted((*key, c) for key, c in table.items() if c >= min_count)
        pruned: dict[tuple[int, ...], int] = {}
        for key, c in table.items():
            if c < min_count:
                pruned[key[:k]] = pruned.get(key[:k], 0) + 1
        levels.append((np.array(kept, dtype=np.int32).reshape(-1, k + 2),
                       np.array([(*key, n) for key, n in sorted(pruned.items())], dtype=np.int32).reshape(-1, k + 1)))
    return unigram.astype(np.int32), levels


def save(path: Path, unigram, levels, meta: dict) -> None:
    arrays = {"unigram": unigram, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    for k, (rows, pruned) in enumerate(levels, start=1):
        arrays[f"rows{k}"], arrays[f"pruned{k}"] = rows, pruned
    np.savez_compressed(path, **arrays)


def load(path: Path, expected_sha256: str | None) -> TextModel:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"text model {path}: cannot read ({exc})") from None
    digest = hashlib.sha256(raw).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise ModelLoadError(
            f"text model {path} has SHA-256 {digest[:16]}…, but this build pins {expected_sha256[:16]}…; "
            "a different table would decode files to different tokens"
        )
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        levels = [(z[f"rows{k}"], z[f"pruned{k}"]) for k in range(1, meta["order"])]
        return TextModel(z["unigram"], levels, meta)


@lru_cache(maxsize=1)
def default_model() -> TextModel:
    """The table every ResULIC codec of this format version uses."""
    return load(MODEL_FILE, MODEL_SHA256)


# -- fitting and the fit/measure split -----------------------------------------------------------
def is_measure_split(image_name: str) -> bool:
    """Deterministic 90/10 split of a caption corpus by the image's name."""
    return hashlib.sha256(image_name.encode()).digest()[0] % 10 == 0


def read_captions(path: str | Path) -> list[tuple[str, str]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                rows.append((row["image"], row["caption"]))
    return rows


def split_captions(path: str | Path) -> tuple[list[str], list[str]]:
    rows = read_captions(path)
    fit_part = [c for name, c in rows if not is_measure_split(name)]
    measure_part = [c for name, c in rows if is_measure_split(name)]
    return fit_part, measure_part


def main(argv: list[str] | None = None) -> None:
    import argparse

    from ..models.tokenizer import clip_tokenizer_from_bpe

    p = argparse.ArgumentParser(description="Fit the text coder's n-gram tables on the fit split.")
    p.add_argument("--fit", required=True, help="captions JSONL (image, caption)")
    p.add_argument("--bpe", required=True, help="CLIP BPE merges file (bpe_simple_vocab_16e6.txt.gz)")
    p.add_argument("--order", type=int, default=3, help="n-gram order (2: bigram, 3: trigram)")
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("--no-phrases", dest="phrases", action="store_false",
                   help="fit on whole captions only (default: also on each caption's phrases, which is what residuals look like)")
    p.add_argument("-o", "--output", default=str(MODEL_FILE))
    args = p.parse_args(argv)
    tokenizer = clip_tokenizer_from_bpe(args.bpe)
    fit_part, _ = split_captions(args.fit)
    sequences = tokenize_corpus(tokenizer, fit_part)
    if args.phrases:
        from .residual import split_phrases

        sequences += tokenize_corpus(tokenizer, [p for c in fit_part for p in split_phrases(c)])
    uni, levels = fit(sequences, args.order, args.min_count)
    meta = {"corpus": Path(args.fit).name, "fit_captions": len(fit_part), "order": args.order,
            "min_count": args.min_count, "phrases": args.phrases, "split": "sha256(image)[0] % 10 != 0"}
    save(Path(args.output), uni, levels, meta)
    digest = hashlib.sha256(Path(args.output).read_bytes()).hexdigest()
    sizes = ", ".join(f"{len(rows)} {k + 1}-grams" for k, (rows, _) in enumerate(levels, start=1))
    print(f"{args.output}: {Path(args.output).stat().st_size} bytes, {sizes}, sha256 {digest}")


if __name__ == "__main__":  # pragma: no cover
    main()
