"""The release gate: a candidate codec against the shipped one on held-out photos, through real
files, at every rate level; the full decode and the compressor alone (z_c -> TAEF2, no
diffusion) side by side.

    python benchmarks/compare_heldout.py --candidate ray_results/stage1-small-pixel/model \
        [--baseline platform/resulic/weights/small-codecs/variable] [--images data/photos/heldout] \
        [--level 0 14 28 42 85 127] [--max-side 768] [-o outputs/heldout]

    python benchmarks/compare_heldout.py --candidate-prior ray_results/stage0-small-long/model --level 0 14 28 45

(the second form judges a stage-0 prior: the baseline's own trained parts and files, decoded
through the new prior). Both models must be variable-rate (``--level``). For each photo and level: compress to bytes
(bpp from the file), decode (the full decode: S - 1 prior passes, then TAEF2) and decode z_c
alone through TAEF2; PSNR on RGB and ST-LPIPS (the real network of stlpips-pytorch, lower is
better). Prints the mean per level for each model, then the candidate's BD-rate against the
baseline (negative = fewer bits for the same quality) for PSNR and ST-LPIPS of the full decode,
then each level of either model against the other's curve at the same bpp, and a verdict that
fails a candidate behind anywhere or not reaching every baseline rate (a BD-rate averages over
the shared range and can hide a range where the candidate is behind). Writes ``<model>.json``
per model (CompressAI's results format) under ``-o``. A model's
results are reused from ``-o`` when they exist for the same images, levels and fingerprint
(``--fresh`` recomputes).

``jobs/build_dataset.py --hold-out NAME`` writes the held-out photos: never trained on at any
scale (the shipped model's own training set did not contain them either).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LEVELS = (0, 14, 28, 42, 85, 127)


def with_prior(folder: Path, prior: Path):
    """The codec of ``folder`` with another stage-0 prior (a backbone.source folder): the same
    trained parts and bitstreams, decoded through that prior — how a prior is judged before a
    release (its fingerprint is the new backbone's, not the folder's)."""
    from resulic.codec.codec import Codec
    from resulic.codec.store import folder_config, load_trained_parts
    from resulic.models.backbone import load_backbone

    config = folder_config(folder)
    config.backbone.source = str(prior.resolve())
    backbone = load_backbone(config.backbone)
    compressor, cdm = load_trained_parts(folder, config, backbone)
    return Codec(config, backbone, compressor, cdm, "cpu")


def score_model(folder: Path, images: list[tuple[str, "object"]], levels: list[int], prior: Path | None = None) -> dict:
    import torch
    from tqdm import tqdm

    from resulic.codec.store import load_codec
    from resulic.images import tensor_to_image
    from resulic.metrics.perceptual import build_st_lpips
    from resulic.evaluation.roundtrip import psnr

    codec = load_codec(folder) if prior is None else with_prior(folder, prior)
    if codec.config.rate_point.variable is None:
        raise SystemExit(f"error: {folder} is not a variable-rate model (--level needs one)")
    st_lpips = build_st_lpips()

    def perceptual(a, b) -> float:
        x, y = (torch.from_numpy(np.asarray(i, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1 for i in (a, b))
        with torch.no_grad():
            return float(st_lpips(x, y).mean())

    rows = {level: [] for level in levels}
    with tqdm(total=len(images) * len(levels), desc=folder.name, unit="file") as bar:
        for name, img in images:
            for level in levels:
                enc = codec.encode(img, level=level)
                full = codec.decode(enc.data).image
                container = codec.check_file(enc.data)[0]
                with torch.no_grad():
                    z_only = codec.backbone.decode(codec.decode_latent(container))[..., : img.height, : img.width]
                alone = tensor_to_image(z_only)
                rows[level].append({
                    "image": name, "bpp": enc.bpp, "psnr": psnr(img, full), "st-lpips": perceptual(img, full),
                    "psnr_zc": psnr(img, alone), "st-lpips_zc": perceptual(img, alone),
                })
                bar.update()
    means = {key: [float(np.mean([r[key] for r in rows[level]])) for level in levels]
             for key in ("bpp", "psnr", "st-lpips", "psnr_zc", "st-lpips_zc")}
    return {
        "name": folder.name, "description": f"{folder} at levels {levels}",
        "meta": {"fingerprint": codec.fingerprint.hex(),
                 "images": [n for n, _ in images], "levels": levels},
        "results": means, "per_image": {str(level): rows[level] for level in levels},
    }


# A point within 5 % in bpp of the other curve's end is compared with that end point: two
# curves that both start at ≈ 0.0116 bpp must not skip their lowest rate on a rounding hair.
REACH = 1.05


def at_equal_rate(base: dict, cand: dict, metric: str, reach: float = REACH) -> list[tuple[int, float, float, float]]:
    """For each candidate point inside the baseline's rate range (or within ``reach`` of its ends):
    (index, bpp, candidate's value, the baseline's value at that bpp, interpolated linearly in
    log bpp between its points, its end point beyond them). A BD-rate averages over the shared
    range and can hide a range where the candidate is behind; this says where. Swap the two
    curves to set each baseline point against the candidate's curve."""
    bpp = np.log(np.asarray(base["bpp"], dtype=float))
    order = np.argsort(bpp)
    quality = np.asarray(base[metric], dtype=float)[order]
    lo, hi = bpp[order][0] - np.log(reach), bpp[order][-1] + np.log(reach)
    rows = []
    for i, (b, q) in enumerate(zip(cand["bpp"], cand[metric])):
        x = float(np.log(b))
        if lo <= x <= hi:
            rows.append((i, float(b), float(q), float(np.interp(x, bpp[order], quality))))
    return rows


