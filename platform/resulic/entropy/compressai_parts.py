"""The parts of CompressAI the codec uses (entropy models, latent codecs, the masked convolution,
conv/deconv, the rANS encoder; its decoder is entropy/rans_decoder.py's own), imported without running the package's ``__init__``.

Why: ``compressai/__init__.py`` imports every subpackage, among them its point-cloud datasets and
transforms, which import torch_geometric (and with it scipy and pandas): measured with torch
already loaded, ``import compressai`` adds 318 MB of resident memory and 1-3 s of start-up to
every ``resulic compress``, Serve replica and job, where these parts add 54 MB. None of the rest is
used.

How: while nothing has imported ``compressai`` yet, the package, its ``registry`` and ``models``
subpackages are registered from their import specs without their ``__init__``; the package gets
the two functions its entropy models call (``available_entropy_coders``, ``get_entropy_coder``:
"ans", the package's own default), the registry the real ``compressai.registry.torch``'s
decorators (the latent codecs register themselves with them). The submodules themselves are
CompressAI's, unchanged. Whatever else is asked of these packages later (``compressai.zoo``) runs
their real ``__init__`` at that moment; a process that imported ``compressai`` first keeps the
whole package. No Ray, no MLflow.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys


def _package_without_init(name: str):
    """``name`` in sys.modules as its package object, ``__init__`` not run (submodules import).
    Asked for a name it lacks (``from compressai.models import Cheng2020Anchor``, ``compressai.zoo``),
    it runs its real ``__init__`` then, once, and answers from it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package")
    package = importlib.util.module_from_spec(spec)
    state = {"completed": False}

    def complete(attr: str):
        if not state["completed"]:
            state["completed"] = True  # before running it: its own lookups must not come back here
            spec.loader.exec_module(package)
            if attr in vars(package):
                return vars(package)[attr]
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    package.__getattr__ = complete
    sys.modules[name] = package
    return package


def _register_light_package() -> None:
    package = _package_without_init("compressai")
    package.available_entropy_coders = lambda: ["ans"]
    package.get_entropy_coder = lambda: "ans"
    registry = _package_without_init("compressai.registry")
    torch_registry = importlib.import_module("compressai.registry.torch")
    for name in getattr(torch_registry, "__all__", [n for n in vars(torch_registry) if not n.startswith("_")]):
        setattr(registry, name, getattr(torch_registry, name))
    package.registry = registry
    package.models = _package_without_init("compressai.models")


if "compressai" not in sys.modules:
    _register_light_package()

from compressai.ans import BufferedRansEncoder  # noqa: E402
from compressai.entropy_models import EntropyBottleneck, EntropyModel  # noqa: E402
from compressai.latent_codecs import (  # noqa: E402
    ChannelGroupsLatentCodec,
    CheckerboardLatentCodec,
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
)
from compressai.layers import CheckerboardMaskedConv2d  # noqa: E402
from compressai.models.utils import conv, deconv  # noqa: E402

__all__ = [
    "BufferedRansEncoder", "ChannelGroupsLatentCodec", "CheckerboardLatentCodec", "CheckerboardMaskedConv2d",
    "EntropyBottleneck", "EntropyModel", "GaussianConditionalLatentCodec",
    "HyperLatentCodec", "HyperpriorLatentCodec", "conv", "deconv",
]
