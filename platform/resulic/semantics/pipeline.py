"""The encoder side of semantic residual coding, assembled from a ``SemanticsConfig``.

- original caption: the caller's text, else the captions file (by image name), else the
  content-hash cache, else the captioner; with none of them it is an error that says what to
  configure (a caption cannot be invented offline).
- reconstruction caption: the captioner on x' = VAE-decode(z_c); without a captioner it is empty
  (a warning says so), and the residual is then the whole original caption.
- residual: the configured extractor (offline phrase matcher by default).
Models load on first use, so a codec that never uses them pays nothing.
"""

from __future__ import annotations

import warnings

from PIL import Image

from ..config import SemanticsConfig
from ..errors import ConfigError
from .captioners import CaptionCache, Captioner, CaptionsFile, build_captioner
from .residual import ResidualExtractor, build_residual


class Semantics:
    def __init__(self, config: SemanticsConfig | None = None) -> None:
        self.config = config or SemanticsConfig()
        self.cache = CaptionCache(self.config.cache_dir)
        self._captions_file = CaptionsFile(self.config.captions_file) if self.config.captions_file else None
        self._captioner: Captioner | None = None
        self._residual: ResidualExtractor | None = None

    @property
    def captioner(self) -> Captioner | None:
        if self._captioner is None and self.config.captioner.kind != "none":
            self._captioner = build_captioner(self.config.captioner)
        return self._captioner

    @property
    def extractor(self) -> ResidualExtractor:
        if self._residual is None:
            self._residual = build_residual(self.config.residual)
        return self._residual

    def caption_original(self, image: Image.Image, name: str | None = None) -> str:
        if self._captions_file is not None:
            caption = self._captions_file.get(name)
            if caption is not None:
                return caption
        if self.captioner is None:
            where = f" ({name} is not in {self.config.captions_file})" if self._captions_file and name else ""
            raise ConfigError(
                f"no caption for the image{where}: pass the caption as text (--text), give a captions "
                "file (semantics.captions_file / --captions) or configure semantics.captioner"
            )
        cached = self.cache.get(self.captioner.name, image)
        if cached is None:
            cached = self.captioner.caption([image])[0]
            self.cache.put(self.captioner.name, image, cached)
        return cached

    def caption_reconstruction(self, image: Image.Image) -> str:
        if self.captioner is None:
            warnings.warn(
                "no captioner configured (semantics.captioner): the reconstruction's caption is empty, "
                "so the residual is the whole original caption", stacklevel=2,
            )
            return ""
        return self.captioner.caption([image])[0]

    def residual(self, original: str, reconstruction: str) -> str:
        return self.extractor.residual(original, reconstruction)
