"""Resident memory a codec process holds before it decodes anything: import the codec's libraries
one after the other in this fresh interpreter and print what each adds (VmRSS, Linux).

    RESULIC_ONEDNN=1 python benchmarks/import_memory.py

docs/benchmarks.md ("What a codec process holds before it decodes anything") records the table.
"""

from __future__ import annotations

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


def main() -> int:
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
