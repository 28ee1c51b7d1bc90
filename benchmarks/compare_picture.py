"""Original | ours | VVC at equal bytes (VVC at the largest size not above ours), side by side,
labelled with bytes, bpp and PSNR — the picture in README.md and docs/small-profile.md.

    python benchmarks/compare_picture.py ../shared/datasets/kodak/kodim23.png --rate r2 -o docs/img/kodim23.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from resulic.baselines import bpp_of, codec_spec, encode_at
from resulic.codec.store import resolve_codec
from resulic.metrics.distortion import psnr
from resulic.runtime import configure_threads, quiet_libraries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("image")
    p.add_argument("--model", help="codec folder (default: the shipped codec)")
    p.add_argument("--rate", help="shipped rate point")
    p.add_argument("--vvc-preset", default="faster")
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()
    quiet_libraries()
    configure_threads()
    img = Image.open(args.image).convert("RGB")
    codec = resolve_codec(args.model, rate=args.rate)
    enc = codec.encode(img)
    ours = codec.decode(enc.data).image
    vvc = encode_at(img, codec_spec("vvc", args.vvc_preset), enc.bpp)
    panels = [("original", img, ""),
              ("ResULIC small", ours, f"{len(enc.data)} B, {enc.bpp:.4f} bpp, {psnr(img, ours):.2f} dB"),
              ("VVC intra", vvc.image, f"{len(vvc.data)} B, {bpp_of(vvc, img):.4f} bpp, {psnr(img, vvc.image):.2f} dB")]
    w, h = img.size
    band = 28
    canvas = Image.new("RGB", (3 * w, h + band), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, picture, info) in enumerate(panels):
        canvas.paste(picture, (i * w, band))
        draw.text((i * w + 6, 7), f"{title}  {info}", fill="black")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    print(f"{out}: ours {len(enc.data)} B / VVC {len(vvc.data)} B; PSNR {psnr(img, ours):.2f} / {psnr(img, vvc.image):.2f} dB")


if __name__ == "__main__":
    main()
