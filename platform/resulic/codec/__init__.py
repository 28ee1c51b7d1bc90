"""The codec: its file format, compress/decompress, and trained-codec folders."""

from .codec import Codec, DecodeResult, EncodeResult
from .container import Container, Header, pack, unpack
from .limits import DecodeLimits

__all__ = ["Codec", "Container", "DecodeLimits", "DecodeResult", "EncodeResult", "Header", "pack", "unpack"]
