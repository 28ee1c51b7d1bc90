"""Ctrl-C and SIGTERM stop the long commands at once: exit status 130 (Ctrl-C) or 143 (SIGTERM),
one line on stderr, no traceback, and no partial file: what was written is whole, the rest absent.

Each command runs as a user's would, in its own process group; Ctrl-C is sent to the whole group
(as a terminal does, so worker processes get it too), SIGTERM to the command's process only (as
``kill`` or a job scheduler does). Timing is measured (docs/evaluation.md), not asserted here: the
bound below only catches a command that ignores the signal (it would run for minutes).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IGNORED = 60  # seconds: a command still running this long after the signal did not stop


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO)]), **extra}
    return env


def interrupt(args: list[str], cwd: Path, marker: str, signum: int, after: float = 0.5) -> tuple[int, str, float]:
    """Run ``resulic ARGS``; once ``marker`` is in its output (plus ``after`` s), send ``signum``.
    Returns (exit status, output, seconds from the signal to the exit)."""
    p = subprocess.Popen([sys.executable, "-m", "resulic.cli", *args], cwd=cwd, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    os.set_blocking(p.stdout.fileno(), False)
    out, t0 = b"", time.monotonic()
    try:
        while marker.encode() not in out:
            assert p.poll() is None, f"ended before {marker!r}: {out.decode(errors='replace')[-2000:]}"
            assert time.monotonic() - t0 < 600, f"no {marker!r} in 600 s"
            select.select([p.stdout], [], [], 0.2)
            out += p.stdout.read() or b""
        time.sleep(after)
        assert p.poll() is None, "the command ended before the signal: give it more work"
        sent = time.monotonic()
        os.killpg(p.pid, signum) if signum == signal.SIGINT else p.send_signal(signum)
        code = p.wait(timeout=IGNORED)
        seconds = time.monotonic() - sent
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    os.set_blocking(p.stdout.fileno(), True)
    out += p.stdout.read() or b""
    return code, out.decode(errors="replace"), seconds


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Enough images that the tiny codec is still busy when the signal comes."""
    from resulic.images import sample_images

    folder = tmp_path_factory.mktemp("photos")
    for name, img in sample_images(4):
        for i in range(10):
            img.convert("RGB").crop((i * 20, i * 10, i * 20 + 256, i * 10 + 256)).save(folder / f"{name}{i}.png")
    return folder


def assert_stopped(code: int, out: str, signum: int) -> None:
    assert code == (130 if signum == signal.SIGINT else 143), out[-2000:]
    assert ("resulic: interrupted" if signum == signal.SIGINT else "resulic: terminated") in out, out[-2000:]
    assert "Traceback" not in out and "Exception ignored" not in out, out[-2000:]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_compressing_a_folder_stops_with_whole_files_only(tmp_path, photos, signum):
    from resulic.codec.container import unpack

    code, out, seconds = interrupt(["compress", str(photos), "-o", "out", "--model", "tiny"], tmp_path,
                                   " -> ", signum)
    assert_stopped(code, out, signum)
    written = sorted((tmp_path / "out").iterdir())
    assert 0 < len(written) < 40, "interrupted midway: some files, not all"
    for path in written:  # no temporary file left, every file whole
        assert path.suffix == ".rslc" and not path.name.startswith("."), path
        unpack(path.read_bytes())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_evaluate_stops_and_writes_no_results(tmp_path, photos, signum):
    code, out, seconds = interrupt(["evaluate", "--model", "tiny", "--images", str(photos), "-o", "ev", "--workers", "0",
                                    "--set", "metrics.names=[psnr]"], tmp_path, "evaluate:", signum, after=2)
    assert_stopped(code, out, signum)
    assert not (tmp_path / "ev" / "results.json").exists()
    assert not [p for p in (tmp_path / "ev").rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def test_baselines_stop_their_worker_processes(tmp_path, photos):
    code, out, seconds = interrupt(["baselines", str(photos), "--codec", "jpeg", "--codec", "webp", "--bpp", "0.05", "0.1", "0.2",
                                    "--workers", "2", "-o", "bl"], tmp_path, "jpeg", signal.SIGINT, after=1)
    assert_stopped(code, out, signal.SIGINT)
    assert "leaked semaphore" not in out
    assert not list((tmp_path / "bl").glob("*.json")) if (tmp_path / "bl").exists() else True


def test_a_signal_inside_a_finalizer_is_not_lost(tmp_path):
    """Python drops an exception raised in ``__del__`` ("Exception ignored in"): a Ctrl-C arriving
    there would be lost and the command would run on. The handler delivers it again outside."""
    script = textwrap.dedent("""
        import gc, os, signal, sys, threading, time
        from resulic.services.runtime import stop_on_signals

        class Slow:
            def __del__(self):
                print("in __del__", flush=True)
                time.sleep(1.0)

        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            with stop_on_signals():
                Slow()  # collected at once: the signal comes during its __del__
                for _ in range(50):
                    time.sleep(0.1)
                print("ran on", flush=True)
        except KeyboardInterrupt:
            print("stopped", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["in", "__del__", "stopped"], (done.stdout, done.stderr)
    assert "Exception ignored" not in done.stderr
