"""Put trained parts of the small profile into the package (what a clone ships and uses).

    python jobs/release_small.py prior ray_results/stage0-small/model
    python jobs/release_small.py codecs --point r1=<codec folder> --point r2=<...> --default r2 \
        [--keep v1=platform/resulic/weights/small-codecs/variable]

'prior' copies a stage-0 run's prior to resulic/weights/small-prior (float16 storage; train the
codec stages on the released prior, backbone.source 'bundled'). 'codecs' writes the chosen
trained codecs, one per rate point in rate order, to resulic/weights/small-codecs with an
index.json (float16 weights; fingerprints recomputed). --keep lists an earlier shipped point
as it is, under a new name, so the files it wrote still decode; --note replaces the index's
provenance note (other provenance entries are kept).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from resulic.errors import ResulicError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    pr = sub.add_parser("prior", help="release a stage-0 prior")
    pr.add_argument("folder", type=Path, help="a stage-0 run's model folder (with unet/)")
    co = sub.add_parser("codecs", help="release trained codecs as the shipped rate points")
    co.add_argument("--point", action="append", required=True, metavar="NAME=FOLDER", help="in rate order")
    co.add_argument("--keep", action="append", default=[], metavar="NAME=FOLDER",
                    help="an earlier shipped point kept as it is (same fingerprint) under NAME, so its files still decode")
    co.add_argument("--default", required=True, help="the rate point commands use without --rate")
    co.add_argument("--note", default="", help="provenance note kept in index.json (e.g. the sweep's MLflow run)")
    args = p.parse_args(argv)
    try:
        return release_prior(args.folder) if args.what == "prior" else release_codecs(args)
    except ResulicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def release_prior(folder: Path) -> int:
    import torch
    from diffusers import UNet2DConditionModel

    from resulic.models.backbone import PRIOR_SUBFOLDER, SMALL_PRIOR

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder=PRIOR_SUBFOLDER, use_safetensors=True)
    shutil.rmtree(SMALL_PRIOR, ignore_errors=True)
    unet.to(torch.float16).save_pretrained(SMALL_PRIOR / PRIOR_SUBFOLDER, safe_serialization=True)
    info = folder / "training.json"
    if info.is_file():
        shutil.copy(info, SMALL_PRIOR / "training.json")  # lineage: the stage-0 run
    print(f"prior from {folder} -> {SMALL_PRIOR} (float16)")
    return 0


def release_codecs(args) -> int:
    from resulic.codec import shipped

    def named(option: str, items: list[str]) -> list[tuple[str, Path]]:
        pairs = []
        for item in items:
            name, sep, folder = item.partition("=")
            if not sep:
                raise ResulicError(f"{option} {item}: expected NAME=FOLDER")
            pairs.append((name, Path(folder)))
        return pairs

    previous = shipped.index().get("provenance", {}) if (shipped.SHIPPED_DIR / shipped.INDEX).is_file() else {}
    provenance = {**previous, "note": args.note} if args.note else previous
    data = shipped.release(named("--point", args.point), args.default, provenance, kept=named("--keep", args.keep))
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
