"""CLIP BPE tokenizers built offline.

SD 2.1's text encoder uses OpenAI CLIP's byte-pair encoding (49,408 entries). Its merges file
(``bpe_simple_vocab_16e6.txt.gz``) is enough to build the real tokenizer without a download.
The tiny profile uses the same tokenizer class with bytes only (514 entries), so it needs no
file at all.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from ..errors import ModelLoadError

START, END = "<|startoftext|>", "<|endoftext|>"
# CLIP keeps the first 49152 - 256 - 2 merges of the file (after its version line).
CLIP_NUM_MERGES = 49152 - 256 - 2


def _byte_tokens() -> list[str]:
    chars = list(bytes_to_unicode().values())
    return chars + [c + "</w>" for c in chars]


def byte_level_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer without merges: every byte of every word is a token (514 entries)."""
    tokens = _byte_tokens() + [START, END]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])


def clip_tokenizer_from_bpe(path: str | Path) -> CLIPTokenizer:
    """The real CLIP tokenizer from its gzipped BPE merges file."""
    path = Path(path)
    try:
        lines = gzip.open(path, "rt", encoding="utf-8").read().split("\n")
    except (OSError, EOFError) as exc:
        raise ModelLoadError(f"cannot read the CLIP BPE vocabulary {path}: {exc}") from None
    merges = [tuple(line.split()) for line in lines[1 : CLIP_NUM_MERGES + 1]]
    if len(merges) != CLIP_NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ModelLoadError(f"{path} is not a CLIP BPE merges file")
    tokens = _byte_tokens() + ["".join(m) for m in merges] + [START, END]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
