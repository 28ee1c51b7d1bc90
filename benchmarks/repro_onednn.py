"""Minimal reproducer of the oneDNN heap corruption that kept oneDNN off in every process
(docs/benchmarks.md "CPU convolutions"): torch alone, one convolution's weight gradient.

The op: ``torch.ops.aten.convolution_backward`` of a 1x1 convolution, stride 2, no padding,
4 input channels -> 32 output channels, a channels-last (NHWC) input of 2x4x16x16, weight and
bias gradients only — exactly the compressor's first skip layer (``g_a.0.skip``, tiny profile:
4 latent channels) in a training backward. oneDNN v3.12 runs it on its ``jit_1x1`` backward-
weights kernel, which first copies the strided input into a unit-stride per-thread workspace
("reduce to unit stride"); for an NHWC source the workspace holds ``spatial x IC`` floats, but
the copy's offset is computed as ``spatial x ic_block`` (8 on AVX2, 16 on AVX-512), so with
IC < ic_block and more than one spatial chunk it writes past the workspace (upstream:
uxlfoundation/oneDNN#6035). glibc then aborts with "free(): invalid next size" / "corrupted
double-linked list", or the process segfaults; with several threads the weight gradient can
also come out wrong.

Each case runs in a fresh subprocess so this process can report the signal. On an AVX-512 CPU
the AVX2 kernels are forced with ONEDNN_MAX_CPU_ISA=AVX2 (what an AMD EPYC without AVX-512
runs by default).

    python benchmarks/repro_onednn.py            # the cases below, ~1 s each
    python benchmarks/repro_onednn.py --sweep    # IC x spatial x batch x threads x ISA (~10 minutes)
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys

CHILD = r"""
import os, sys, torch
n, ic, hw, oc, stride, cl, native, pinned, reps = (int(v) for v in sys.argv[1:10])
torch.backends.mkldnn.enabled = not native
torch.manual_seed(0)
fmt = torch.channels_last if cl else torch.contiguous_format
x = torch.randn(n, ic, hw, hw).to(memory_format=fmt)
w = torch.randn(oc, ic, 1, 1)
ho = (hw - 1) // stride + 1
go = torch.randn(n, oc, ho, ho).to(memory_format=fmt)
ref = torch.nn.grad.conv2d_weight(x.double(), w.shape, go.double(), stride=stride).float()
worst = 0.0
for _ in range(reps):
    if pinned:  # the project's fix: this layer on the native kernels (resulic/models/kernels.py)
        xr, wr = x.clone().requires_grad_(False), w.clone().requires_grad_(True)
        torch._C._nn.thnn_conv2d(xr, wr, [1, 1], None, [stride, stride], [0, 0]).backward(go)
        gw = wr.grad
    else:
        _, gw, _ = torch.ops.aten.convolution_backward(
            go, x, w, [oc], [stride, stride], [0, 0], [1, 1], False, [0, 0], 1, [False, True, True])
    worst = max(worst, float((gw - ref).abs().max() / ref.abs().max()))
print(f"ok, weight-gradient error {worst:.1e} (relative to its largest element)")
"""

BASE = dict(n=2, ic=4, hw=16, oc=32, stride=2, cl=1, native=0, pinned=0)


def run_case(case: dict, isa: str | None, threads: int, reps: int = 20, timeout: float = 120) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    args = [str(case[k]) for k in ("n", "ic", "hw", "oc", "stride", "cl", "native", "pinned")] + [str(reps)]
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"HANG (killed after {timeout:.0f} s)"
    if out.returncode < 0:
        glibc = [line for line in out.stderr.splitlines() if line.strip() and "Warning" not in line]
        return f"CRASH {signal.Signals(-out.returncode).name}" + (f" ({glibc[-1].strip()})" if glibc else "")
    if out.returncode:
        return f"error rc={out.returncode}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}"
    line = out.stdout.strip().splitlines()[-1]
    error = float(line.rsplit("error ", 1)[1].split()[0])
    return f"WRONG: {line[4:]}" if error > 1e-4 else line


def cpu_has_avx512() -> bool:
    try:
        return " avx512f" in open("/proc/cpuinfo").read()
    except OSError:
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", action="store_true", help="input channels x spatial size x batch x threads x ISA")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args(argv)
    import torch

    onednn = next((w for w in torch.__config__.show().split() if w.startswith("v3") or w.startswith("v2")), "?")
    print(f"torch {torch.__version__}, oneDNN {onednn}, CPU {'with' if cpu_has_avx512() else 'without'} AVX-512")
    isas = ["AVX2", None] if cpu_has_avx512() else [None]
    name = lambda isa: "AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2)" if isa else "this CPU's kernels"  # noqa: E731
    if not args.sweep:
        cases = [
            ("the op: 1x1/s2, IC=4, NHWC input, oneDNN", {}),
            ("  same with native kernels (oneDNN off)", {"native": 1}),
            ("  same with a contiguous (NCHW) input", {"cl": 0}),
            ("  same with stride 1 (no strided copy)", {"stride": 1}),
            ("  same with IC=8", {"ic": 8}),
            ("  same, the layer pinned to native kernels (the fix)", {"pinned": 1}),
        ]
        crashed = False
        for isa in isas:
            for threads in args.threads:
                print(f"\n{name(isa)}, {threads} thread(s):")
                for label, change in cases:
                    verdict = run_case({**BASE, **change}, isa, threads)
                    crashed |= verdict.startswith(("CRASH", "WRONG", "HANG")) and not change
                    print(f"  {label:<55} {verdict}")
        print("\nreproduced" if crashed else "\nnot reproduced on this machine")
        return 0
    print("IC x HW x batch, 1x1 stride 2, NHWC, oneDNN backward-weights; anything but 'ok' is the bug")
    for isa, threads in itertools.product(isas, args.threads):
        print(f"\n{name(isa)}, {threads} thread(s):")
        for ic, hw, n in itertools.product([3, 4, 8, 12, 15, 16], [16, 64], [1, 2, 8]):
            verdict = run_case({**BASE, "ic": ic, "hw": hw, "n": n}, isa, threads, reps=5, timeout=60)
            if not verdict.startswith("ok"):
                print(f"  IC={ic:<3} {hw}x{hw} batch {n}: {verdict}")
        print("  (every other case ok)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
