"""TAEF2 on this CPU: FLOPs, time and GFLOP/s of its encoder and decoder, per kernel setting.

    python benchmarks/bench_taef2.py [--image ../shared/datasets/kodak/kodim23.png] [--size 768 512]
        [--repeats 3] [--threads 1] [--fma-units 2]

TAEF2 is ≈ 90 % of a decode's and ≈ 98 % of an encode's CPU time (docs/benchmarks.md), so its
convolutions decide how fast the codec is. For one image at ``--size`` (the photo resized, or
the bundled sample): the FLOPs of each half (``torch.utils.flop_counter``: 2 per multiply-add),
then, per setting, the median of ``--repeats`` runs after one warm-up, the GFLOP/s achieved and
its share of the core's FP32 peak (AVX-512: 16 lanes x 2 for the FMA x ``--fma-units`` x the
clock of /proc/cpuinfo; AVX2: 8 lanes). Settings: PyTorch's native kernels, oneDNN on NCHW,
oneDNN on channels-last, and bfloat16 (oneDNN, channels-last; AMX tiles where the CPU has them)
with how far its pictures are from float32's (PSNR between the two decodes, the largest
difference in grey levels) and what it does to the decode's PSNR against the photo.
Ratios are against the native kernels in the same run; share the cores with nothing else to
read the absolute times.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_peak_gflops(fma_units: int) -> tuple[float, str]:
    """One core's FP32 peak, from /proc/cpuinfo (lanes from the widest vector ISA, the clock it reports)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    mhz = next((float(line.split(":", 1)[1]) for line in text.splitlines() if line.startswith("cpu MHz")), 0.0)
    lanes, isa = (16, "AVX-512") if "avx512f" in flags else (8, "AVX2") if "avx2" in flags else (4, "SSE")
    amx = " + AMX-BF16" if "amx_bf16" in flags else ""
    peak = mhz / 1000 * lanes * 2 * fma_units
    return peak, f"{isa}{amx}, {mhz / 1000:.2f} GHz, {fma_units} FMA unit(s): {peak:.0f} GFLOP/s FP32 per core"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", type=Path, default=REPO.parent / "shared/datasets/kodak/kodim23.png",
                   help="a photo (default: Kodak's kodim23; the bundled sample when it is absent)")
    p.add_argument("--size", type=int, nargs=2, default=[768, 512], metavar=("W", "H"), help="multiples of 8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fma-units", type=int, default=2, help="FMA units per core, for the peak (2 on most Xeons)")
    args = p.parse_args(argv)
    if args.size[0] % 8 or args.size[1] % 8:
        raise SystemExit("error: --size must be multiples of 8 (TAEF2's latent grid)")

    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from resulic.images import image_to_tensor, open_image, sample_images
    from resulic.models.taef2 import TinyAutoencoder

    torch.set_num_threads(args.threads)
    img = open_image(args.image) if args.image.is_file() else sample_images(1)[0][1]
    img = img.convert("RGB").resize(tuple(args.size))
    x = image_to_tensor(img)
    model = TinyAutoencoder.from_folder().eval()

    with torch.inference_mode():
        z = model.encode(x, tiled=False)
        counts = {}
        for name, fn, arg in (("encoder", model.encoder, x), ("decoder", model.decoder, z)):
            counter = FlopCounterMode(display=False)
            with counter:
                fn(arg)
            counts[name] = counter.get_total_flops()
    peak, peak_text = cpu_peak_gflops(args.fma_units)

    def settings():
        yield "native kernels, NCHW, fp32", torch.backends.mkldnn.flags(enabled=False), torch.contiguous_format, None
        yield "oneDNN, NCHW, fp32", torch.backends.mkldnn.flags(enabled=True), torch.contiguous_format, None
        yield "oneDNN, channels-last, fp32", torch.backends.mkldnn.flags(enabled=True), torch.channels_last, None
        yield "oneDNN, channels-last, bf16", torch.backends.mkldnn.flags(enabled=True), torch.channels_last, torch.bfloat16

    photo = np.asarray(img, dtype=np.float64)

    def psnr(a, b) -> float:
        return float(10 * np.log10(255**2 / max(((a - b) ** 2).mean(), 1e-12)))

    def pixels(t) -> np.ndarray:
        return (t.float().clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round()

    print(f"TAEF2 at {args.size[0]}x{args.size[1]}, {args.threads} thread(s), torch {torch.__version__}; "
          f"peak: {peak_text}")
    print(f"FLOPs: encoder {counts['encoder'] / 1e9:.1f} G, decoder {counts['decoder'] / 1e9:.1f} G\n")
    print("| setting | encode s | decode s | encoder GFLOP/s | decoder GFLOP/s | of FP32 peak (dec.) | speed-up (dec.) |")
    print("|---|---|---|---|---|---|---|")
    rows, reference, base = {}, None, None
    for name, kernels, layout, dtype in settings():
        net = TinyAutoencoder.from_folder().eval().to(memory_format=layout)
        autocast = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
        xin, zin = x.to(memory_format=layout), z.to(memory_format=layout)
        times = {"encode": [], "decode": []}
        with kernels, torch.inference_mode(), autocast:
            for i in range(args.repeats + 1):
                t0 = time.perf_counter()
                net.encoder(xin)
                t1 = time.perf_counter()
                out = net.decoder(zin)
                t2 = time.perf_counter()
                if i:  # the first run warms the kernels up (oneDNN builds its primitives then)
                    times["encode"].append(t1 - t0)
                    times["decode"].append(t2 - t1)
        enc, dec = statistics.median(times["encode"]), statistics.median(times["decode"])
        decoded = pixels(out)
        reference = decoded if reference is None else reference
        base = dec if base is None else base
        rows[name] = (decoded, dec)
        print(f"| {name} | {enc:.3f} | {dec:.3f} | {counts['encoder'] / enc / 1e9:.1f} | {counts['decoder'] / dec / 1e9:.1f} | "
              f"{counts['decoder'] / dec / 1e9 / peak:.0%} | {base / dec:.2f}x |", flush=True)
    print("\nPictures against the native float32 decode (of the same latent) and against the photo:")
    print("| setting | PSNR vs native fp32 dB | largest difference (grey levels) | PSNR vs photo dB |")
    print("|---|---|---|---|")
    for name, (decoded, _) in rows.items():
        same = psnr(decoded, reference)
        print(f"| {name} | {'identical' if same >= 120 else f'{same:.2f}'} | {int(np.abs(decoded - reference).max())} | "
              f"{psnr(decoded, photo):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
