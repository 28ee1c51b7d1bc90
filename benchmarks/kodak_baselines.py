"""Classical codecs on Kodak at the small profile's targets, with ST-LPIPS per image, for the
RD comparison in docs/small-profile.md.

    python benchmarks/kodak_baselines.py --codec jpeg webp avif jpeg2000 -o outputs/kodak/baselines
    python benchmarks/kodak_baselines.py --codec vvc --vvc-preset faster -o outputs/kodak/baselines
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resulic.evaluation.baselines import BaselinesConfig, run_baselines_job
from resulic.services.runtime import configure_threads, quiet_libraries

KODAK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "kodak"
TARGETS = [0.02, 0.05, 0.1, 0.2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", default=str(KODAK))
    p.add_argument("--codec", nargs="+", default=["jpeg", "webp", "avif", "jpeg2000", "vvc"])
    p.add_argument("--bpp", type=float, nargs="+", default=TARGETS)
    p.add_argument("--vvc-preset", default="faster")
    p.add_argument("--max-images", type=int)
    p.add_argument("--no-st-lpips", action="store_true", help="PSNR and MS-SSIM only (ST-LPIPS costs most of a point)")
    p.add_argument("--workers", type=int, default=1, help="processes bisecting at once")
    p.add_argument("-o", "--output", default="outputs/kodak/baselines")
    args = p.parse_args()
    quiet_libraries()
    configure_threads()
    cfg = BaselinesConfig(images=args.images, dataset="kodak", codecs=args.codec, target_bpp=args.bpp,
                          vvc_preset=args.vvc_preset, learned_metrics=[] if args.no_st_lpips else ["st-lpips"], max_images=args.max_images,
                          output_dir=args.output, save_decoded=True, workers=args.workers)
    print(run_baselines_job(cfg).table)


if __name__ == "__main__":
    main()