def behind(rows: list[tuple[int, float, float, float]], lower_is_better: bool) -> list[int]:
    """The candidate's points that are worse than the baseline at their own rate."""
    return [i for i, _, q, ref in rows if (q > ref if lower_is_better else q < ref)]


def verdict(base: dict, cand: dict, metrics: dict[str, bool]) -> dict[str, list[int]]:
    """Where the candidate loses, both ways round (``metrics``: name -> lower is better):
    ``behind`` its own points that are worse than the baseline's curve; ``behind_baseline``: the
    baseline's points where the candidate's curve is worse; ``unreached``: the baseline's points
    whose rate the candidate's curve does not reach (a release must cover every shipped rate)."""
    lagging, lagging_base, covered = set(), set(), set(range(len(base["bpp"])))
    for metric, lower in metrics.items():
        lagging |= set(behind(at_equal_rate(base, cand, metric), lower))
        reverse = at_equal_rate(cand, base, metric)  # the baseline's points against the candidate
        lagging_base |= set(behind(reverse, not lower))
        covered &= {j for j, *_ in reverse}
    unreached = sorted(set(range(len(base["bpp"]))) - covered)
    return {"behind": sorted(lagging), "behind_baseline": sorted(lagging_base - set(unreached)), "unreached": unreached}


def load_images(folder: Path, max_side: int):
    from resulic.images import list_images, open_image, shrink_to

    paths = list_images(folder)
    if not paths:
        raise SystemExit(f"error: {folder} holds no images (jobs/build_dataset.py --hold-out writes them)")
    return [(p.name, shrink_to(open_image(p), max_side)) for p in paths]


