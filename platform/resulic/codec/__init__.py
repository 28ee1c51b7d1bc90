"""The codec: its file format, compress/decompress, and trained-codec folders."""

from .codec import Codec, DecodeResult, EncodeResult
from .container import Container, Header, pack, unpack

__all__ = ["Codec", "Container", "DecodeResult", "EncodeResult", "Header", "pack", "unpack"]
