"""Build a training manifest of real photos anyone can get, with licenses and cached latents.

    python jobs/build_dataset.py -o data/photos --hold-out Kleiber --hold-out sklearn-flower
                                                                    # Debian wallpapers + wheel photos
    python jobs/build_dataset.py -o data/photos --folder ~/pics --folder-license CC0-1.0
    python jobs/build_dataset.py -o data/photos --no-debian --model configs/model/small.yaml

Writes data/photos/{images,latents}/, manifest.jsonl (path, caption, latent, license, source,
sha256, group, scale per line: data.source of a training config), heldout/ + heldout.jsonl (the
--hold-out photos, never trained on) and summary.json (licenses, pixels, what was dropped). Each
photo is written at full resolution, 1/2 and 1/4 (--scales), its longest side capped by --max-side.
Photos equal to an image under --exclude (default: the Kodak folder when present) are dropped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resulic.errors import ResulicError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument("--no-debian", action="store_true", help="skip the Debian wallpaper packages (apt-get download)")
    p.add_argument("--no-edje", action="store_true",
                   help="skip the enlightenment-data photos (a 400 MB package; needs 'eet' from libeet-bin)")
    p.add_argument("--no-wheels", action="store_true", help="skip the scikit-image / scikit-learn photos")
    p.add_argument("--folder", type=Path, action="append", default=[], help="also a folder of your photos")
    p.add_argument("--folder-license", default="unknown", help="the license of --folder photos (recorded)")
    p.add_argument("--exclude", type=Path, action="append", default=None,
                   help="test-set folder whose images must never be training data (repeatable)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 0.25],
                   help="scales of each photo to write (1 = full resolution; default: 1 0.5 0.25)")
    p.add_argument("--max-side", type=int, default=2048,
                   help="cap on the longer side at any scale (the encoder's time and memory grow with it: "
                        "about 3 GB at 2048)")
    p.add_argument("--min-side", type=int, default=256, help="skip a scale whose shorter side is below this")
    p.add_argument("--hold-out", action="append", default=[], metavar="NAME",
                   help="photos whose name contains NAME are written to heldout/ and never trained on (repeatable)")
    p.add_argument("--model", default="configs/model/small.yaml", help="model YAML whose autoencoder encodes the latents")
    p.add_argument("--no-latents", action="store_true", help="write images only (training then encodes every crop)")
    args = p.parse_args(argv)
    try:
        return run(args)
    except ResulicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    from resulic.data import photos
    from resulic.services.runtime import configure_threads

    configure_threads()
    sources = []
    if not args.no_debian:
        sources += photos.debian_photos(args.output / "_debs")
    if not args.no_debian and not args.no_edje:
        sources += photos.edje_photos(args.output / "_debs")
    if not args.no_wheels:
        sources += photos.wheel_photos()
    for folder in args.folder:
        sources += photos.folder_photos(folder, args.folder_license)
    exclude = args.exclude if args.exclude is not None else [Path(__file__).resolve().parents[2] / "shared/datasets/kodak"]
    summary = photos.build_manifest(
        sources, args.output, max_side=args.max_side, min_side=args.min_side, scales=args.scales,
        encode=None if args.no_latents else _encoder(args.model), exclude=exclude, hold_out=args.hold_out,
    )
    print(f"[data] {summary['records']} records from {summary['photos']} photos "
          f"({summary['pixels'] / 1e6:.0f} Mpixel) -> {args.output / 'manifest.jsonl'}")
    for path in summary["held_out"]:
        print(f"[data] held out: {args.output / path}")
    for lic, count in sorted(summary["licenses"].items()):
        print(f"[data]   {count:4d}  {lic}")
    for line in summary["dropped"]:
        print(f"[data] dropped {line}")
    return 0


def _encoder(model_yaml: str):
    import torch

    from resulic.config import ModelConfig, load_config
    from resulic.images import image_to_tensor
    from resulic.models.backbone import load_backbone

    config = load_config(ModelConfig, model_yaml, ["backbone.source=random"])  # the prior is not needed
    backbone = load_backbone(config.backbone)

    @torch.no_grad()
    def encode(img):
        return backbone.encode(image_to_tensor(img))[0].numpy()

    return encode


if __name__ == "__main__":
    sys.exit(main())
