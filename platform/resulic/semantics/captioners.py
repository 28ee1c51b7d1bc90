"""Captioners: ``caption(images) -> list[str]`` (RESULIC.md §5.2, §0 item 7).

- ``TransformersCaptioner``: a local transformers image-to-text model (BLIP, BLIP-2, GIT,
  Florence-2, vision-encoder-decoder, …) from a hub id already in the cache or a folder.
- ``EndpointCaptioner``: an OpenAI-compatible chat endpoint; each image is sent as an 8-bit
  (0–255) PNG in a base64 data URL — the official code's float images are the defect this avoids.
- ``CaptionsFile``: captions that a dataset already has (JSONL ``{"image": name, "caption": …}``),
  looked up by file name.
- ``CaptionCache``: captions of original images cached by the image's content hash.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from ..config import EndpointConfig
from ..errors import ConfigError, ModelLoadError
from ..images import write_atomic
from .endpoint import ChatEndpoint

CAPTION_SYSTEM = "You are a helpful assistant that describes photographs precisely."
CAPTION_INSTRUCTION = (
    "Describe this picture in detail in about 70 words: the main objects, their colours, "
    "positions and the setting. Say only what is visible; no feelings, opinions or guesses."
)


class Captioner(Protocol):
    name: str

    def caption(self, images: list[Image.Image]) -> list[str]: ...


def content_hash(image: Image.Image) -> str:
    """SHA-256 of the RGB pixels and size: the same picture gives the same key in any file format."""
    rgb = image.convert("RGB")
    h = hashlib.sha256(f"{rgb.size[0]}x{rgb.size[1]}:".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TransformersCaptioner:
    def __init__(self, source: str, max_tokens: int = 77, device: str = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        self.name = f"transformers:{source}"
        self.max_tokens = max_tokens
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(source).to(device).eval()
            processor = AutoProcessor.from_pretrained(source)
            tokenizer = getattr(processor, "tokenizer", None)
            if tokenizer is None:  # e.g. vision-encoder-decoder folders: two separate parts
                processor, tokenizer = AutoImageProcessor.from_pretrained(source), AutoTokenizer.from_pretrained(source)
        except Exception as exc:  # transformers raises OSError, ValueError, HF errors...
            raise ModelLoadError(
                f"semantics.captioner.source: cannot load an image-to-text model from {source!r}: {_first_line(exc)}"
            ) from None
        self.processor, self.tokenizer, self.device = processor, tokenizer, torch.device(device)

    @torch.no_grad()
    def caption(self, images: list[Image.Image]) -> list[str]:
        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt").to(self.device)
        out = self.model.generate(**inputs, max_new_tokens=self.max_tokens, do_sample=False)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


class EndpointCaptioner:
    def __init__(self, endpoint: ChatEndpoint, max_tokens: int = 77) -> None:
        self.name = f"openai:{endpoint.url}:{endpoint.model}"
        self.endpoint, self.max_tokens = endpoint, max_tokens

    def caption(self, images: list[Image.Image]) -> list[str]:
        captions = []
        for image in images:
            messages = [
                {"role": "system", "content": CAPTION_SYSTEM},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": png_data_url(image)}},
                    {"type": "text", "text": CAPTION_INSTRUCTION},
                ]},
            ]
            captions.append(self.endpoint.complete(messages, self.max_tokens))
        return captions


class CaptionsFile:
    """Image name -> caption from a JSONL file (a later line for the same name wins)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.captions: dict[str, str] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"semantics.captions_file: cannot read {self.path} ({exc})") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self.captions[str(row["image"])] = str(row["caption"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(f"{self.path}:{number}: expected {{\"image\": name, \"caption\": text}}") from None

    def get(self, name: str | None) -> str | None:
        if name is None:
            return None
        return self.captions.get(name, self.captions.get(Path(name).name))


class CaptionCache:
    """Captions by (captioner, content hash): in memory, and in ``folder`` when one is given."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder else None
        self.memory: dict[str, str] = {}

    def _key(self, captioner: str, image: Image.Image) -> str:
        return hashlib.sha256(f"{captioner}\n{content_hash(image)}".encode()).hexdigest()

    def get(self, captioner: str, image: Image.Image) -> str | None:
        key = self._key(captioner, image)
        if key in self.memory:
            return self.memory[key]
        if self.folder and (self.folder / f"{key}.json").is_file():
            try:
                caption = json.loads((self.folder / f"{key}.json").read_text())["caption"]
            except (OSError, ValueError, KeyError):
                return None  # a damaged entry is recomputed
            self.memory[key] = caption
            return caption
        return None

    def put(self, captioner: str, image: Image.Image, caption: str) -> None:
        key = self._key(captioner, image)
        self.memory[key] = caption
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(self.folder / f"{key}.json", json.dumps({"captioner": captioner, "caption": caption}).encode())


def build_captioner(config: EndpointConfig) -> Captioner | None:
    if config.kind == "none":
        return None
    if config.kind == "transformers":
        return TransformersCaptioner(config.source, config.max_tokens, config.device)
    endpoint = ChatEndpoint(config.base_url, config.source, config.api_key_env, config.timeout_s)
    return EndpointCaptioner(endpoint, config.max_tokens)
