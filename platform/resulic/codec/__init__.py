"""The codec (the method): file format, compress/decompress, trained-codec folders; imports the ground, models, entropy, diffusion, semantics.

The names below are loaded on first use: ``resulic info`` reads a file's header through
``codec.container`` (the standard library only) without importing torch and diffusers, which
``codec.codec`` needs and which take seconds to import.
"""

from importlib import import_module

_EXPORTS = {"Codec": ".codec", "DecodeResult": ".codec", "EncodeResult": ".codec",
            "Container": ".container", "Header": ".container", "pack": ".container", "unpack": ".container",
            "DecodeLimits": ".limits"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
