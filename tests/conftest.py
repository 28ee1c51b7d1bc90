"""Shared fixtures. Tests run offline, on one torch thread, with the tiny profile."""

from __future__ import annotations

import functools
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
    from resulic.services.loopback import LoopbackUnavailable

    try:
        cluster = LocalCluster(root / "nodes", ports, [str(REPO / "platform"), str(REPO)], temp_dir=Path(temp_dir))
    except LoopbackUnavailable as exc:  # no C compiler (or not Linux): the listener test says so and skips
        cluster = LocalCluster(root / "nodes", ports, [str(REPO / "platform"), str(REPO)], temp_dir=Path(temp_dir),
                               loopback_only=False)
        cluster.loopback_unavailable = str(exc)
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



# `make test` runs the suite on two pytest-xdist workers (`-n 2 --no-loadscope-reorder`), a
# whole module at a time, so each module's fixtures are built once. Every module that uses the
# session's Ray (`ray_cluster`) joins one work unit: one in-process Ray per run, those tests one
# after another. That unit goes first and the multi-node cluster's next, one to each worker; the
# other modules fill in behind them. (xdist's own `--dist loadgroup` cannot do it under pytest 9:
# the group it appends to a test's id is lost.) Without xdist only the order changes.
RAY_UNIT, CLUSTER_UNIT = "ray", "tests/test_cluster_multinode.py"


def work_unit(nodeid: str) -> str:
    """The unit a test runs in: its module, or ``RAY_UNIT`` for every module that names ``ray_cluster``."""
    module = nodeid.split("::", 1)[0]
    return RAY_UNIT if _names_the_session_ray(module) else module


@functools.cache
def _names_the_session_ray(module: str) -> bool:
    path = REPO / module
    return path.is_file() and "ray_cluster" in path.read_text(encoding="utf-8")


def pytest_collection_modifyitems(config, items):
    rank = {RAY_UNIT: 0, CLUSTER_UNIT: 1}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid), 2))  # stable: collection order within a rank


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByWorkUnit(config, log)
