"""Start-up time of the ``resulic`` commands that need no model: process wall time, fresh process each.

    python benchmarks/bench_cli_startup.py [--repeats 5] [--code PLATFORM_DIR] [--baseline PLATFORM_DIR]

Each row runs ``python -m resulic.cli ARGS`` in a new process (as the ``resulic`` script does) and
reports the median wall time of ``--repeats`` runs, from process start to exit, and which heavy
libraries the command imported. ``--baseline`` (another checkout's ``platform/`` folder, e.g. one
extracted with ``git archive <commit> platform | tar -x -C /tmp/before``) adds its column and the
ratio. The first row is the interpreter alone (``python -c pass``): the floor of any command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "ray", "mlflow", "compressai", "matplotlib")

# What each process prints last: the heavy modules it imported (run after the command in the same
# process, so the command's own imports are what is counted).
PROBE = """\
import sys, runpy
sys.argv = ["resulic"] + sys.argv[1:]
code = 0
try:
    runpy.run_module("resulic.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
sys.stderr.write("\\nHEAVY:" + ",".join(heavy) + "\\n")
sys.exit(code if isinstance(code, int) else 1)
""".format(heavy=HEAVY)


def commands(folder: Path) -> list[tuple[str, list[str] | None]]:
    rslc = folder / "photo.rslc"
    return [
        ("python -c pass (interpreter)", None),
        ("resulic --help", ["--help"]),
        ("resulic compress --help", ["compress", "--help"]),
        ("resulic bd-rate --help", ["bd-rate", "--help"]),
        ("resulic info photo.rslc", ["info", str(rslc)]),
        ("resulic info missing.rslc", ["info", str(folder / "missing.rslc")]),
        ("resulic compress missing.png", ["compress", str(folder / "missing.png")]),
        ("resulic decompress missing.rslc", ["decompress", str(folder / "missing.rslc")]),
        ("resulic compress (no argument)", ["compress"]),
    ]


def write_sample_file(folder: Path, code: Path) -> None:
    """A well-formed .rslc (header + a stand-in latent stream): ``info`` reads only the header."""
    script = ("import sys; from resulic.codec.container import Container, Header, pack; "
              "open(sys.argv[1], 'wb').write(pack(Container(Header(b'\\x01\\x02\\x03\\x04', 768, 512), b'', b'\\x55' * 120)))")
    subprocess.run([sys.executable, "-c", script, str(folder / "photo.rslc")], check=True, env=_env(code))


def _env(code: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=f"{code}{os.pathsep}{code.parent}", OMP_NUM_THREADS="1")
    env.pop("PYTHONSTARTUP", None)
    return env


def time_command(args: list[str] | None, code: Path, repeats: int) -> tuple[float, str, int]:
    """(median seconds, heavy modules imported, exit status)."""
    argv = [sys.executable, "-c", "pass"] if args is None else [sys.executable, "-c", PROBE, *args]
    times, heavy, status = [], "", 0
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(argv, env=_env(code), capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        status = done.returncode
        for line in done.stderr.splitlines():
            if line.startswith("HEAVY:"):
                heavy = line.removeprefix("HEAVY:") or "none"
    return statistics.median(times), heavy or "-", status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--code", type=Path, default=REPO / "platform", help="the platform/ folder to measure")
    parser.add_argument("--baseline", type=Path, help="another platform/ folder, measured the same way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_sample_file(folder, args.code)
        rows = []
        for name, argv in commands(folder):
            now = time_command(argv, args.code.resolve(), args.repeats)
            before = time_command(argv, args.baseline.resolve(), args.repeats) if args.baseline else None
            rows.append((name, now, before))
            print(f"{name}: {now[0]:.2f} s" + (f" (baseline {before[0]:.2f} s)" if before else ""), file=sys.stderr)
    print(f"\nmedian of {args.repeats} fresh processes, wall time; exit status in brackets\n")
    if args.baseline:
        print("| command | before s | before: heavy imports | after s | after: heavy imports | after / before |")
        print("|---|---|---|---|---|---|")
        for name, now, before in rows:
            print(f"| {name} | {before[0]:.2f} [{before[2]}] | {before[1]} | {now[0]:.2f} [{now[2]}] | {now[1]} | "
                  f"{now[0] / before[0]:.2f} |")
    else:
        print("| command | s | heavy imports |")
        print("|---|---|---|")
        for name, now, _ in rows:
            print(f"| {name} | {now[0]:.2f} [{now[2]}] | {now[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
