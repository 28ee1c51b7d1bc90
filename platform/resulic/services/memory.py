"""Peak resident memory of this process, per piece of work (Linux).

``ru_maxrss`` only grows over a process's life (and includes a forked parent's peak), so a
long-lived worker that handles many inputs cannot say which input cost the most with it. Linux
resets the peak (VmHWM) when "5" is written to /proc/self/clear_refs; ``reset_peak`` does that and
``peak_mb`` reads it back. Elsewhere both degrade to the lifetime peak, and say so.
"""

from __future__ import annotations

import resource
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    """Start a new peak from the current resident size; False where the kernel cannot."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_mb() -> float:
    """The peak resident size since the last ``reset_peak`` (else since the process started), MB."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mb() -> float:
    """The resident size now, MB (0 where /proc is missing): a peak's rise is peak_mb() minus this
    before the work."""
    return _status_mb("VmRSS") or 0.0
