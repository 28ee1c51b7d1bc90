"""Text coding benchmark: bytes per caption and bits per CLIP token on the measuring split.

    python benchmarks/bench_text_coding.py [--captions PATH] [--limit N]

Corpus: ../shared/datasets/captions/flickr2w_captions.jsonl, split by sha256(image name) into the
fit part (90 %, what the shipped model was fitted on) and the measuring part (10 %, used here).
Every scheme is charged every byte it needs to be decoded alone, plus nothing else, except
where a row says so. "+1" rows add the container's 1-byte section length (a varint), which every
scheme needs inside a ResULIC file.

Two message sets: the full captions, and residual-like messages (each caption's phrases after
the first, joined by ", " — what the offline residual sends when x′'s caption covers only the
first phrase).

- ours: CLIP BPE ids, trigram/Witten-Bell model fixed in the codec, exact arithmetic coding,
  end-of-text symbol (the file format). "count instead of end symbol": the same ids coded
  without the end symbol, plus a varint token count.
- official digit string (RESULIC.md §5.3): "id1,id2,..." coded with a static frequency table of
  this message's own characters. The arithmetic code is computed exactly (our big-integer coder,
  i.e. no torchac precision loss, so this is the official scheme's best case). "table excluded"
  is what the official code counts; "table included" adds the 11 character counts as varints.
- zlib (level 9, with and without the 6-byte zlib wrapper: raw deflate), brotli (quality 11,
  text mode), UTF-8 as is, and a fixed 16-bit id per token.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO.parent / "shared" / "datasets" / "captions" / "flickr2w_captions.jsonl"
BPE = REPO.parent / "shared" / "vocab" / "bpe_simple_vocab_16e6.txt.gz"


def varint_len(n: int) -> int:
    return max(1, math.ceil(n.bit_length() / 7))


def static_arith_bytes(message: str) -> tuple[int, Counter]:
    """Exact arithmetic code of ``message`` with its own static character frequencies."""
    counts = Counter(message)
    symbols = sorted(counts)
    cum, total = {}, 0
    for s in symbols:
        cum[s], total = total, total + counts[s]
    low, width, denom = 0, 1, 1
    for ch in message:
        low, width, denom = low * total + width * cum[ch], width * counts[ch], denom * total
    from resulic.semantics.text_coding import _shortest_bytes

    return len(_shortest_bytes(low, width, denom)), counts


def measure_set(texts, ids, model, seen):
    """Per-scheme sizes (bytes) and our statistics over one set of messages."""
    import brotli

    from resulic.semantics.text_coding import decode_ids, encode_ids, message_bits

    rows: dict[str, list[int]] = {k: [] for k in (
        "ours (section)", "ours +1", "ours, count instead of end symbol +1",
        "official digit string, table excluded", "official digit string, table included +1",
        "zlib -9 +1", "raw deflate -9 +1", "brotli q11 +1", "UTF-8 +1", "16-bit ids +1",
    )}
    ideal_bits = end_bits = 0.0
    unseen_bits, unseen_tok, unseen_caps = 0, 0, 0
    enc_t, dec_t = [], []
    for text, tok in zip(texts, ids):
        t0 = time.perf_counter()
        data = encode_ids(tok, model)
        t1 = time.perf_counter()
        assert decode_ids(data, model) == tok, f"round trip failed: {text!r}"
        t2 = time.perf_counter()
        enc_t.append(t1 - t0)
        dec_t.append(t2 - t1)
        with_end, without_end = message_bits(tok, model), message_bits(tok, model, end_symbol=False)
        ideal_bits += with_end
        end_bits += with_end - without_end
        rows["ours (section)"].append(len(data))
        if text.lower() not in seen:
            unseen_bits, unseen_tok, unseen_caps = unseen_bits + 8 * len(data), unseen_tok + len(tok), unseen_caps + 1
        rows["ours +1"].append(len(data) + varint_len(len(data)))
        counted = len(encode_ids(tok, model, end_symbol=False)) + varint_len(len(tok))
        rows["ours, count instead of end symbol +1"].append(counted + varint_len(counted))
        digits = ",".join(str(i) for i in tok)
        arith, counts = static_arith_bytes(digits)
        rows["official digit string, table excluded"].append(arith)
        table = sum(varint_len(counts.get(c, 0)) for c in "0123456789,")
        rows["official digit string, table included +1"].append(arith + table + varint_len(arith + table))
        utf8 = text.encode()
        for name, blob in (
            ("zlib -9 +1", zlib.compress(utf8, 9)),
            ("raw deflate -9 +1", (lambda c: c.compress(utf8) + c.flush())(zlib.compressobj(9, zlib.DEFLATED, -15))),
            ("brotli q11 +1", brotli.compress(utf8, quality=11, mode=brotli.MODE_TEXT)),
            ("UTF-8 +1", utf8),
            ("16-bit ids +1", b"\0\0" * len(tok)),
        ):
            rows[name].append(len(blob) + varint_len(len(blob)))
    return rows, dict(ideal_bits=ideal_bits, end_bits=end_bits, unseen=(unseen_bits, unseen_tok, unseen_caps), enc_t=enc_t, dec_t=dec_t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", default=str(CAPTIONS))
    p.add_argument("--limit", type=int, default=0, help="measure only the first N captions (0 = all)")
    args = p.parse_args()
    if not Path(args.captions).exists() or not BPE.exists():
        print(f"skipped: {args.captions} or {BPE} is not present (only the project's machines have ../shared)")
        return 0
    from resulic.models.tokenizer import clip_tokenizer_from_bpe
    from resulic.semantics import text_model
    from resulic.semantics.residual import split_phrases

    tokenizer = clip_tokenizer_from_bpe(BPE)
    fit, measure = text_model.split_captions(args.captions)
    seen = {c.strip().lower() for c in fit}
    if args.limit:
        measure = measure[: args.limit]
    texts = [c.strip() for c in measure]
    ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    n_caps, n_tok = len(texts), sum(map(len, ids))
    model = text_model.default_model()

    results = {"full captions": measure_set(texts, ids, model, seen)}
    residual_texts = [", ".join(p[1:]) for p in map(split_phrases, texts) if len(p) >= 2]
    residual_ids = [tokenizer(t, add_special_tokens=False).input_ids for t in residual_texts]
    results["residual-like messages"] = measure_set(residual_texts, residual_ids, model, set())
    rows, stats = results["full captions"]
    ideal_bits, end_bits = stats["ideal_bits"], stats["end_bits"]
    unseen_bits, unseen_tok, unseen_caps = stats["unseen"]
    enc_t, dec_t = stats["enc_t"], stats["dec_t"]
    size = text_model.MODEL_FILE.stat().st_size
    print(f"measuring split: {n_caps} captions, {n_tok} CLIP tokens ({n_tok / n_caps:.1f} per caption), "
          f"mean {statistics.mean(len(t) for t in texts):.0f} UTF-8 bytes")
    print(f"model: {text_model.MODEL_FILE.name}, {size / 1024:.0f} KiB, order {model.order}, "
          f"{', '.join(str(len(level)) for level in model.levels)} contexts per level, "
          f"fitted on {model.meta['fit_captions']} captions (min_count {model.meta['min_count']})")
    print(f"ideal -log2 P: {ideal_bits / n_tok:.2f} bits/token; end symbol costs {end_bits / n_caps:.2f} bits per caption")
    print(f"ours on the {unseen_caps} captions that do not occur verbatim in the fit part: "
          f"{unseen_bits / unseen_tok:.2f} bits/token (section only)")
    print(f"ours: encode {statistics.median(enc_t) * 1e6:.0f} µs, decode {statistics.median(dec_t) * 1e6:.0f} µs per caption (median)")
    print()
    for title, (rows, _) in results.items():
        n_msg = len(next(iter(rows.values())))
        n_tokens = sum(map(len, ids)) if title == "full captions" else sum(map(len, residual_ids))
        print(f"\n{title}: {n_msg} messages, {n_tokens / n_msg:.1f} tokens each\n")
        print("| scheme | bytes / message | bits / CLIP token |")
        print("|---|---|---|")
        for name, sizes in rows.items():
            total = sum(sizes)
            print(f"| {name} | {total / n_msg:.2f} | {8 * total / n_tokens:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
