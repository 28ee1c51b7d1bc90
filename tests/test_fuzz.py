"""Hostile files: crafted headers, latent streams of every size, mutated real files — each decoded
twice in a child process (benchmarks/fuzz_decoder.py; its 10,000-input table is in docs/security.md).
No input may kill the process, hang it, raise anything but the codec's errors, grow it without
bound, or decode to a different result the second time."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "fuzz_decoder.py"
COUNT = 300


def _fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_decoder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_no_input_crashes_hangs_or_decodes_differently_twice(codec):
    fuzz = _fuzz()
    inputs = fuzz.issue_files(codec.fingerprint) + fuzz.make_inputs(
        codec.fingerprint, fuzz.real_files(codec), COUNT, seed=13)
    results = fuzz.run(inputs, timeout_s=300)
    failures = [r for r in results if fuzz.is_failure(r)]
    assert not failures, fuzz.table(failures)
    assert max(r.rss_mb for r in results) < 4096  # peak RSS of the child, MB
    outcomes = {r.outcome for r in results}
    assert "ok" in outcomes  # real decodes were compared too, not only refusals
    assert {"BitstreamError:latent stream is corrupt", "ModelMismatchError:file was made by model but this codec "
            "is model", "DecodeLimitError:max_pixels"} <= outcomes
    assert {r.outcome for r in results[:2]} == {"BitstreamError:latent stream is corrupt"}  # issue 13's files


@pytest.mark.slow
def test_the_issues_crash_file_is_one_line_from_the_cli(tmp_path, codec):
    """Issue 13: the default model's header, 64x64, 1,000,000 bytes of 0xFF: exit 139 before."""
    path = tmp_path / "crash.rslc"
    path.write_bytes(_fuzz().issue_files(codec.fingerprint)[0][1])
    exe = Path(sys.executable).with_name("resulic")
    out = subprocess.run([str(exe), "decompress", str(path), "-o", str(tmp_path / "out.png")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith("resulic: error:") and "latent stream is corrupt" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "out.png").exists()


def test_peak_memory_is_measured_per_input_not_per_process():
    """The fuzz tables' "peak MB" row: a 300 MB allocation raises the peak; after reset_peak the
    next, small piece of work reports a peak far below it (ru_maxrss would keep the 300 MB)."""
    import numpy as np

    from resulic.services.memory import peak_mb, reset_peak

    if not reset_peak():
        pytest.skip("this kernel cannot reset the peak resident size (/proc/self/clear_refs)")
    start = peak_mb()
    block = np.ones(300 * 2**20 // 8)  # touched pages: resident
    high = peak_mb()
    del block
    assert high > start + 250
    reset_peak()
    assert peak_mb() < high - 250

