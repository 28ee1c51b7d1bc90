"""resulic.services.loopback: the preloaded library that keeps a one-machine Ray cluster's
listeners on the loopback (issue 26), tried on plain sockets in a child process. The cluster
itself is checked in tests/test_cluster_multinode.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from resulic.services.loopback import LoopbackUnavailable, build, is_loopback, preload_env

CHILD = r"""
import json, socket, sys
own = sys.argv[1] or None
out = {}
s4 = socket.socket(); s4.bind(("0.0.0.0", 0)); out["wildcard4"] = s4.getsockname()[0]
s6 = socket.socket(socket.AF_INET6); s6.bind(("::", 0)); s6.listen(); out["wildcard6"] = s6.getsockname()[0]
c = socket.create_connection(("127.0.0.1", s6.getsockname()[1]), timeout=5); c.close()  # IPv4 still reaches it
if own:
    # Ray's dashboard agent: the machine's address, then 127.0.0.1, on one port.
    first = socket.socket(); first.bind((own, 0)); first.listen(); port = first.getsockname()[1]
    out["own"] = first.getsockname()[0]
    second = socket.socket(); second.bind(("127.0.0.1", port)); second.listen()
    c = socket.create_connection((own, port), timeout=5)  # a client of the machine's address gets through
    out["connected_to"] = c.getpeername()[0]; c.close()
print(json.dumps(out))
"""


def _own_address() -> str:
    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not is_loopback(a.address):
                return a.address
    return ""


def test_binds_and_connections_move_to_the_loopback(tmp_path):
    try:
        library = build(tmp_path)
    except LoopbackUnavailable as exc:
        pytest.skip(str(exc))
    own = _own_address()
    env = preload_env({"PATH": "/usr/bin:/bin"}, library)
    done = subprocess.run([sys.executable, "-c", CHILD, own], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["wildcard4"] == "127.0.0.1"
    assert out["wildcard6"] == "::ffff:127.0.0.1"
    if own:
        assert out["own"] == "127.0.0.1" and is_loopback(out["connected_to"])
    # without the library the same child binds where it is told (the test can tell the difference)
    plain = subprocess.run([sys.executable, "-c", CHILD, ""], env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                           text=True, timeout=60)
    assert json.loads(plain.stdout)["wildcard4"] == "0.0.0.0"


def test_the_build_is_cached_and_the_preload_comes_first(tmp_path):
    try:
        library = build(tmp_path)
    except LoopbackUnavailable as exc:
        pytest.skip(str(exc))
    assert build(tmp_path) == library
    assert preload_env({"LD_PRELOAD": "/x/other.so"}, library)["LD_PRELOAD"] == f"{library} /x/other.so"


def test_without_a_compiler_the_error_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "")
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(LoopbackUnavailable, match="C compiler"):
        build(tmp_path)
