"""The Kodak tables of docs/small-profile.md from the evaluation and baseline JSONs: ours per
rate point (all images evaluated), every codec on the images the baselines covered, BD-rates.

    python benchmarks/kodak_report.py outputs/kodak/ours outputs/kodak/baselines/*.json outputs/kodak/baselines-vvc/vvc.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from resulic.metrics.bd_rate import bd_rate

METRICS = [("psnr-rgb", "PSNR dB"), ("ms-ssim-rgb", "MS-SSIM"), ("st-lpips", "ST-LPIPS")]


def _ours_rows(folder: Path, images: set[str] | None) -> dict:
    """Mean over (a subset of) images of each rate point, from the per-image JSONs."""
    per = {p.stem: json.loads(p.read_text()) for p in sorted((folder / "per_image").glob("*.json"))}
    if images is not None:
        per = {k: v for k, v in per.items() if k in images}
    keys = ["bpp", *[m for m, _ in METRICS], "encoding_time", "decoding_time"]
    first = next(iter(per.values()))["results"]
    n = len(first["bpp"])
    res = {}
    for key in keys:
        real = key if key in first else next((k for k in first if k.startswith(key)), None)
        if real is None:
            continue
        res[key] = [float(np.mean([v["results"][real][i] for v in per.values()])) for i in range(n)]
    return {"name": "ours", "results": res, "images": len(per)}


def _baseline_rows(path: Path) -> tuple[dict, set[str]]:
    data = json.loads(path.read_text())
    rows = data["per_image"]
    images = {r["image"] for r in rows}
    targets = sorted({r["target_bpp"] for r in rows})
    res: dict[str, list] = {}
    for key in ["bpp", "psnr-rgb", "ms-ssim-rgb", "st-lpips"]:
        col = [k for k in rows[0] if k.startswith(key)] or [key]
        res[key] = [float(np.mean([r[col[0]] for r in rows if r["target_bpp"] == t])) for t in targets]
    return {"name": data.get("name", path.stem), "results": res}, images


def _table(curves: dict[str, dict]) -> str:
    out = ["| codec | point | bpp | PSNR dB | MS-SSIM | ST-LPIPS ↓ |", "|---|---|---|---|---|---|"]
    for name, c in curves.items():
        r = c["results"]
        for i, bpp in enumerate(r["bpp"]):
            vals = [r.get(k, [None] * len(r["bpp"]))[i] for k, _ in METRICS]
            out.append(f"| {name} | {i + 1} | {bpp:.4f} | " + " | ".join("–" if v is None else f"{v:.4f}" if k != "psnr-rgb" else f"{v:.2f}" for v, (k, _) in zip(vals, METRICS)) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ours", type=Path)
    p.add_argument("baselines", type=Path, nargs="+")
    args = p.parse_args()
    ours_all = _ours_rows(args.ours, None)
    print(f"## ours, all {ours_all['images']} images\n\n{_table({'ResULIC small': ours_all})}\n")
    baselines, covered = {}, None
    for path in args.baselines:
        data, images = _baseline_rows(path)
        baselines[data["name"]] = data
        covered = images if covered is None else covered & images
    ours = _ours_rows(args.ours, covered)
    print(f"## on the {len(covered)} images every codec covered ({', '.join(sorted(covered))})\n")
    print(_table({"ResULIC small": ours, **baselines}) + "\n")
    print("## BD-rate of ours against each anchor (%, negative = fewer bits at equal quality)\n")
    print("| anchor | " + " | ".join(label for _, label in METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for name, anchor in baselines.items():
        cells = []
        for key, _ in METRICS:
            try:
                metric = key.replace("-rgb", "")
                res = bd_rate({"name": name, "results": anchor["results"]}, {"name": "ours", "results": ours["results"]}, metric)
                cells.append(f"{res.value:+.1f}" if np.isfinite(res.value) else "n/a (no overlap)")
            except Exception as exc:  # noqa: BLE001 - a table cell, not a failure
                cells.append(f"n/a ({str(exc).splitlines()[0][:60]})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
