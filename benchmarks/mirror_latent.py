"""Is TAEF2's latent mirror-symmetric? (Why crops with a cached latent are never mirrored.)

    python benchmarks/mirror_latent.py [--images ../shared/datasets/kodak] [--limit 4]

For each photo: PSNR of TAEF2's decode of its latent against the photo; PSNR of the decode of
the *mirrored* latent against the mirrored photo (what a mirrored training pair asked for); and
how far the mirrored latent is from the latent of the mirrored photo, as a share of the
latent's energy. Defaults to the bundled sample photos when no folder is given or found.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=REPO.parent / "shared/datasets/kodak")
    p.add_argument("--limit", type=int, default=4)
    args = p.parse_args(argv)

    import torch

    from resulic.images import image_to_tensor, list_images, open_image, sample_images
    from resulic.models.taef2 import TinyAutoencoder
    from resulic.services.runtime import configure_threads

    configure_threads()
    photos = ([(q.stem, open_image(q)) for q in list_images(args.images)] if args.images.is_dir() else sample_images())
    autoencoder = TinyAutoencoder.from_folder().eval()

    def psnr(a, b) -> float:
        return float(10 * torch.log10(1 / ((a.clamp(0, 1) - b) ** 2).mean()))

    print("| photo | latent dB | mirrored latent vs mirrored photo dB | distance to the mirrored photo's latent |")
    print("|---|---|---|---|")
    for name, img in photos[: args.limit]:
        x = image_to_tensor(img)[..., : img.height // 8 * 8, : img.width // 8 * 8]
        with torch.no_grad():
            z, z_of_mirror = autoencoder.encode(x), autoencoder.encode(x.flip(-1))
            plain = psnr(autoencoder.decode(z), x)
            mirrored = psnr(autoencoder.decode(z.flip(-1)), x.flip(-1))
        distance = float(((z_of_mirror - z.flip(-1)) ** 2).mean() / (z**2).mean())
        print(f"| {name} | {plain:.2f} | {mirrored:.2f} | {distance:.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
