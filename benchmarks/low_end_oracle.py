"""How much of a variable-rate model's loss at a level is its picture's colour? (Round 7's probe.)

    python benchmarks/low_end_oracle.py --model ray_results/stage1-small-klt-gains/model \
        [--images data/photos/heldout] [--level 0 14] [--max-side 768]

For each level, over the photos: bpp of the real file and PSNR of z_c decoded by TAEF2 alone
(no diffusion), then two oracles that a decoder does not have: the decoded picture with each RGB
channel's mean moved to the photo's, and z_c with each latent channel's mean moved to the photo's
latent's before decoding. A large gap between z_c and the oracles means the model loses the
picture's colour; a small one, that what is missing is structure.
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
    p.add_argument("--model", type=Path, default=REPO / "platform/resulic/weights/small-codecs/variable",
                   help="a variable-rate codec folder (default: the shipped variable point)")
    p.add_argument("--images", type=Path, default=REPO / "data/photos/heldout",
                   help="photos to code (jobs/build_dataset.py --hold-out writes these)")
    p.add_argument("--level", type=int, nargs="+", default=[0, 14], help="rate levels 0..127")
    p.add_argument("--max-side", type=int, default=768, help="photos are shrunk to this longer side")
    args = p.parse_args(argv)

    import torch

    from resulic.codec.store import load_codec
    from resulic.evaluation.roundtrip import psnr
    from resulic.images import image_to_tensor, list_images, open_image, shrink_to, tensor_to_image
    from resulic.services.runtime import configure_threads

    configure_threads()
    paths = list_images(args.images) if args.images.is_dir() else []
    if not paths:
        raise SystemExit(f"error: {args.images} holds no images (jobs/build_dataset.py --hold-out writes them)")
    photos = [shrink_to(open_image(q), args.max_side) for q in paths]
    codec = load_codec(args.model)
    if codec.config.rate_point.variable is None:
        raise SystemExit(f"error: {args.model} is not a variable-rate model (--level needs one)")

    print("| level | bpp | PSNR z_c alone | RGB-mean oracle | latent-mean oracle |")
    print("|---|---|---|---|---|")
    for level in args.level:
        rows = []
        for img in photos:
            enc = codec.encode(img, level=level)
            with torch.no_grad():
                z_c = codec.decode_latent(codec.check_file(enc.data)[0])
                decoded = np.asarray(tensor_to_image(codec.backbone.decode(z_c)[..., : img.height, : img.width]), float)
                photo = np.asarray(img, dtype=float)
                recoloured = np.clip(decoded - (decoded - photo).mean(axis=(0, 1)), 0, 255)
                z_0 = codec.backbone.encode(image_to_tensor(img))
                z_c = z_c[..., : z_0.shape[-2], : z_0.shape[-1]]
                moved = z_c - z_c.mean(dim=(-2, -1), keepdim=True) + z_0.mean(dim=(-2, -1), keepdim=True)
                oracle = tensor_to_image(codec.backbone.decode(moved)[..., : img.height, : img.width])
            rgb_oracle = 10 * np.log10(255**2 / ((recoloured - photo) ** 2).mean())
            rows.append((enc.bpp, 10 * np.log10(255**2 / ((decoded - photo) ** 2).mean()), rgb_oracle, psnr(img, oracle)))
        bpp, alone, rgb, latent = np.mean(rows, axis=0)
        print(f"| {level} | {bpp:.4f} | {alone:.2f} | {rgb:.2f} | {latent:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
