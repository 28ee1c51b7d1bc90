"""Per-image rate control: the rate level of a variable-rate model that puts a file closest to a
bpp target without passing it by more than ``OVER``.

The file's size grows with the level (the gains quantise y ever more finely), so a bisection
over the 128 levels finds the largest level at or under the target (7 encodes); it or the next
level, if that stays within the budget, is the closest. The image goes through the autoencoder
once; each try is the latent codec alone. bpp is the whole file's (header, text, checksum).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from PIL import Image

from ..config import RATE_LEVELS
from .codec import Codec, EncodeResult

OVER = 0.05  # a file may pass the target by at most 5 %
UNDER = 0.10  # ... and fall short of it by at most 10 % (else the target is outside the model's range)


@dataclass
class RateSearch:
    target_bpp: float
    level: int
    encodes: int  # files coded during the search (each the latent codec, not the autoencoder)
    seconds: float

    def as_dict(self) -> dict:
        return {"target_bpp": self.target_bpp, "level": self.level, "encodes": self.encodes,
                "seconds": round(self.seconds, 4)}


def check_target(bpp: float) -> float:
    """A usable target, or ValueError naming the problem."""
    if not isinstance(bpp, (int, float)) or not math.isfinite(bpp) or bpp <= 0:
        raise ValueError(f"bpp target {bpp!r}: must be a positive number of bits per pixel, e.g. 0.05")
    return float(bpp)


def _largest(holds, high: int) -> int:
    """The largest level in 0..high where ``holds`` (true at 0, monotone: true up to a point)."""
    lo, hi = 0, high + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if holds(mid) else (lo, mid)
    return lo


def encode_to_bpp(codec: Codec, image: Image.Image, target_bpp: float, **options) -> tuple[EncodeResult, RateSearch]:
    """The file of ``image`` at the level whose bpp is closest to ``target_bpp`` and at most
    ``1 + OVER`` times it; ValueError when the model cannot come within the window on this image
    (its lowest level is already over it, or its highest under ``1 - UNDER`` of it). ``options``
    go to ``Codec.encode`` (text, seed, steps, ...); Pfo runs once, at the chosen level."""
    target = check_target(target_bpp)
    if codec.config.rate_point.variable is None:
        raise ValueError("this model has a fixed rate: a bpp target needs a variable-rate model "
                         "(e.g. the shipped 'variable' point, configs/model/small-variable.yaml)")
    t0 = time.perf_counter()
    latent = codec.latent_of(image)
    search_options = {k: v for k, v in options.items() if k != "pfo"}
    sizes: dict[int, EncodeResult] = {}

    def at(level: int) -> EncodeResult:
        if level not in sizes:
            sizes[level] = codec.encode(image, level=level, latent=latent, **search_options)
        return sizes[level]

    budget = target * (1 + OVER)
    lowest, highest = at(0), at(RATE_LEVELS)
    if lowest.bpp > budget:
        raise ValueError(f"bpp target {target:g} is below this model's range on this image: its lowest level "
                         f"makes {lowest.bpp:.4g} bpp ({len(lowest.data)} bytes)")
    if highest.bpp < target * (1 - UNDER):
        raise ValueError(f"bpp target {target:g} is above this model's range on this image: its highest level "
                         f"makes {highest.bpp:.4g} bpp; ask for at most {highest.bpp:.4g}")
    # The closest from below is the largest level at or under the target; the closest from
    # above, the next level, if it stays within the budget.
    if lowest.bpp > target:
        candidates = [0]
    else:
        under = _largest(lambda lv: at(lv).bpp <= target, RATE_LEVELS)
        candidates = [under] + ([under + 1] if under < RATE_LEVELS and at(under + 1).bpp <= budget else [])
    level = min(candidates, key=lambda lv: (abs(sizes[lv].bpp - target), -lv))
    result = sizes[level]
    if options.get("pfo"):
        # Pfo changes only the text's tokens: re-encode with it at the chosen level, and step down
        # while its text pushes the file over the budget.
        while True:
            result = codec.encode(image, level=level, latent=latent, **options)
            if result.bpp <= budget or level == 0:
                break
            level -= 1
    search = RateSearch(target, level, len(sizes), time.perf_counter() - t0)
    return result, search
