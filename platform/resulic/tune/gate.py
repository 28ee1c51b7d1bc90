"""The gate in front of the champion: a fine-tuned codec replaces what it would replace (the
current champion, or with none the shipped codec) only when it is better on held-out real files,
at equal or lower bpp, by more than the measurement's noise. Otherwise the reference stays.

Measured through real files: each held-out image is compressed to bytes, the bytes decoded, and
PSNR taken on the decoded 8-bit image; bpp is the files' bits over the images' pixels. Both
codecs see the same images, so the comparison is paired: per image, Δ = PSNR(candidate) −
PSNR(reference). Decoding is deterministic (seeded), so the noise is that of the image sample:
the candidate wins when the mean Δ exceeds ``z`` standard errors of it (z = 2: about a 2.5 %
chance that a codec no better than the reference passes) and at least ``min_margin_db`` (0.1 dB:
below what anyone sees). Rate first: a candidate whose total bits exceed the reference's is
refused whatever its PSNR (more bits buy PSNR; that is not an improvement).

The held-out files are scikit-learn's two sample photos (china, flower; CC-BY-2.0), which the
demo sweep does not train on (it trains on scikit-image's), each cut into four 256-px crops,
or any image folder. No Ray, no MLflow here.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import ConfigError

HELDOUT = "heldout"  # the default held-out set: scikit-learn's sample photos, cropped
CROP = 256


def heldout_images(source: str = HELDOUT, crop: int = CROP, limit: int | None = None) -> list[tuple[str, Image.Image]]:
    """(name, image) pairs: ``heldout`` (scikit-learn's photos, four crops each) or an image folder
    (each image centre-cropped to at most ``crop``)."""
    from ..images import list_images, open_image

    if source == HELDOUT:
        import importlib.util

        spec = importlib.util.find_spec("sklearn")  # the files only: importing scikit-learn takes seconds
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("gate.images: 'heldout' uses scikit-learn's sample photos; scikit-learn is not "
                              "installed: name an image folder instead")
        folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "images"
        out = []
        for path in sorted(folder.glob("*.jpg")):
            img = open_image(path)
            w, h = img.size
            for i, (x, y) in enumerate(((0, 0), (w - crop, 0), (0, h - crop), (w - crop, h - crop))):
                out.append((f"{path.stem}{i}", img.crop((x, y, x + crop, y + crop))))
    else:
        out = []
        for path in list_images(source):
            img = open_image(path)
            w, h = img.size
            cw, ch = min(w, crop), min(h, crop)
            out.append((path.stem, img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))))
    if not out:
        raise ConfigError(f"gate.images: no images in {source}")
    return out[:limit]


@dataclass
class Measured:
    """One codec on the held-out files: bits and PSNR per image."""

    label: str
    names: list[str]
    bits: list[int]
    pixels: list[int]
    psnr: list[float]

    @property
    def bpp(self) -> float:
        return sum(self.bits) / sum(self.pixels)

    @property
    def mean_psnr(self) -> float:
        return statistics.fmean(self.psnr)


def measure(codec, images: list[tuple[str, Image.Image]], label: str, progress=None) -> Measured:
    """Compress each image to real bytes, decode the bytes, score the decoded image."""
    from ..evaluation.roundtrip import psnr

    names, bits, pixels, scores = [], [], [], []
    for name, img in images:
        data = codec.compress(img)
        decoded = codec.decompress(data)
        names.append(name)
        bits.append(len(data) * 8)
        pixels.append(img.width * img.height)
        scores.append(psnr(img, decoded))
        if progress is not None:
            progress.update(1)
    return Measured(label, names, bits, pixels, scores)


@dataclass
class Verdict:
    better: bool
    delta_db: float  # mean per-image PSNR gain of the candidate
    margin_db: float  # what the gain had to exceed
    reason: str
    candidate: Measured = field(repr=False)
    reference: Measured = field(repr=False)


def judge(candidate: Measured, reference: Measured, z: float = 2.0, min_margin_db: float = 0.1) -> Verdict:
    """Whether ``candidate`` beats ``reference``: no more bits in all, and a mean paired PSNR gain
    above ``max(min_margin_db, z · standard error)``."""
    if candidate.names != reference.names:
        raise ValueError("the two codecs were measured on different images")
    deltas = [c - r for c, r in zip(candidate.psnr, reference.psnr)]
    mean = statistics.fmean(deltas)
    se = statistics.stdev(deltas) / math.sqrt(len(deltas)) if len(deltas) > 1 else math.inf
    margin = max(min_margin_db, z * se)
    if sum(candidate.bits) > sum(reference.bits):
        reason = f"more bits ({candidate.bpp:.4f} bpp against {reference.bpp:.4f})"
        return Verdict(False, mean, margin, reason, candidate, reference)
    if mean <= 0:
        reason = f"PSNR {mean:+.2f} dB: worse"
        return Verdict(False, mean, margin, reason, candidate, reference)
    if mean <= margin:
        reason = f"PSNR {mean:+.2f} dB is within the noise (needs more than +{margin:.2f} dB)"
        return Verdict(False, mean, margin, reason, candidate, reference)
    reason = f"PSNR {mean:+.2f} dB (more than +{margin:.2f} dB) at {candidate.bpp:.4f} <= {reference.bpp:.4f} bpp"
    return Verdict(True, mean, margin, reason, candidate, reference)


def table(verdict: Verdict) -> str:
    """The two codecs on the held-out files, and the verdict."""
    rows = [("reference: " + verdict.reference.label, verdict.reference), ("candidate: " + verdict.candidate.label, verdict.candidate)]
    width = max(len(label) for label, _ in rows)
    n = len(verdict.candidate.names)
    lines = [f"{'held-out files (' + str(n) + ')':<{width}}  {'bpp':>7}  {'PSNR dB':>7}"]
    lines += [f"{label:<{width}}  {m.bpp:>7.4f}  {m.mean_psnr:>7.2f}" for label, m in rows]
    return "\n".join(lines)
