"""Original | ours | VVC at equal bytes (VVC at the largest size not above ours), side by side,
labelled with bytes, bpp, PSNR and ST-LPIPS — the picture in README.md and docs/small-profile.md.

    python benchmarks/compare_picture.py ../shared/datasets/kodak/kodim23.png --rate r2 -o docs/img/kodim23.png
    python benchmarks/compare_picture.py ../shared/datasets/kodak/kodim23.png --bpp 0.03 -o docs/img/kodim23-0.03.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from resulic.evaluation.baselines import bpp_of, codec_spec, encode_at
from resulic.codec.rate_control import encode_to_bpp
from resulic.codec.resolve import resolve_codec
from resulic.images import open_image
from resulic.errors import ResulicError
from resulic.metrics.suite import MetricSuite
from resulic.services.runtime import configure_threads, quiet_libraries


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("image")
    p.add_argument("--model", help="codec folder (default: the shipped codec)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--rate", help="shipped rate point")
    which.add_argument("--level", type=int, help="rate level of a variable-rate model")
    which.add_argument("--bpp", type=float, help="bpp target of a variable-rate model (its rate search)")
    p.add_argument("--vvc-preset", default="faster")
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()
    quiet_libraries()
    configure_threads()
    try:
        img = open_image(args.image)
        codec = resolve_codec(args.model, rate=args.rate, variable=args.level is not None or args.bpp is not None)
        enc = encode_to_bpp(codec, img, args.bpp)[0] if args.bpp is not None else codec.encode(img, level=args.level)
    except (ResulicError, ValueError) as exc:  # a bad image, model, level or target: one line
        raise SystemExit(f"error: {exc}") from None
    ours = codec.decode(enc.data).image
    vvc = encode_at(img, codec_spec("vvc", args.vvc_preset), enc.bpp)
    suite = MetricSuite(names=["psnr", "st-lpips"])

    def label(data: bytes, bpp: float, picture: Image.Image) -> str:
        scores = suite(img, picture).scores
        return f"{len(data)} B, {bpp:.4f} bpp, {scores['psnr-rgb']:.2f} dB, ST-LPIPS {scores['st-lpips']:.3f}"

    panels = [("original", img, ""),
              ("ResULIC small", ours, label(enc.data, enc.bpp, ours)),
              ("VVC intra", vvc.image, label(vvc.data, bpp_of(vvc, img), vvc.image))]
    w, h = img.size
    band = 28
    canvas = Image.new("RGB", (3 * w, h + band), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, picture, info) in enumerate(panels):
        canvas.paste(picture, (i * w, band))
        draw.text((i * w + 6, 7), f"{title}  {info}", fill="black")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, quality=92)  # JPEG: the docs' pictures; ignored for PNG
    print(f"{out}: ours {panels[1][2]} / VVC {panels[2][2]}")


if __name__ == "__main__":
    main()
