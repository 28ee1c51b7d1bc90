"""Peak memory of `resulic compress` and `resulic decompress` on a large picture, TAEF2 in tiles
(the default above 128x128 latent cells) against TAEF2 on the whole picture, each in its own
process (peak RSS from getrusage), and whether the two decoded pictures are identical.

    python benchmarks/bench_memory.py [--image photo.png] [--size 3840x2160] [--tiled-only] [-o outputs/memory]

Without --image the picture is a synthetic one (smooth gradients and noise); memory does not
depend on the content. A 3840x2160 run takes ~10 minutes on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# One child per measurement: the CLI, with TAEF2's tiling threshold out of reach for "whole".
CHILD = """
import resource, sys
from resulic.models import taef2
if sys.argv[1] == "whole":
    taef2.TILE_ABOVE = 1 << 62
from resulic.cli import main
rc = main(sys.argv[2:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
sys.exit(rc)
"""


def make_picture(size: tuple[int, int], path: Path, source: Path | None) -> None:
    from PIL import Image

    w, h = size
    if source is not None:
        Image.open(source).convert("RGB").resize((w, h), Image.BICUBIC).save(path)
        return
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([np.sin(9 * yy), np.cos(7 * xx), np.sin(5 * (xx + yy))], -1) * 0.4 + 0.5
    pixels = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path)


def run(mode: str, argv: list[str]) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of one CLI command in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(argv)} ({mode}) exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    kb = next(int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("MAXRSS_KB"))
    return kb / 1024**2, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, help="a photo to resize to --size (default: a synthetic picture)")
    parser.add_argument("--size", default="3840x2160", help="WIDTHxHEIGHT (default: 3840x2160)")
    parser.add_argument("--tiled-only", action="store_true",
                        help="measure the default (tiled) path alone: at the 16 M-pixel limit TAEF2 on the whole "
                             "picture needs about 20 GB")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "outputs" / "memory", help="work folder")
    args = parser.parse_args()
    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        parser.error(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 3840x2160")
    if args.image is not None and not args.image.is_file():
        parser.error(f"--image {args.image}: no such file")
    from PIL import Image

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    picture = out / f"picture-{size[0]}x{size[1]}.png"
    make_picture(size, picture, args.image)
    rows = {}
    modes = ("tiled",) if args.tiled_only else ("tiled", "whole")
    for mode in modes:
        stream, decoded = out / f"{mode}.rslc", out / f"{mode}.png"
        for path in (stream, decoded):
            path.unlink(missing_ok=True)
        rows[mode] = {
            "compress": run(mode, ["compress", str(picture), "-o", str(stream)]),
            "decompress": run(mode, ["decompress", str(stream), "-o", str(decoded)]),
        }
        print(f"{mode}: compress {rows[mode]['compress'][0]:.2f} GB, decompress {rows[mode]['decompress'][0]:.2f} GB",
              file=sys.stderr)
    if args.tiled_only:
        (gc, sc), (gd, sd) = rows["tiled"]["compress"], rows["tiled"]["decompress"]
        pixels = size[0] * size[1]
        print(f"\n{size[0]}x{size[1]} ({pixels / 1e6:.2f} M pixels), tiled, one process per command (peak RSS; "
              "seconds include start-up)\n")
        print("| command | peak GB | s |\n|---|---|---|")
        print(f"| compress | {gc:.2f} | {sc:.0f} |\n| decompress | {gd:.2f} | {sd:.0f} |")
        (out / "memory.json").write_text(json.dumps({"size": size, "rows": rows}, indent=1))
        return 0
    same_file = (out / "tiled.rslc").read_bytes() == (out / "whole.rslc").read_bytes()
    a, b = (np.asarray(Image.open(out / f"{m}.png"), dtype=np.int16) for m in ("tiled", "whole"))
    print(f"\n{size[0]}x{size[1]}, one process per cell (peak RSS; seconds include start-up)\n")
    print("| command | tiled GB | whole GB | whole / tiled | tiled s | whole s |")
    print("|---|---|---|---|---|---|")
    for command in ("compress", "decompress"):
        (tg, ts), (wg, ws) = rows["tiled"][command], rows["whole"][command]
        print(f"| {command} | {tg:.2f} | {wg:.2f} | {wg / tg:.1f}x | {ts:.0f} | {ws:.0f} |")
    print(f"\nsame bitstream: {same_file}; decoded pictures differ by at most {int(np.abs(a - b).max())} grey level(s)")
    (out / "memory.json").write_text(json.dumps({"size": size, "rows": rows, "same_bitstream": same_file}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
