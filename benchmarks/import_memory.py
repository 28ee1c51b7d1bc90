"""Resident memory a codec process holds before it decodes anything: import the codec's libraries
one after the other in this fresh interpreter and print what each adds (VmRSS, Linux).

    RESULIC_ONEDNN=1 python benchmarks/import_memory.py
    RESULIC_ONEDNN=1 python benchmarks/import_memory.py --points   # then every shipped point, one backbone

docs/benchmarks.md ("What a codec process holds before it decodes anything", "One prior per
process") records the tables.
"""

from __future__ import annotations

import argparse
import importlib
import sys

STEPS = [
    ("torch", ["torch"]),
    ("numpy, Pillow, safetensors", ["numpy", "PIL.Image", "safetensors.torch"]),
    ("the CompressAI parts the codec uses", ["resulic.entropy.compressai_parts"]),
    ("transformers", ["transformers"]),
    ("diffusers", ["diffusers"]),
    ("diffusers' UNet2DConditionModel", ["diffusers.models.unets.unet_2d_condition"]),
    ("resulic's backbone and store", ["resulic.models.backbone", "resulic.codec.store"]),
]
WATCHED = ("torch_geometric", "pandas", "scipy", "sympy", "torch._dynamo")


def rss_mb() -> int:
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) // 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", action="store_true",
                   help="after the imports, load every shipped point on one backbone and print the memory after each")
    args = p.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("resulic: error: reads /proc/self/status (Linux only)", file=sys.stderr)
        return 2
    print("| import | + MB | total MB |\n|---|---|---|")
    before = rss_mb()
    for label, modules in STEPS:
        for module in modules:
            importlib.import_module(module)
        now = rss_mb()
        print(f"| {label} | {now - before} | {now} |")
        before = now
    print("\nalso imported:", ", ".join(m for m in WATCHED if m in sys.modules) or "none of " + ", ".join(WATCHED))
    if args.points:
        from resulic.codec import shipped

        print("\n| shipped point loaded | + MB | total MB |\n|---|---|---|")
        loaded = []  # kept: each point stays resident, as in a Serve replica
        for name in shipped.rate_names():
            loaded.append(shipped.load(name))
            now = rss_mb()
            print(f"| {name} | {now - before} | {now} |")
            before = now
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
