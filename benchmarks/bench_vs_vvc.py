"""Ours against VVC on one CPU thread (or --threads): encode and decode seconds per Kodak image
(median of repeats) at equal bytes, and the peak memory of each.

    python benchmarks/bench_vs_vvc.py --images ../shared/datasets/kodak --max-images 3 --level 0 42
    python benchmarks/bench_vs_vvc.py --max-images 1 --level 45 --threads 1 2   # the default level, 1 and 2 threads

For every image and level: the shipped variable-rate model (or --model) is loaded, encodes and
decodes the image (full, and one-pass: one network evaluation) in a fresh process (its peak
resident memory is that process's VmHWM: model loading included), and `resulic compress` runs end
to end in another (interpreter start, imports, model load, encode, the file written); VVC
(libvvenc through ffmpeg, intra, the baselines' settings and preset) is bisected to the bpp ours
reached, and its final qp is encoded and decoded --repeats times in a fresh process (peak memory:
the largest ffmpeg child's). Writes a JSON and prints a table; times depend on the machine's
load: run it on a quiet one, or say what ran beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "datasets" / "kodak"


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe_ours(model: str, image: str, level: int, repeats: int) -> dict:
    from PIL import Image

    from resulic.codec.resolve import resolve_codec

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.perf_counter()
    codec = resolve_codec(model)
    load_s = time.perf_counter() - t0
    img = Image.open(image).convert("RGB")
    encodes, decodes, one_pass = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        enc = codec.encode(img, level=level)
        encodes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        codec.decode(enc.data)
        decodes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        codec.decode(enc.data, one_pass=True)
        one_pass.append(time.perf_counter() - t0)
    return {"bpp": enc.bpp, "load_s": load_s, "encode_s": statistics.median(encodes),
            "decode_s": statistics.median(decodes), "one_pass_decode_s": statistics.median(one_pass),
            "peak_mb": _hwm_mb()}


def cli_compress_seconds(model: str, image: str, level: int, repeats: int, threads: int) -> float:
    """`resulic compress IMAGE --model MODEL --level L` end to end in a fresh process, median of repeats."""
    import tempfile

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "resulic.cli", "compress", image, "--model", model,
                                  "--level", str(level), "-o", str(Path(tmp, f"{i}.rslc"))],
                                 capture_output=True, text=True, env=env)
            times.append(time.perf_counter() - t0)
            if out.returncode:
                raise SystemExit(f"resulic compress failed: {out.stderr.strip()[-2000:]}")
    return statistics.median(times)


def probe_vvc(image: str, target_bpp: float, repeats: int, preset: str) -> dict:
    from PIL import Image

    from resulic.evaluation.baselines import bpp_of, codec_spec, encode_at

    img = Image.open(image).convert("RGB")
    spec = codec_spec("vvc", preset)
    qp = encode_at(img, spec, target_bpp).knob
    runs = [spec.run(img, qp) for _ in range(repeats)]
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest ffmpeg
    return {"bpp": bpp_of(runs[0], img), "qp": qp, "encode_s": statistics.median(r.encode_s for r in runs),
            "decode_s": statistics.median(r.decode_s for r in runs), "peak_mb": children}


def _fresh(args: list[str], threads: int = 1) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"probe {args[:2]} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(REPO / "platform" / "resulic" / "weights" / "small-codecs" / "variable"),
                   help="a variable-rate codec folder (default: the shipped one)")
    p.add_argument("--images", default=str(KODAK))
    p.add_argument("--max-images", type=int, default=3)
    p.add_argument("--level", type=int, nargs="+", default=[0, 42])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads for ours (each a row; VVC: one)")
    p.add_argument("--vvc-preset", default="faster")
    p.add_argument("-o", "--output", default="outputs/bench_vs_vvc.json")
    p.add_argument("--probe", choices=["ours", "vvc"], help=argparse.SUPPRESS)  # one measurement, in a fresh process
    p.add_argument("--image", help=argparse.SUPPRESS)
    p.add_argument("--target", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.probe == "ours":
        print(json.dumps(probe_ours(args.model, args.image, args.level[0], args.repeats)))
        return 0
    if args.probe == "vvc":
        print(json.dumps(probe_vvc(args.image, args.target, args.repeats, args.vvc_preset)))
        return 0

    folder = Path(args.images)
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no such image folder (Kodak is at ../shared/datasets/kodak on the project's machines)")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")[: args.max_images]
    rows = []
    for image in images:
        for level in args.level:
            common = ["--image", str(image), "--repeats", str(args.repeats)]
            vvc = None
            for threads in args.threads:
                ours = _fresh(["--probe", "ours", "--model", args.model, "--level", str(level), *common], threads)
                ours["cli_compress_s"] = cli_compress_seconds(args.model, str(image), level, args.repeats, threads)
                vvc = vvc or _fresh(["--probe", "vvc", "--target", str(ours["bpp"]), "--vvc-preset", args.vvc_preset, *common])
                rows.append({"image": image.name, "level": level, "threads": threads, "ours": ours, "vvc": vvc})
                print(f"{image.name} level {level}, {threads} thread(s): ours {ours['bpp']:.4f} bpp load {ours['load_s']:.2f} s "
                      f"enc {ours['encode_s']:.2f} s dec {ours['decode_s']:.2f} s one-pass {ours['one_pass_decode_s']:.2f} s "
                      f"compress CLI {ours['cli_compress_s']:.2f} s {ours['peak_mb']:.0f} MB | VVC {vvc['bpp']:.4f} bpp "
                      f"(qp {vvc['qp']}) enc {vvc['encode_s']:.2f} s dec {vvc['decode_s']:.2f} s {vvc['peak_mb']:.0f} MB",
                      flush=True)

    def med(side, key, threads):
        return statistics.median(r[side][key] for r in rows if r["threads"] == threads)

    print("\n| codec | threads | bpp (median) | load s | encode s | decode s | one-pass decode s | compress CLI s "
          "| peak memory MB |\n|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        print(f"| ours ({Path(args.model).name}, levels {args.level}) | {threads} | {med('ours', 'bpp', threads):.4f} | "
              f"{med('ours', 'load_s', threads):.2f} | {med('ours', 'encode_s', threads):.2f} | "
              f"{med('ours', 'decode_s', threads):.2f} | {med('ours', 'one_pass_decode_s', threads):.2f} | "
              f"{med('ours', 'cli_compress_s', threads):.2f} | {med('ours', 'peak_mb', threads):.0f} |")
    first = args.threads[0]
    print(f"| VVC intra ({args.vvc_preset}) | 1 | {med('vvc', 'bpp', first):.4f} | – | {med('vvc', 'encode_s', first):.2f} | "
          f"{med('vvc', 'decode_s', first):.2f} | – | – | {med('vvc', 'peak_mb', first):.0f} |")
    for threads in args.threads:
        print(f"\nratio ours ({threads} thread(s)) / VVC (median over {len(images) * len(args.level)}): "
              f"encode {med('ours', 'encode_s', threads) / med('vvc', 'encode_s', first):.2f}x, "
              f"decode {med('ours', 'decode_s', threads) / med('vvc', 'decode_s', first):.1f}x")
    if len(args.threads) > 1:
        last = args.threads[-1]
        print(f"{last} threads / {first}: encode {med('ours', 'encode_s', last) / med('ours', 'encode_s', first):.2f}x, "
              f"decode {med('ours', 'decode_s', last) / med('ours', 'decode_s', first):.2f}x")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "vvc_preset": args.vvc_preset, "repeats": args.repeats,
                               "threads": args.threads, "rows": rows}, indent=2) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
