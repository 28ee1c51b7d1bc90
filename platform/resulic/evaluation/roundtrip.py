"""Round trips through real files: compress, write, read, decompress, measure."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from ..codec import Codec
from ..images import list_images, open_image, sample_images, save_image_atomic, shrink_to, write_atomic


@dataclass
class RoundTripRow:
    name: str
    width: int
    height: int
    file_bytes: int
    bpp: float
    estimated_bpp: float
    encode_s: float
    decode_s: float
    psnr: float
    network_evaluations: int

    def as_dict(self) -> dict:
        return asdict(self)


def psnr(a: Image.Image, b: Image.Image) -> float:
    """RGB PSNR in dB of two 8-bit images."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def load_inputs(images: str, max_images: int, max_side: int) -> list[tuple[str, Image.Image]]:
    if images == "samples":
        items = sample_images(max_images)
    else:
        items = [(p.stem, open_image(p)) for p in list_images(images)[:max_images]]
    return [(name, shrink_to(img, max_side)) for name, img in items]


def roundtrip(codec: Codec, items: Iterable[tuple[str, Image.Image]], output_dir: str | Path, progress=None) -> list[RoundTripRow]:
    """Compress each image to ``output_dir/<name>.rslc``, decode that file, and measure."""
    out = Path(output_dir)
    rows = []
    for name, img in items:
        enc = codec.encode(img)
        path = out / f"{name}.rslc"
        write_atomic(path, enc.data)
        dec = codec.decode(path.read_bytes())
        save_image_atomic(dec.image, out / f"{name}.png")
        rows.append(
            RoundTripRow(name, enc.width, enc.height, len(enc.data), enc.bpp, enc.estimated_bpp,
                         enc.seconds, dec.seconds, psnr(img, dec.image), dec.network_evaluations)
        )
        if progress is not None:
            progress.update(1)
    return rows


def results_json(rows: list[RoundTripRow], name: str, description: str = "") -> dict:
    """The round trip in CompressAI's results format (resulic.evaluation.results): one rate point, the means
    over images (``bpp`` from the files, ``psnr-rgb``, times), and each image's row beside it, so
    ``resulic plot`` and ``resulic bd-rate`` read it like evaluate's and baselines' files."""
    from .results import mean_or_none

    return {
        "name": name,
        "description": description or "round trip through real files: bpp from the written .rslc files, "
                                      "PSNR on the decoded 8-bit images, means over images",
        "num_images": len(rows),
        "results": {"bpp": [mean_or_none(r.bpp for r in rows)], "psnr-rgb": [mean_or_none(r.psnr for r in rows)],
                    "encoding_time": [mean_or_none(r.encode_s for r in rows)],
                    "decoding_time": [mean_or_none(r.decode_s for r in rows)]},
        "per_image": [r.as_dict() for r in rows],
    }


def format_table(rows: list[RoundTripRow]) -> str:
    head = f"{'image':<14} {'size':>9} {'bytes':>7} {'bpp':>8} {'est.bpp':>8} {'enc s':>6} {'dec s':>6} {'PSNR dB':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:<14} {f'{r.width}x{r.height}':>9} {r.file_bytes:>7} {r.bpp:>8.4f} {r.estimated_bpp:>8.4f} "
            f"{r.encode_s:>6.2f} {r.decode_s:>6.2f} {r.psnr:>8.2f}"
        )
    return "\n".join(lines)
