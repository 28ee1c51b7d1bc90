"""What TAEF2 in bfloat16 costs in quality: the shipped codec on every Kodak image, fp32 against bf16.

    python benchmarks/bench_precision.py [--images ../shared/datasets/kodak] [--level 42] [--limit 24]

For each photo: the file made with TAEF2's encoder in fp32 and in bf16 (RESULIC_TAEF2_PRECISION),
each decoded with TAEF2's decoder in fp32 and in bf16. Prints mean bpp, PSNR and ST-LPIPS per
combination and the differences against fp32/fp32; issue 23's bound for a lower precision is
0.05 dB and 0.002 ST-LPIPS over the 24 images. The bitstream's own decoding (the entropy model)
is float32 on the native kernels in every combination (docs/bitstream.md): only pictures change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=REPO.parent / "shared/datasets/kodak")
    p.add_argument("--level", type=int, default=42, help="rate level of the default (variable) point")
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--model", type=Path, default=REPO / "platform/resulic/weights/small-codecs/variable")
    args = p.parse_args(argv)

    import torch
    from tqdm import tqdm

    from resulic.codec.store import load_codec
    from resulic.evaluation.roundtrip import psnr
    from resulic.images import list_images, open_image
    from resulic.metrics.perceptual import build_st_lpips
    from resulic.models import taef2
    from resulic.services.runtime import configure_threads

    configure_threads()
    paths = list_images(args.images)[: args.limit] if args.images.is_dir() else []
    if not paths:
        raise SystemExit(f"error: {args.images} holds no images")
    codec = load_codec(args.model)
    autoencoder = codec.backbone.vae  # its precision is what RESULIC_TAEF2_PRECISION sets at load
    if not isinstance(autoencoder, taef2.TinyAutoencoder):
        raise SystemExit(f"error: {args.model} does not decode with TAEF2 (the small profile does)")
    st_lpips = build_st_lpips()

    def perceptual(a, b) -> float:
        x, y = (torch.from_numpy(np.asarray(i, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1 for i in (a, b))
        with torch.no_grad():
            return float(st_lpips(x, y).mean())

    combos = [(e, d) for e in ("fp32", "bf16") for d in ("fp32", "bf16")]
    rows = {c: [] for c in combos}
    for path in tqdm(paths, desc="kodak", unit="image"):
        img = open_image(path)
        for enc_precision in ("fp32", "bf16"):
            autoencoder.precision = enc_precision
            data = codec.encode(img, level=args.level).data
            for dec_precision in ("fp32", "bf16"):
                autoencoder.precision = dec_precision
                out = codec.decode(data).image
                rows[(enc_precision, dec_precision)].append((len(data) * 8 / (img.width * img.height), psnr(img, out),
                                                             perceptual(img, out)))
    print(f"\n{len(paths)} images, level {args.level}, {args.model.name}")
    print("| TAEF2 encoder | TAEF2 decoder | bpp | PSNR dB | ST-LPIPS | Δ PSNR | Δ ST-LPIPS |")
    print("|---|---|---|---|---|---|---|")
    base = np.mean(rows[("fp32", "fp32")], axis=0)
    for (e, d), values in rows.items():
        bpp, q, lp = np.mean(values, axis=0)
        print(f"| {e} | {d} | {bpp:.4f} | {q:.3f} | {lp:.4f} | {q - base[1]:+.3f} | {lp - base[2]:+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
