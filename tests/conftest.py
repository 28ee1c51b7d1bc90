"""Shared fixtures. Tests run offline, on one torch thread, with the tiny profile."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Commands without --model use the embedded tiny profile in tests (fast); the shipped default
# has its own tests (tests/test_shipped.py), which unset this.
os.environ["RESULIC_MODEL"] = "tiny"

from pathlib import Path

import pytest
import torch
from PIL import Image

from resulic.services.runtime import quiet_libraries

quiet_libraries()
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a skip with the reason when a user's clone has none."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not present (only the project's development machines have ../shared)")
    return path


@pytest.fixture(scope="session")
def codec():
    from resulic.codec import Codec

    return Codec.build()


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    """A real photo, cropped to a size that is not a multiple of the 128-px stride."""
    from resulic.images import sample_images

    _, img = sample_images(1)[0]
    return img.crop((100, 60, 100 + 200, 60 + 150))


@pytest.fixture(scope="session")
def encoded(codec, photo):
    return codec.encode(photo)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session (127.0.0.1, 4 logical CPUs on any machine)."""
    from resulic.services import cluster

    import ray

    cluster.ensure_ray(min_cpus=3)
    cluster.quiet_data_progress()
    yield ray
    ray.shutdown()


# Module scope: stopped when its module ends, since a running `ray start` cluster is found by
# every later ray.init() on the machine (a subprocess's local Ray would join it).
@pytest.fixture(scope="module")
def multinode(tmp_path_factory):
    """A two-node Ray on 127.0.0.1 started the way a real cluster's is — ``ray start --head``
    plus a node joined with ``ray start --address`` (custom resource ``node2``) — and an MLflow
    tracking server (SQLite backend, served artifacts) that the jobs reach only over HTTP.

    Processes are separate from the session's in-process Ray (``ray_cluster``), are started by
    pid and stopped by pid at the end. Ports: ``RESULIC_TEST_<NAME>_PORT`` (GCS, DASHBOARD,
    CLIENT_SERVER, AGENT_BASE, WORKER_MIN, WORKER_MAX, MLFLOW, SERVE_HTTP); Ray's temp dir:
    ``RESULIC_TEST_RAY_TEMP_DIR`` (else a short folder under /tmp: socket paths are limited).
    """
    import tempfile

    from resulic.services.local_cluster import LocalCluster, MlflowServer, Ports

    root = tmp_path_factory.mktemp("multinode")
    own_temp_dir = not os.environ.get("RESULIC_TEST_RAY_TEMP_DIR")
    temp_dir = os.environ.get("RESULIC_TEST_RAY_TEMP_DIR") or tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ports = Ports.from_env()
    cluster = LocalCluster(root / "nodes", ports, [str(REPO / "platform"), str(REPO)], temp_dir=Path(temp_dir))
    server = MlflowServer(root / "mlflow", ports.mlflow, cluster.env)
    import threading

    # The tracking server starts (seconds of imports) while the nodes do, and stops with them.
    server_error: list[BaseException] = []

    def start_server() -> None:
        try:
            server.start(timeout=240)
        except BaseException as exc:  # noqa: BLE001  (raised in the fixture below)
            server_error.append(exc)

    starting = threading.Thread(target=start_server, name="mlflow-server-start")
    try:
        starting.start()
        cluster.start_head(cpus=3)
        cluster.add_node("node2", cpus=2)
        starting.join()
        if server_error:
            raise server_error[0]
        yield MultiNode(cluster, server, root / "shared")
    finally:
        # Throwaway processes: two seconds' grace, then killed (a graceful Serve/raylet
        # shutdown took up to 90 s of the suite here); the server and the nodes at once.
        starting.join()
        stopping = threading.Thread(target=server.stop, kwargs={"grace": 2}, name="mlflow-server-stop")
        stopping.start()
        cluster.stop(grace=2)
        stopping.join()
        if own_temp_dir:  # Ray's session folders (logs, unpacked jobs) of this cluster's nodes
            import shutil

            for folder in Path(temp_dir).parent.glob(Path(temp_dir).name + "*"):
                shutil.rmtree(folder, ignore_errors=True)


class MultiNode:
    """What the multi-node tests use: the cluster, the tracking server, a storage path both nodes reach."""

    def __init__(self, cluster, server, shared: Path):
        self.cluster, self.server, self.shared = cluster, server, shared
        shared.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        return self.cluster.dashboard_url

    @property
    def tracking_uri(self) -> str:
        return self.server.uri

    def submit(self, kind: str, config: str, *overrides: str, storage: bool = False, attempt: int = 1,
               timeout: float = 1500):
        """``jobs/submit.py <kind> <config> --wait`` against the cluster; the finished process."""
        return self.start_submit(kind, config, *overrides, storage=storage, attempt=attempt).finish(timeout)

    def start_submit(self, kind: str, config: str, *overrides: str, storage: bool = False, attempt: int = 1):
        """The same submission, started: ``.finish(timeout)`` waits for it (so a test can do
        something else while a job runs)."""
        argv = [sys.executable, str(REPO / "jobs" / "submit.py"), kind, config, "--address", self.address,
                "--tracking-uri", self.tracking_uri, "--wait", "--attempt", str(attempt)]
        if storage:
            argv += ["--storage", str(self.shared / "ray_results")]
        for override in overrides:
            argv += ["--set", override]
        return Submission(subprocess.Popen(argv, cwd=REPO, env=self.cluster.env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True))


class Submission:
    """A running ``jobs/submit.py``; ``finish`` returns it as ``subprocess.run`` would."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    def finish(self, timeout: float = 1500) -> subprocess.CompletedProcess:
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, stdout, stderr)
