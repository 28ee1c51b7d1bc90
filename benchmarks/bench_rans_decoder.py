"""Entropy-decode time: the bounds-checked Python rANS decoder vs CompressAI's C++ RansDecoder.

    python benchmarks/bench_rans_decoder.py [--repeats 5]

The sd21 profile's compressor sizes (M = 192, N = 128) with seeded random weights, one
Kodak-sized latent (768 x 512 pixels -> 96 x 64 latent), random z_0 at two scales. Both
decoders replay the same decode calls (what CompressAI's entropy models pass them, including
the table conversion it does per call); median of the repeats, seconds per image.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from compressai.ans import RansDecoder

from resulic.config import CompressorConfig
from resulic.models.compressor import LatentCompressor
from resulic.entropy.rans_decoder import SafeRansDecoder
from resulic.entropy.rans_stream import SharedRansStream

SD21 = CompressorConfig(channels=128, latent_dim=192, groups=[16, 16, 32, 32, 96], channel_context=[224, 128])


class Recording(SharedRansStream):
    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def decode_with_indexes(self, token, indexes, cdfs, cdf_lengths, offsets):
        if self._encoder is None:
            self.calls.append((list(indexes), cdfs, list(cdf_lengths), list(offsets)))
        return super().decode_with_indexes(token, indexes, cdfs, cdf_lengths, offsets)


def timed(decoder_cls, data, calls, repeats) -> tuple[float, list]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        d = decoder_cls()
        d.set_stream(data)
        out = [d.decode_stream(*c) for c in calls]
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    c = LatentCompressor(SD21).eval()
    c.update(force=True)
    c.stream = Recording()
    c.stream.attach(c)
    print("| z_0 scale | stream bytes | symbols | C++ RansDecoder s | SafeRansDecoder s |")
    print("|---|---|---|---|---|")
    for scale in (1.0, 4.0):
        z0 = torch.randn(1, 4, 64, 96, generator=torch.Generator().manual_seed(1)) * scale
        coded = c.compress(z0)
        c.stream.calls = []
        c.decompress(coded.data, (64, 96))
        calls = c.stream.calls
        t_cpp, out_cpp = timed(RansDecoder, coded.data, calls, args.repeats)
        t_py, out_py = timed(SafeRansDecoder, coded.data, calls, args.repeats)
        assert out_cpp == out_py, "the decoders disagree"
        n = sum(len(call[0]) for call in calls)
        print(f"| {scale:g} | {len(coded.data):,} | {n:,} | {t_cpp:.3f} | {t_py:.3f} |")


if __name__ == "__main__":
    main()
