"""What plain transform coding of TAEF2's latent reaches: the bar a trained compressor must clear.

    python benchmarks/klt_bound.py [--manifest data/photos/manifest.jsonl] [--images data/photos/heldout]
                                   [--kodak ../shared/datasets/kodak] [--max-side 768] [--dims 96 192]

The KLT (principal components of 4x4 patches of the 32-channel latent, estimated on the
training latents exactly as a compressor with ``linear_transform`` starts from them) keeps
``--dims`` components of each patch; they are scaled by a gain, rounded, and scaled back. The
rate is each component's empirical entropy over the photo (an oracle static model fitted to
the photo itself: optimistic in that, pessimistic in using no spatial context, as a hyperprior
does). PSNR is on RGB after TAEF2's decoder. Rounds 3 and 4 of training (docs/small-profile.md)
stayed below this bar at every rate; round 5 starts from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GAINS = (0.125, 0.25, 0.5, 1.0, 2.0)


def entropy_bits(symbols) -> float:
    """Bits of each column of ``symbols`` (n, dims) under its own empirical distribution."""
    import torch

    total = 0.0
    for column in symbols.T:
        _, counts = torch.unique(column, return_counts=True)
        p = counts.double() / counts.sum()
        total += float(-(counts * torch.log2(p)).sum())
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, default=REPO / "data/photos/manifest.jsonl",
                   help="training manifest whose latents the KLT is estimated from (jobs/build_dataset.py)")
    p.add_argument("--images", type=Path, action="append", default=None,
                   help="folders of photos to score (default: the held-out photos and, when present, Kodak)")
    p.add_argument("--max-side", type=int, default=768, help="downscale the photos to this longer side first")
    p.add_argument("--dims", type=int, nargs="+", default=[96, 192], help="components kept (M)")
    p.add_argument("--gain", type=float, nargs="+", default=list(GAINS), help="quantiser gains (step = 1 / gain)")
    args = p.parse_args(argv)
    if not args.manifest.is_file():
        p.error(f"{args.manifest}: no training manifest (python jobs/build_dataset.py -o data/photos)")
    folders = args.images or [f for f in (REPO / "data/photos/heldout", REPO.parent / "shared/datasets/kodak") if f.is_dir()]
    if not folders:
        p.error("no photos to score: give --images")

    import torch

    from resulic.config import CompressorConfig
    from resulic.data.dataset import read_manifest
    from resulic.images import image_to_tensor, list_images, open_image, shrink_to
    from resulic.models.compressor import LatentCompressor
    from resulic.models.taef2 import TinyAutoencoder
    from resulic.services.runtime import configure_threads, quiet_libraries
    from resulic.train.checkpoint import klt_latents

    quiet_libraries()
    configure_threads()
    autoencoder = TinyAutoencoder.from_folder().eval()
    rows = [{"path": r.path, "latent": r.latent} for r in read_manifest(args.manifest)]
    if not all(row["latent"] for row in rows):
        p.error(f"{args.manifest}: the KLT is estimated from cached latents; rebuild without --no-latents")

    print("| photos | M | gain | bpp | PSNR dB |")
    print("|---|---|---|---|---|")
    for folder in folders:
        photos = [shrink_to(open_image(path), args.max_side) for path in list_images(folder)]
        with torch.no_grad():
            pixels = [image_to_tensor(img)[..., : img.height // 32 * 32, : img.width // 32 * 32] for img in photos]
            latents = [autoencoder.encode(x) for x in pixels]
        for dims in args.dims:
            # Groups only shape the entropy model, which this bound does not use.
            compressor = LatentCompressor(CompressorConfig(latent_channels=32, latent_dim=dims, groups=[dims],
                                                           channel_context=[8, 8], linear_transform=True))
            compressor.init_linear_transform(klt_latents(rows, None))
            for gain in args.gain:
                bits, area, scores = 0.0, 0, []
                with torch.no_grad():
                    for x, z in zip(pixels, latents):
                        y = torch.round(compressor.linear_analysis(z) * gain)
                        bits += entropy_bits(y[0].flatten(1).T)
                        area += x.shape[-1] * x.shape[-2]
                        decoded = autoencoder.decode(compressor.linear_synthesis(y / gain)).clamp(0, 1)
                        scores.append(float(10 * torch.log10(1 / ((decoded - x) ** 2).mean())))
                print(f"| {folder.name} ({len(photos)}) | {dims} | {gain:g} | {bits / area:.4f} | {np.mean(scores):.2f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
