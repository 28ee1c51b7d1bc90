"""``resulic ui``: the MLflow UI on a local store comes up (one server worker) and answers HTTP on
127.0.0.1 only (23 s on the 2-core machine with one core busy training)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from resulic.services import tracking
from resulic.cli.platform_commands import ui_argv

UP_WITHIN_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_argv_binds_the_loopback_with_one_worker(tmp_path):
    argv = ui_argv(f"sqlite:///{tmp_path}/mlflow.db", 5000)
    assert argv[1] == "server" and argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--workers") + 1] == "1"
    assert argv[argv.index("--artifacts-destination") + 1] == str(tmp_path / "mlartifacts")


def test_ui_refuses_a_missing_store(tmp_path, capsys):
    from resulic import cli

    assert cli.main(["ui", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "no MLflow store at" in capsys.readouterr().err and not (tmp_path / "none.db").exists()


def test_ui_refuses_a_port_out_of_range(tmp_path, capsys):
    from resulic import cli

    assert cli.main(["ui", "--tracking-uri", f"sqlite:///{tmp_path}/none.db", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err


@pytest.mark.slow
def test_ui_comes_up_on_the_loopback(tmp_path):
    import psutil

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = tracking.client(uri)
    tracking.ensure_experiment(client, "ui-test")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(tmp_path / "ui.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "resulic.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        deadline, page = time.monotonic() + UP_WITHIN_S, None
        while page is None and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "ui.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    pass
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
                    page = r.read().decode()
            except OSError:
                time.sleep(1)
        assert page is not None, f"not up after {UP_WITHIN_S} s: " + (tmp_path / "ui.log").read_text()[-2000:]
        assert "<html" in page.lower()
        group = [process.pid, *(p.pid for p in psutil.Process(process.pid).children(recursive=True))]
        listening = [c.laddr for pid in group for c in psutil.Process(pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and {a.ip for a in listening} == {"127.0.0.1"}, listening
        assert "workflowType=machine_learning" in (tmp_path / "ui.log").read_text()  # the link it prints
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
