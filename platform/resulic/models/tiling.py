"""Local convolutions over a large map in overlapping tiles: bounded memory, the same output.

A stack of local layers (convolutions, per-pixel nonlinearities, sub-pixel upsampling) computes
each output cell from a bounded neighbourhood of input cells. Run over tiles that each read that
neighbourhood (the halo) and keep only their own cells, it gives the whole map's output, while
each tile's working set (on PyTorch's native kernels, the unfolded inputs of every convolution)
is the tile's, not the picture's. TAEF2's local halves (``models/taef2.py``) and the
compressor's synthesis transform (``models/compressor.py``) use it for large pictures.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from torch import Tensor


M_MMAP_THRESHOLD = -3  # mallopt's parameter (glibc malloc.h)
HEAP_LIMIT = 4 << 20  # bytes: larger blocks get their own pages, returned when freed


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@functools.cache
def bound_the_heap() -> None:
    """From now on, blocks over 4 MiB are mapped on their own and given back when freed (glibc;
    nothing elsewhere), and what is free in the heap now is given back. glibc's default raises
    that limit as large blocks are freed, up to 32 MiB, and keeps freed blocks under it in the
    heap: a large picture's stages (the synthesis' tiles, the UNet, TAEF2's tiles) then stayed
    resident under each other — a 4K decode peaked at 2.2-2.4 GB while this change was made,
    1.97 GB with this (in TAEF2's tiles; benchmarks/memory_peak.py decompress, docs/security.md). Called once a picture is large enough to tile, so a
    process that only ever codes pictures that run whole keeps glibc's default."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, HEAP_LIMIT)
        libc.malloc_trim(0)


def run_tiled(fn, x: Tensor, tile: int, halo: int, scale: float, out_channels: int) -> Tensor:
    """``fn`` (local convolutions mapping a (B, C, h, w) map to (B, out, h*scale, w*scale)) over
    ``x`` in ``tile``-sized tiles, each read with ``halo`` extra input cells on every side that
    exist, its output cropped back to the tile. ``tile`` and ``halo`` must keep tiles on the
    grid of any strided layers (multiples of 1/scale when scale < 1)."""
    b, _, h, w = x.shape
    bound_the_heap()
    out = x.new_empty(b, out_channels, round(h * scale), round(w * scale))
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            t0, l0 = max(top - halo, 0), max(left - halo, 0)
            y = fn(x[:, :, t0 : min(top + tile + halo, h), l0 : min(left + tile + halo, w)])
            oy, ox = round(top * scale), round(left * scale)
            oh, ow = round(min(tile, h - top) * scale), round(min(tile, w - left) * scale)
            dy, dx = round((top - t0) * scale), round((left - l0) * scale)  # where the tile starts in y
            out[:, :, oy : oy + oh, ox : ox + ow] = y[:, :, dy : dy + oh, dx : dx + ow]
    return out
