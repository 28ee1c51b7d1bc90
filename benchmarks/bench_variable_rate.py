"""One model for every rate (issue 17), measured on real files:

1. RD of the variable-rate model at its anchor levels against the per-point models (the per-image
   JSONs of `resulic evaluate` on the same images), BD-rate on PSNR and ST-LPIPS;
2. one-pass decoding (one network evaluation) against the default decode: time and BD-rate;
3. `--bpp` rate control: achieved/target per image and target, tries and encode time;
4. memory of a process that holds the one model against one that holds the four per-point ones;
5. with --evaluated (no encoding): an existing `resulic evaluate --level` output of the variable
   model against --per-point on the images both hold — BD-rates and the gap at equal bpp.

    python benchmarks/bench_variable_rate.py --model platform/resulic/weights/small-codecs/variable \
        --images ../shared/datasets/kodak --max-images 6 --per-point outputs/kodak/ours -o outputs/variable
    python benchmarks/bench_variable_rate.py --evaluated outputs/kodak24/variable --per-point outputs/kodak/ours
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ANCHOR_LEVELS = (0, 42, 85, 127)
MEMORY_SNIPPET = """
import gc, sys
from resulic.codec import shipped
codecs = [shipped.load(name) for name in sys.argv[1:]]
gc.collect()
print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')))
"""


def _images(folder: Path, limit: int | None) -> list[Path]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return paths[:limit] if limit else paths


def rd(codec, paths: list[Path], levels, metrics) -> dict:
    """Per level: mean bpp, PSNR, ST-LPIPS of the default and the one-pass decode, and times."""
    from PIL import Image

    rows = {lv: [] for lv in levels}
    for i, path in enumerate(paths):
        image = Image.open(path).convert("RGB")
        latent = codec.latent_of(image)
        for lv in levels:
            enc = codec.encode(image, level=lv, latent=latent)
            row = {"image": path.name, "bpp": enc.bpp}
            for mode, one_pass in (("default", False), ("one_pass", True)):
                t0 = time.perf_counter()
                out = codec.decode(enc.data, one_pass=one_pass)
                row[f"{mode}_seconds"] = time.perf_counter() - t0
                row[f"{mode}_evaluations"] = out.network_evaluations
                scores = metrics(image, out.image).scores
                row[f"{mode}_psnr"], row[f"{mode}_st-lpips"] = scores["psnr-rgb"], scores["st-lpips"]
            rows[lv].append(row)
            print(f"  [{i + 1}/{len(paths)}] {path.name} level {lv}: {row['bpp']:.4f} bpp, "
                  f"{row['default_psnr']:.2f} dB ({row['default_seconds']:.1f} s), one-pass "
                  f"{row['one_pass_psnr']:.2f} dB ({row['one_pass_seconds']:.1f} s)", flush=True)
    return {lv: {k: float(np.mean([r[k] for r in rs])) for k in rs[0] if k != "image"} | {"rows": rs}
            for lv, rs in rows.items()}


def per_point(folder: Path, names: set[str]) -> dict:
    """The per-point models' means over the same images (``resulic evaluate``'s per-image JSONs)."""
    per = [json.loads(p.read_text()) for p in sorted((folder / "per_image").glob("*.json")) if p.stem in names]
    if len(per) != len(names):
        raise SystemExit(f"{folder}: has {len(per)} of the {len(names)} images measured here")
    res = per[0]["results"]
    n = len(res["bpp"])
    key = {"psnr": "psnr-rgb", "st-lpips": next(k for k in res if k.startswith("st-lpips"))}
    return {"bpp": [float(np.mean([p["results"]["bpp"][i] for p in per])) for i in range(n)],
            **{m: [float(np.mean([p["results"][k][i] for p in per])) for i in range(n)] for m, k in key.items()}}


def bd(anchor: dict, test: dict, metric: str) -> str:
    """BD-rate (%) of ``test`` against ``anchor`` ({"bpp": [...], metric: [...]}), or why not."""
    from resulic.errors import ResulicError
    from resulic.metrics.bd_rate import bd_rate

    try:
        res = bd_rate({"name": "anchor", "results": anchor}, {"name": "test", "results": test}, metric)
    except ResulicError as exc:
        return f"n/a ({str(exc).splitlines()[0]})"
    return f"{res.value:+.1f} (overlap {res.overlap_fraction:.0%})" if np.isfinite(res.value) else "n/a (no overlap)"


def gaps(anchor: dict, test: dict, metric: str) -> tuple[float, float] | None:
    """Smallest and largest ``test`` − ``anchor`` in ``metric``, both curves interpolated linearly
    in bpp, at every bpp of either curve inside the range both cover (None: no shared range)."""
    lo, hi = max(min(anchor["bpp"]), min(test["bpp"])), min(max(anchor["bpp"]), max(test["bpp"]))
    at = sorted(b for b in anchor["bpp"] + test["bpp"] if lo <= b <= hi)
    if not at:
        return None
    diff = np.interp(at, test["bpp"], test[metric]) - np.interp(at, anchor["bpp"], anchor[metric])
    return float(diff.min()), float(diff.max())


def compare_evaluated(evaluated: Path, per_point_dir: Path) -> dict:
    """An existing ``resulic evaluate --level`` output of the variable model against the
    per-point models' output, on the images both hold: means, BD-rates, interpolated gaps."""
    names = {p.stem for p in (evaluated / "per_image").glob("*.json")} & \
            {p.stem for p in (per_point_dir / "per_image").glob("*.json")}
    if not names:
        raise SystemExit(f"{evaluated} and {per_point_dir} share no image")
    ours, pp = per_point(evaluated, names), per_point(per_point_dir, names)
    print(f"variable ({evaluated}) against the per-point models ({per_point_dir}) on {len(names)} images: "
          f"{', '.join(sorted(names))}\n\n| model | bpp | PSNR dB | ST-LPIPS |\n|---|---|---|---|")
    for label, curve in (("variable", ours), ("per-point", pp)):
        for i in range(len(curve["bpp"])):
            print(f"| {label} | {curve['bpp'][i]:.4f} | {curve['psnr'][i]:.2f} | {curve['st-lpips'][i]:.4f} |")
    report = {"images": sorted(names), "variable": ours, "per_point": pp, "bd_rate": {}, "gaps": {}}
    print("\n| variable − per-point | BD-rate % (negative = fewer bits) | gap at equal bpp, min / max |\n|---|---|---|")
    for m in ("psnr", "st-lpips"):
        report["bd_rate"][m], report["gaps"][m] = bd(pp, ours, m), gaps(pp, ours, m)
        g = report["gaps"][m]
        print(f"| {m} | {report['bd_rate'][m]} | {'n/a' if g is None else f'{g[0]:+.3f} / {g[1]:+.3f}'} |")
    return report


