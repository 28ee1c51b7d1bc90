"""benchmarks/gpu_check.py on the CPU with the tiny profile: the three parts run and report, parts
1 and 2 need neither Ray nor MLflow, and a failed comparison is a non-zero exit."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
# Run without CUDA even on a GPU machine: the test is about the CPU path.
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def run(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"{prelude}import runpy, sys; sys.argv = {[str(SCRIPT), *args]!r}; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)


def report(out: str) -> dict[str, str]:
    lines = out.split("== GPU check report ==", 1)[1].strip().splitlines()
    return {line.split()[0]: line for line in lines}


def test_gpu_check_runs_all_parts_on_the_cpu_with_serve():
    proc = run("--profile", "tiny", "--steps", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = report(proc.stdout)
    assert "no CUDA device" in rows["device"]
    assert rows["train"].split()[1] == "ok" and "1 bf16 step(s)" in rows["train"]
    assert rows["decode"].split()[1] == "ok" and "latent symbols identical" in rows["decode"]
    assert "max abs diff 0 " in rows["decode"]  # same device, same file: the same pixels
    assert rows["serve"].split()[1] == "ok" and "replica on CPU" in rows["serve"]
    assert rows["result:"].endswith("PASS")


def test_parts_one_and_two_need_neither_ray_nor_mlflow():
    # A GPU box without Ray or MLflow: importing either fails, the script still checks the codec.
    blocked = "import sys; sys.modules.update({m: None for m in ('ray', 'mlflow')}); "
    proc = run("--profile", "tiny", "--steps", "1", prelude=blocked)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = report(proc.stdout)
    assert rows["decode"].split()[1] == "ok"
    assert rows["serve"].split()[1] == "skip" and "ray[serve] is not installed" in rows["serve"]


def test_a_failed_comparison_exits_non_zero(capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # No tolerance is below zero: the comparison must fail and say so.
    assert module.main(["--profile", "tiny", "--steps", "1", "--no-serve", "--cpu", "--pixel-tolerance", "-1"]) == 1
    rows = report(capsys.readouterr().out)
    assert rows["decode"].split()[1] == "FAIL" and rows["result:"].endswith("FAIL")
