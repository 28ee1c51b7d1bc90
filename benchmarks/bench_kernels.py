"""CPU convolution kernels: encode and decode time of a shipped codec with oneDNN on (the
default; the entropy-model path runs on the native kernels either way, resulic/models/kernels.py
says why) and off (RESULIC_ONEDNN=0), each in a fresh process (the switch is process-wide). The
table of docs/benchmarks.md "CPU convolutions".

    python benchmarks/bench_kernels.py --image ../shared/datasets/kodak/kodim03.png --crop 384 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = """
import json, sys, time
from PIL import Image
from resulic.codec import shipped
codec = shipped.load(sys.argv[1])
w, h = int(sys.argv[3]), int(sys.argv[4])
img = Image.open(sys.argv[2]).convert("RGB").crop((0, 0, w, h))
t = time.perf_counter(); data = codec.encode(img).data; encode = time.perf_counter() - t
best = None
for _ in range(int(sys.argv[5])):
    out = codec.decode(data)
    if best is None or out.seconds < best.seconds:
        best = out
print(json.dumps({"encode": encode, "decode": best.seconds, **best.timings}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", required=True)
    p.add_argument("--crop", type=int, nargs=2, default=[384, 256], metavar=("W", "H"))
    p.add_argument("--rate", default="r2", help="shipped point")
    p.add_argument("--repeats", type=int, default=2, help="decodes; the best is kept")
    args = p.parse_args(argv)
    rows = {}
    for name, value in (("native (`RESULIC_ONEDNN=0`)", "0"), ("oneDNN (the default)", "1")):
        env = {**os.environ, "RESULIC_ONEDNN": value, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        out = subprocess.run([sys.executable, "-c", CHILD, args.rate, args.image, *map(str, args.crop), str(args.repeats)],
                             capture_output=True, text=True, env=env, check=True)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print("| kernels | encode s | decode s | of which VAE s | diffusion s |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['encode']:.2f} | {r['decode']:.2f} | {r['vae']:.2f} | {r['diffusion']:.2f} |")
    a, b = rows.values()
    print(f"| ratio | {a['encode'] / b['encode']:.1f}x | {a['decode'] / b['decode']:.1f}x | "
          f"{a['vae'] / b['vae']:.1f}x | {a['diffusion'] / b['diffusion']:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
