"""Loopback-only listeners for the one-machine Ray cluster (``local_cluster``): builds
``loopback_bind.c`` with the system C compiler into a small shared library that the cluster's
processes load with ``LD_PRELOAD`` (Ray 2.60's ``ray start`` has no bind-address option; the
library's header says what it moves and why). Also lists the listening sockets of a set of
processes, which is how the tests and drills check it.

    python -m resulic.services.loopback      # builds it (cached) and prints its path

Linux with a C compiler (``cc``) only; elsewhere ``LoopbackUnavailable`` says why.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import ResulicError

SOURCE = Path(__file__).with_name("loopback_bind.c")


class LoopbackUnavailable(ResulicError):
    """The library cannot be built or used here."""


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resulic"


def build(dest_dir: Path | None = None) -> Path:
    """The compiled library (built once per source version, atomically)."""
    if not sys.platform.startswith("linux"):
        raise LoopbackUnavailable(f"loopback-only listeners need Linux (LD_PRELOAD); this is {sys.platform}")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise LoopbackUnavailable("loopback-only listeners need a C compiler to build "
                                  f"{SOURCE.name} (install gcc, or set CC)")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    dest_dir = Path(dest_dir) if dest_dir else cache_dir()
    target = dest_dir / f"libresulic-loopback-{digest}.so"
    if target.exists():
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        out = Path(tmp) / target.name
        done = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(out), str(SOURCE), "-ldl", "-lpthread"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise LoopbackUnavailable(f"{compiler} could not build {SOURCE.name}: {done.stderr.strip()[-400:]}")
        os.replace(out, target)
    return target


def preload_env(env: dict[str, str], library: Path) -> dict[str, str]:
    """``env`` with the library first in ``LD_PRELOAD``."""
    others = [p for p in env.get("LD_PRELOAD", "").split() if p and p != str(library)]
    return {**env, "LD_PRELOAD": " ".join([str(library), *others])}


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def listeners(pids: set[int]) -> list[tuple[str, int, str, int]]:
    """(address, port, process name, pid) of every listening TCP socket of these processes."""
    import psutil

    found = []
    for pid in sorted(pids):
        try:
            process = psutil.Process(pid)
            for conn in process.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append((conn.laddr.ip, conn.laddr.port, process.name(), pid))
        except psutil.Error:  # ended meanwhile
            continue
    return found


def main() -> int:
    try:
        print(build())
    except LoopbackUnavailable as exc:
        print(f"resulic: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