def prior_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted((folder / "unet").glob("*")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", type=Path, help="the trained-codec folder to judge (omit: baseline only)")
    p.add_argument("--baseline", type=Path, default=REPO / "platform/resulic/weights/small-codecs/variable",
                   help="the codec it must beat (default: the shipped variable-rate model)")
    p.add_argument("--images", type=Path, default=REPO / "data/photos/heldout", help="held-out photos")
    p.add_argument("--level", type=int, nargs="+", default=list(LEVELS), help="rate levels 0..127")
    p.add_argument("--max-side", type=int, default=768, help="downscale the photos to this longer side first")
    p.add_argument("-o", "--output", type=Path, default=REPO / "outputs/heldout", help="results folder")
    p.add_argument("--fresh", action="store_true", help="recompute results already in the output folder")
    p.add_argument("--candidate-prior", type=Path, metavar="DIR",
                   help="decode the candidate (default: the baseline's folder) through this stage-0 prior "
                        "(a stage-0 run's model folder): judges a prior")
    args = p.parse_args(argv)
    if args.candidate_prior is not None:
        if not (args.candidate_prior / "unet").is_dir():
            p.error(f"--candidate-prior {args.candidate_prior}: not a stage-0 prior folder (no unet/)")
        args.candidate = args.candidate or args.baseline
    if any(not 0 <= level <= 127 for level in args.level):
        p.error("--level: each level is in 0..127")
    for folder in filter(None, (args.baseline, args.candidate)):
        if not (folder / "manifest.json").is_file():
            p.error(f"{folder}: not a trained-codec folder (no manifest.json)")

    from resulic.errors import ResulicError
    from resulic.metrics.bd_rate import BDRateError, Curve, bd_rate_curves
    from resulic.services.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads()
    images = load_images(args.images, args.max_side)
    args.output.mkdir(parents=True, exist_ok=True)
    results = {}
    for role, folder in (("baseline", args.baseline), ("candidate", args.candidate)):
        if folder is None:
            continue
        manifest = json.loads((folder / "manifest.json").read_text())
        prior = args.candidate_prior if role == "candidate" else None
        # A prior is named by its weights, not its folder: every stage-0 run's folder is "model".
        key = manifest.get("fingerprint", folder.name) + (f"-prior-{prior_digest(prior)}" if prior else "")
        out = args.output / f"{role}-{key}.json"
        cached = json.loads(out.read_text()) if out.is_file() and not args.fresh else None
        if cached and cached["meta"]["images"] == [n for n, _ in images] and cached["meta"]["levels"] == args.level:
            results[role] = cached
        else:
            try:
                results[role] = score_model(folder, images, args.level, prior)
            except ResulicError as exc:  # a folder or prior that does not load: one line, no traceback
                print(f"error: {role}: {exc}", file=sys.stderr)
                return 2
            out.write_text(json.dumps(results[role], indent=2) + "\n")
        print(f"\n{role}: {folder}{f' through the prior {prior}' if prior else ''} ({len(images)} photos, longer side {args.max_side} px; {out})")
        r = results[role]["results"]
        print("| level | bpp | PSNR dB | PSNR z_c alone | ST-LPIPS | ST-LPIPS z_c alone |")
        print("|---|---|---|---|---|---|")
        for i, level in enumerate(args.level):
            print(f"| {level} | {r['bpp'][i]:.4f} | {r['psnr'][i]:.2f} | {r['psnr_zc'][i]:.2f} | "
                  f"{r['st-lpips'][i]:.3f} | {r['st-lpips_zc'][i]:.3f} |")
    if "candidate" in results:
        print("\nBD-rate of the candidate against the baseline (full decode; negative = fewer bits):")
        base, cand = results["baseline"]["results"], results["candidate"]["results"]
        for metric in ("psnr", "st-lpips"):
            anchor = Curve("baseline", np.array(base["bpp"]), np.array(base[metric]))
            test = Curve("candidate", np.array(cand["bpp"]), np.array(cand[metric]))
            try:
                bd = bd_rate_curves(anchor, test, metric)
            except BDRateError as exc:  # e.g. a curve that is not monotonic: say so, per metric
                print(f"  {metric}: no BD-rate ({exc})")
                continue
            print(f"  {metric}: {bd.value:+.1f} % over {bd.overlap_fraction:.0%} of the quality range")
        print("\nAt equal rate (the baseline interpolated in log bpp at each candidate level inside its range, ±5 %):")
        print("| level | bpp | PSNR dB | baseline | ST-LPIPS | baseline |")
        print("|---|---|---|---|---|---|")
        psnr_rows, lpips_rows = at_equal_rate(base, cand, "psnr"), at_equal_rate(base, cand, "st-lpips")
        for (i, b, q, ref), (_, _, lq, lref) in zip(psnr_rows, lpips_rows):
            print(f"| {args.level[i]} | {b:.4f} | {q:.2f} | {ref:.2f} | {lq:.3f} | {lref:.3f} |")
        print("\nThe baseline's levels against the candidate's curve (interpolated in log bpp):")
        print("| baseline level | bpp | PSNR dB | candidate | ST-LPIPS | candidate |")
        print("|---|---|---|---|---|---|")
        for (j, b, q, ref), (_, _, lq, lref) in zip(at_equal_rate(cand, base, "psnr"), at_equal_rate(cand, base, "st-lpips")):
            print(f"| {args.level[j]} | {b:.4f} | {q:.2f} | {ref:.2f} | {lq:.3f} | {lref:.3f} |")
        found = verdict(base, cand, {"psnr": False, "st-lpips": True})
        named = lambda indices: ", ".join(str(args.level[i]) for i in indices)  # noqa: E731
        problems = [f"behind the baseline at level(s) {named(found['behind'])}"] if found["behind"] else []
        if found["behind_baseline"]:
            problems.append(f"behind at the baseline's level(s) {named(found['behind_baseline'])}")
        if found["unreached"]:
            problems.append("does not reach the baseline's rate at its level(s) " + ", ".join(
                f"{args.level[j]} ({base['bpp'][j]:.4f} bpp)" for j in found["unreached"]))
        print("\nverdict: " + ("; ".join(problems) if problems else "beats the baseline at every rate the baseline covers"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