def bpp_control(codec, paths: list[Path], targets) -> list[dict]:
    from PIL import Image

    from resulic.codec.rate_control import encode_to_bpp

    rows = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        t0 = time.perf_counter()
        codec.encode(image)
        plain = time.perf_counter() - t0
        for target in targets:
            t0 = time.perf_counter()
            try:
                result, search = encode_to_bpp(codec, image, target)
            except ValueError as exc:
                rows.append({"image": path.name, "target": target, "error": str(exc)})
                continue
            rows.append({"image": path.name, "target": target, "bpp": result.bpp, "ratio": result.bpp / target,
                         "level": search.level, "encodes": search.encodes,
                         "seconds": time.perf_counter() - t0, "plain_encode_seconds": plain})
        print(f"  {path.name}: " + ", ".join(f"{r['target']}: {r.get('ratio', float('nan')):.3f}" for r in rows[-len(targets):]),
              flush=True)
    return rows


def memory(points: list[list[str]], repeats: int) -> dict:
    out = {}
    for names in points:
        samples = []
        for _ in range(repeats):
            proc = subprocess.run([sys.executable, "-c", MEMORY_SNIPPET, *names], capture_output=True, text=True,
                                  check=True)
            samples.append(int(proc.stdout.strip().splitlines()[-1]) / 1024)
        out[" + ".join(names)] = statistics.median(samples)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="the variable-rate codec folder (required unless --evaluated)")
    p.add_argument("--images", help="image folder (Kodak; required unless --evaluated)")
    p.add_argument("--max-images", type=int, help="the first N images for the RD part (all for --bpp)")
    p.add_argument("--levels", type=int, nargs="+", default=list(ANCHOR_LEVELS))
    p.add_argument("--per-point", help="`resulic evaluate` output of the per-point models on the same images")
    p.add_argument("--targets", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    p.add_argument("--skip", nargs="*", default=[], choices=["rd", "bpp", "memory"])
    p.add_argument("--memory-points", nargs="+", default=["variable", "r1,r2,r3,r4"],
                   help="shipped point sets to load in one process each (comma-separated)")
    p.add_argument("--evaluated", help="instead of measuring: compare this `resulic evaluate --level` output of the "
                                       "variable model with --per-point on the images both hold")
    p.add_argument("-o", "--output", default="outputs/variable")
    args = p.parse_args(argv)

    if args.evaluated:
        if not args.per_point:
            p.error("--evaluated needs --per-point")
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        report = compare_evaluated(Path(args.evaluated), Path(args.per_point))
        (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {out / 'compare.json'}")
        return 0

    if not (args.model and args.images):
        p.error("--model and --images are required (unless --evaluated)")
    from resulic.codec.store import load_codec
    from resulic.metrics.suite import MetricSuite

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    codec = load_codec(Path(args.model))
    paths = _images(Path(args.images), None)
    report: dict = {"model": args.model, "fingerprint": codec.fingerprint.hex()}

    if "rd" not in args.skip:
        rd_paths = paths[: args.max_images] if args.max_images else paths
        print(f"RD: {len(rd_paths)} images x levels {args.levels} (default and one-pass decodes)", flush=True)
        curve = rd(codec, rd_paths, args.levels, MetricSuite(["psnr", "st-lpips"]))
        report["rd"] = {str(lv): {k: v for k, v in c.items() if k != "rows"} for lv, c in curve.items()}
        report["rd_rows"] = {str(lv): c["rows"] for lv, c in curve.items()}
        ours = {k: [curve[lv][k] for lv in args.levels] for k in next(iter(curve.values())) if k != "rows"}
        print("\n| level | bpp | PSNR dB | ST-LPIPS | decode s | one-pass PSNR | one-pass ST-LPIPS | one-pass s |")
        print("|---|---|---|---|---|---|---|---|")
        for lv in args.levels:
            c = curve[lv]
            print(f"| {lv} | {c['bpp']:.4f} | {c['default_psnr']:.2f} | {c['default_st-lpips']:.4f} | "
                  f"{c['default_seconds']:.2f} | {c['one_pass_psnr']:.2f} | {c['one_pass_st-lpips']:.4f} | "
                  f"{c['one_pass_seconds']:.2f} |")
        ratio = statistics.median(r["default_seconds"] / r["one_pass_seconds"]
                                  for c in curve.values() for r in c["rows"])
        default = {"bpp": ours["bpp"], "psnr": ours["default_psnr"], "st-lpips": ours["default_st-lpips"]}
        one_pass = {"bpp": ours["bpp"], "psnr": ours["one_pass_psnr"], "st-lpips": ours["one_pass_st-lpips"]}
        bds = {f"one-pass vs default, {m}": bd(default, one_pass, m) for m in ("psnr", "st-lpips")}
        if args.per_point:
            pp = per_point(Path(args.per_point), {p.stem for p in rd_paths})
            report["per_point"] = pp
            bds.update({f"variable vs per-point, {m}": bd(pp, default, m) for m in ("psnr", "st-lpips")})
        report["bd_rate"], report["decode_time_ratio_default_over_one_pass"] = bds, ratio
        print(f"\ndecode time, default / one-pass (median over files): {ratio:.2f}x")
        print("\n| BD-rate (%, negative = fewer bits) | value |\n|---|---|")
        for k, v in bds.items():
            print(f"| {k} | {v} |")

    if "bpp" not in args.skip:
        print(f"\n--bpp: {len(paths)} images x targets {args.targets}", flush=True)
        rows = bpp_control(codec, paths, args.targets)
        report["bpp_control"] = rows
        print("\n| target bpp | images | in −10 %…+5 % | achieved/target min / median / max | tries (median) | "
              "encode s (median) | plain encode s (median) | errors |")
        print("|---|---|---|---|---|---|---|---|")
        for t in args.targets:
            ok = [r for r in rows if r["target"] == t and "ratio" in r]
            errors = [r for r in rows if r["target"] == t and "error" in r]
            ratios = [r["ratio"] for r in ok]
            inside = sum(0.9 <= x <= 1.05 for x in ratios)
            if ok:
                print(f"| {t} | {len(ok) + len(errors)} | {inside} | {min(ratios):.3f} / {statistics.median(ratios):.3f} / "
                      f"{max(ratios):.3f} | {statistics.median(r['encodes'] for r in ok):.0f} | "
                      f"{statistics.median(r['seconds'] for r in ok):.2f} | "
                      f"{statistics.median(r['plain_encode_seconds'] for r in ok):.2f} | {len(errors)} |")
            else:
                print(f"| {t} | {len(errors)} | 0 | – | – | – | – | {len(errors)} |")

    if "memory" not in args.skip:
        sets = [s.split(",") for s in args.memory_points]
        mem = memory(sets, repeats=3)
        report["memory_mb"] = mem
        print("\n| models held by one process | RSS MB (median of 3) |\n|---|---|")
        for k, v in mem.items():
            print(f"| {k} | {v:.0f} |")

    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
