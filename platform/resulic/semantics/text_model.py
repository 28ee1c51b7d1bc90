"""The fixed probability model of the text coder: CLIP-BPE token bigrams with Witten-Bell backoff.

The model is part of the codec (RESULIC.md §0 item 2): the decoder has the same table, so
nothing but the message is transmitted. It was fitted once on the fit split of the Flickr2W
caption corpus (``python -m resulic.semantics.text_model --fit CAPTIONS.jsonl``) and ships in
the package as ``clip_bigram.npz``; its SHA-256 is pinned below, because a different table
decodes every existing file to different tokens (changing it needs a new format version).

Symbols are CLIP token ids 0..49407. ``<|endoftext|>`` (49407) ends a message;
``<|startoftext|>`` (49406) is only the context of the first token and is never coded.

    P(s | prev) = (c(prev, s) + n(prev) * Pu(s)) / (C(prev) + n(prev))   (Witten-Bell)
    Pu(s)       = (c(s) + m / K) / (N + m)                               (Witten-Bell to uniform)

with c the fit counts, C(prev) = sum of c(prev, .), n(prev) the number of distinct successors,
N the number of fit tokens, m the number of distinct fit tokens and K the number of codable
symbols. Every symbol but the start token has a non-zero probability in every context, so any
token sequence can be coded (unknown tokens cost about log2 K ≈ 15.6 bits plus the backoff).
All probabilities are exact integer ratios (``freq / total``): encoder and decoder compute
bit-identical intervals on every machine.
"""

from __future__ import annotations

import bisect
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

MODEL_FILE = Path(__file__).with_name("clip_bigram.npz")
# Pinned: a different table means different decoded tokens for every existing file.
MODEL_SHA256 = "e830ce18efdc7c79e77f1e13e580dedba745ebc38d91ac56b320050f21a939ba"


@dataclass(frozen=True)
class _Context:
    successors: list[int]  # sorted token ids seen after this context
    prefix: list[int]  # prefix[i] = sum of counts of successors[:i]
    counts: list[int]
    total: int  # C(prev)
    types: int  # n(prev)


class TextModel:
    """Exact integer frequencies ``freq(s | prev)``, cumulative ``cum(s | prev)`` and lookup."""

    def __init__(self, unigram: np.ndarray, bigram: np.ndarray, pruned_types: np.ndarray, meta: dict) -> None:
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
        self.contexts: dict[int, _Context] = {}
        pruned = {int(p): int(n) for p, n in pruned_types}
        bigram = np.asarray(bigram, dtype=np.int64).reshape(-1, 3)
        if len(bigram):
            starts = np.flatnonzero(np.r_[True, bigram[1:, 0] != bigram[:-1, 0]])
            for a, b in zip(starts, list(starts[1:]) + [len(bigram)]):
                prev = int(bigram[a, 0])
                succ, cnt = bigram[a:b, 1].tolist(), bigram[a:b, 2].tolist()
                prefix = [0] + np.cumsum(cnt).tolist()
                self.contexts[prev] = _Context(succ, prefix, cnt, prefix[-1], len(succ) + pruned.get(prev, 0))

    # -- the distribution of one step ------------------------------------------------------------
    def total(self, prev: int) -> int:
        ctx = self.contexts.get(prev)
        return self.uni_total if ctx is None else (ctx.total + ctx.types) * self.uni_total

    def interval(self, prev: int, s: int) -> tuple[int, int]:
        """(cum, freq) of symbol ``s`` after ``prev``."""
        ctx = self.contexts.get(prev)
        if ctx is None:
            return self.uni_cum[s], self.uni[s]
        i = bisect.bisect_left(ctx.successors, s)
        c = ctx.counts[i] if i < len(ctx.successors) and ctx.successors[i] == s else 0
        cum = ctx.prefix[i] * self.uni_total + ctx.types * self.uni_cum[s]
        return cum, c * self.uni_total + ctx.types * self.uni[s]

    def lookup(self, prev: int, target: int) -> int:
        """The symbol s with cum(s) <= target < cum(s) + freq(s) (binary search; cum is monotone)."""
        lo, hi = 0, VOCAB_SIZE - 1
        while lo < hi:  # largest s with cum(s) <= target
            mid = (lo + hi + 1) // 2
            if self.interval(prev, mid)[0] <= target:
                lo = mid
            else:
                hi = mid - 1
        return lo


def tokenize_corpus(tokenizer, captions: Iterable[str]) -> list[list[int]]:
    return [tokenizer(c, add_special_tokens=False).input_ids for c in captions]


def fit(sequences: list[list[int]], min_count: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unigram counts, bigram (prev, next, count) rows with count >= min_count, and per context
    the number of distinct successors pruned away (they stay in the escape mass n(prev))."""
    unigram = np.zeros(VOCAB_SIZE, dtype=np.int64)
    pairs: dict[tuple[int, int], int] = {}
    for seq in sequences:
        symbols = [*seq, END_ID]
        np.add.at(unigram, symbols, 1)
        for prev, nxt in zip([START_ID, *seq], symbols):
            pairs[prev, nxt] = pairs.get((prev, nxt), 0) + 1
    kept = sorted((p, n, c) for (p, n), c in pairs.items() if c >= min_count)
    pruned: dict[int, int] = {}
    for (p, _), c in pairs.items():
        if c < min_count:
            pruned[p] = pruned.get(p, 0) + 1
    bigram = np.array(kept, dtype=np.int32).reshape(-1, 3)
    return unigram.astype(np.int32), bigram, np.array(sorted(pruned.items()), dtype=np.int32).reshape(-1, 2)


def save(path: Path, unigram, bigram, pruned, meta: dict) -> None:
    np.savez_compressed(path, unigram=unigram, bigram=bigram, pruned=pruned, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))


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
        return TextModel(z["unigram"], z["bigram"], z["pruned"], meta)


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

    p = argparse.ArgumentParser(description="Fit the text coder's bigram table on the fit split.")
    p.add_argument("--fit", required=True, help="captions JSONL (image, caption)")
    p.add_argument("--bpe", required=True, help="CLIP BPE merges file (bpe_simple_vocab_16e6.txt.gz)")
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("-o", "--output", default=str(MODEL_FILE))
    args = p.parse_args(argv)
    tokenizer = clip_tokenizer_from_bpe(args.bpe)
    fit_part, _ = split_captions(args.fit)
    uni, bi, pruned = fit(tokenize_corpus(tokenizer, fit_part), args.min_count)
    meta = {"corpus": Path(args.fit).name, "fit_captions": len(fit_part), "min_count": args.min_count,
            "split": "sha256(image)[0] % 10 != 0"}
    save(Path(args.output), uni, bi, pruned, meta)
    digest = hashlib.sha256(Path(args.output).read_bytes()).hexdigest()
    print(f"{args.output}: {Path(args.output).stat().st_size} bytes, {len(bi)} bigrams, sha256 {digest}")


if __name__ == "__main__":  # pragma: no cover
    main()
