"""Token ids of the transmitted text and of the decoder's prompt built from them.

The text section carries token ids of the backbone's tokenizer, which for both profiles are CLIP
BPE ids (``tiny`` uses the byte tokens 0..511, which are CLIP's first 512 ids; ``sd21`` uses the
whole 49,408-entry vocabulary). The decoder conditions on exactly the decoded ids followed by the
ids of ", best quality, extremely detailed" — it never re-tokenizes decoded text, so what Pfo
optimised is what the decoder sees.
"""

from __future__ import annotations

import torch
from transformers import CLIPTokenizer

from ..config import MAX_TEXT_TOKENS, QUALITY_SUFFIX, TEXT_LENGTH  # noqa: F401  (MAX_TEXT_TOKENS: re-exported)
from ..errors import ModelLoadError
from ..models.tokenizer import _byte_tokens



def check_clip_vocabulary(tokenizer: CLIPTokenizer) -> None:
    """The text coder's model is over CLIP ids: refuse a tokenizer whose ids mean other tokens."""
    if tokenizer.convert_ids_to_tokens(list(range(512))) != _byte_tokens():
        raise ModelLoadError("the backbone's tokenizer is not a CLIP BPE tokenizer (its first 512 ids differ)")


def special_ids(tokenizer: CLIPTokenizer) -> set[int]:
    return {i for i in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None} | {
        i for i in range(len(tokenizer)) if i >= 49406
    }


def text_token_ids(tokenizer: CLIPTokenizer, text: str) -> list[int]:
    """Content ids of ``text`` (no start/end), cut to what the decoder's 77 positions can hold."""
    return list(tokenizer(text.strip(), add_special_tokens=False).input_ids)[:MAX_TEXT_TOKENS]


def prompt_input_ids(tokenizer: CLIPTokenizer, ids: list[int]) -> torch.Tensor:
    """(1, 77) input ids: start, the text's ids then ', best quality, extremely detailed' (just the
    suffix for empty text), end, padding — what the tokenizer gives for the joined string."""
    suffix = tokenizer(("" if not ids else ", ") + QUALITY_SUFFIX, add_special_tokens=False).input_ids
    body = (list(ids) + list(suffix))[:MAX_TEXT_TOKENS]
    full = [tokenizer.bos_token_id, *body, tokenizer.eos_token_id]
    full += [tokenizer.pad_token_id] * (TEXT_LENGTH - len(full))
    return torch.tensor([full], dtype=torch.long)


def ids_to_text(tokenizer: CLIPTokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()
