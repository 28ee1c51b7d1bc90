"""Where a codec process's peak memory comes from: one measurement in this fresh interpreter,
resident memory sampled every 50 ms with the main thread's stack at the highest sample (Linux).

    python benchmarks/memory_peak.py taef2 --size 3840x2160 --tile 64     # TAEF2's tiled decoder alone
    python benchmarks/memory_peak.py compress photo.png                   # the shipped default codec
    python benchmarks/memory_peak.py decompress photo.rslc

docs/security.md records what it found (4 Dec 2026, beside a training run): TAEF2's decoder at
3840x2160 peaks at 1.65 / 1.41 GB with tiles of 96 / 64 latent cells; a 4K compress at 2.18 GB in
the compressor's transforms; a 768x512 decompress in TAEF2's whole-picture decode. On 5 Dec 2026:
a 4K decompress at 2.11 GB in the compressor's whole-picture synthesis, 1.97 GB in TAEF2's tiles
once the synthesis tiled and large pictures bound the heap (docs/security.md).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import traceback
from pathlib import Path


class PeakSampler:
    """The highest VmRSS seen and where the main thread was then (resulic's own frames)."""

    def __init__(self, every: float = 0.05) -> None:
        self.peak_mb, self.where = 0, []
        self._main = threading.main_thread().ident
        threading.Thread(target=self._run, args=(every,), daemon=True).start()

    @staticmethod
    def rss_mb() -> int:
        with open("/proc/self/status") as status:
            return int(status.read().split("VmRSS:")[1].split()[0]) // 1024

    def _run(self, every: float) -> None:
        while True:
            now = self.rss_mb()
            if now > self.peak_mb:
                frame = sys._current_frames().get(self._main)
                stack = traceback.extract_stack(frame) if frame is not None else []
                self.peak_mb = now
                self.where = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in stack if "resulic" in f.filename]
            time.sleep(every)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("taef2", help="TAEF2's decoder on a random latent, in tiles")
    t.add_argument("--size", default="3840x2160", help="picture size WxH (multiples of 8)")
    t.add_argument("--tile", type=int, help="latent cells per tile side (default: models/taef2.TILE)")
    for name in ("compress", "decompress"):
        c = sub.add_parser(name, help=f"the shipped codec's {name} of one file")
        c.add_argument("file", type=Path)
    args = p.parse_args(argv)
    if not sys.platform.startswith("linux"):
        p.error("reads /proc/self/status (Linux only)")

    import torch

    from resulic.services.runtime import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(1)
    sampler = PeakSampler()
    if args.what == "taef2":
        from resulic.models import taef2

        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            p.error(f"--size {args.size!r}: expected WxH")
        if w % 8 or h % 8 or min(w, h) < 8:
            p.error("--size: both sides must be positive multiples of 8")
        if args.tile is not None:
            if args.tile < 8:
                p.error("--tile: at least 8 latent cells")
            taef2.TILE = args.tile
        model = taef2.TinyAutoencoder.from_folder().eval()
        latent = torch.randn(1, taef2.LATENT_CHANNELS, h // 8, w // 8)
        before = sampler.rss_mb()
        start = time.perf_counter()
        with torch.inference_mode():
            model.decode(latent, tiled=True)
        label = f"TAEF2 decode {w}x{h}, tiles of {taef2.TILE} cells"
    else:
        from PIL import Image

        from resulic.codec import shipped
        from resulic.errors import ResulicError

        if not args.file.is_file():
            p.error(f"{args.file}: no such file")
        try:
            if args.what == "compress":
                Image.MAX_IMAGE_PIXELS = None  # a benchmark of large pictures, not a gate
                image = Image.open(args.file).convert("RGB")
                codec = shipped.load(None)
                before, start = sampler.rss_mb(), time.perf_counter()
                codec.compress(image)
            else:
                data = args.file.read_bytes()
                codec = shipped.load_for_file(data)
                before, start = sampler.rss_mb(), time.perf_counter()
                codec.decompress(data)
        except (ResulicError, OSError) as exc:
            print(f"resulic: error: {exc}", file=sys.stderr)
            return 2
        label = f"{args.what} {args.file.name}"
    seconds = time.perf_counter() - start
    time.sleep(0.2)  # one more sample
    print(f"{label}: {seconds:.1f} s, peak {sampler.peak_mb} MB (before it: {before} MB)")
    print("at the peak:", " > ".join(sampler.where[-6:]) or "outside resulic's code")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
