"""Which codec a command means: ``--model`` as a trained-codec folder, a model YAML, ``tiny``
(the embedded test profile) or ``$RESULIC_MODEL``; by default the shipped codecs (``shipped``).

Above ``store`` and ``shipped`` (both of which it calls), so that neither calls back into the other.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import ModelConfig, build_config, load_config
from ..errors import ModelLoadError
from . import shipped
from .codec import Codec
from .store import folder_config, load_codec

TINY = "tiny"  # --model tiny: the embedded test profile (random weights)
# The model commands use without --model (e.g. 'tiny' in the test suite, a models:/ URI on a
# team machine); unset = the shipped codecs.
DEFAULT_MODEL_ENV = "RESULIC_MODEL"


def resolve_codec(model: str | Path | None = None, overrides=(), device="cpu", rate: str | None = None,
                  variable: bool = False, encode_only: bool = False) -> Codec:
    """The codec a command should use: a trained-codec folder, a model YAML, ``tiny`` (the
    embedded test profile), or by default the shipped trained codec of the small profile at
    rate point ``rate`` (its default point when None; its variable-rate model with ``variable``).
    ``encode_only``: a trained folder of the small profile loads without what only a decoder needs
    (``store.load_codec``); anything else loads whole."""
    if model is None:
        model = os.environ.get(DEFAULT_MODEL_ENV) or None
    if model is None:
        if overrides:
            raise ModelLoadError("--set changes a model YAML; the shipped codecs are trained folders")
        return shipped.load(rate or (shipped.variable_name() if variable else None), device=device,
                            encode_only=encode_only)
    if rate is not None:
        raise ModelLoadError("--rate chooses among the shipped codecs; it cannot be combined with --model")
    if str(model) != TINY and Path(model).is_dir():
        if overrides:
            raise ModelLoadError("--set cannot change a trained codec; it would no longer match its weights")
        return load_codec(model, device=device, encode_only=encode_only)
    return Codec.build(source_config(model, overrides), device=device)


def source_config(model: str | Path, overrides=()) -> ModelConfig:
    """The model config of a ``--model`` source (``tiny``, a trained-codec folder or a model
    YAML), read without building the model."""
    if str(model) == TINY:
        return build_config(ModelConfig, {}, overrides, source="<embedded tiny profile>")
    path = Path(model)
    if path.is_dir():
        return folder_config(path)
    if path.is_file():
        return load_config(ModelConfig, path, overrides)
    raise ModelLoadError(f"--model {model}: neither a trained-codec folder nor a model YAML file")
