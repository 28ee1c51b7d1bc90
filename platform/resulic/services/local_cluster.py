"""A multi-node Ray cluster and an MLflow tracking server on one machine, started the way a real
cluster's are: ``ray start --head``, ``ray start --address`` for each further node (with its own
custom resource, so placement can be checked), ``mlflow server`` with a SQLite backend and served
artifacts. For the cluster tests (tests/test_cluster_multinode.py) and the fault drills
(benchmarks/cluster_faults.py); nothing in the platform's jobs imports it.

Every listener of its processes is on the loopback (``loopback_only``, the default, on Linux):
``ray start`` binds its GCS and raylets to every interface and its agents to the machine's
address, with no option against it, so its processes preload ``loopback_bind.c``
(``resulic.services.loopback``), which moves those binds to 127.0.0.1.

Every process is started here with ``--block`` (it stays in the foreground), in a session of
its own, and stopped by its process id and those of its descendants — never ``ray stop``, which
stops every Ray cluster of the machine's user. All ports are explicit, so several such clusters
(and the developer's own) can run side by side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    """Every port a head, its extra nodes and the MLflow server listen on."""

    gcs: int = 6480
    dashboard: int = 8365
    client_server: int = 20101
    agent_base: int = 53615  # the dashboard agent of node i listens on agent_base + i
    # Above Ray's default worker range (10002-19999): a local Ray started beside this cluster
    # (ray.init, e.g. the test suite's other worker) hands its workers ports from that range.
    worker_min: int = 20110
    worker_max: int = 20400
    mlflow: int = 5150
    serve_http: int = 8100

    @classmethod
    def from_env(cls, prefix: str = "RESULIC_TEST_") -> "Ports":
        """Defaults overridden by ``<prefix>GCS_PORT``, ``<prefix>DASHBOARD_PORT``, ... ."""
        values = {}
        for name in cls.__dataclass_fields__:
            raw = os.environ.get(f"{prefix}{name.upper()}_PORT")
            if raw:
                values[name] = int(raw)
        return cls(**values)


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    log: Path
    resources: dict[str, float] = field(default_factory=dict)

    def descendants(self) -> list[int]:
        import psutil

        try:
            return [p.pid for p in psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def pid_of(self, name: str) -> int:
        """The pid of this node's process called ``name`` (``raylet``, ``gcs_server``...)."""
        import psutil

        for pid in self.descendants():
            try:
                if psutil.Process(pid).name() == name:
                    return pid
            except psutil.NoSuchProcess:
                continue
        raise LookupError(f"node {self.name}: no {name} process")


def _env(extra_path: list[str]) -> dict[str, str]:
    """The nodes' environment: this interpreter's bin first on PATH (as a cluster image has the
    project's environment), the checkout on PYTHONPATH, one thread per worker, offline."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([*extra_path, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "MLFLOW_DISABLE_TELEMETRY": "true"})
    env.pop("RAY_ADDRESS", None)  # the nodes find the head by --address, never by a caller's variable
    # resulic.services.cluster sets this to 0 in its own process (a local Ray stays on the loopback
    # address); inherited by `ray start --address`, it refuses to join a node ("multi-node Ray
    # clusters are not supported"), as a real cluster's nodes never have it.
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    # Ray 2.60 clusters ask for a token (made at ~/.ray/auth_token by the head when missing); the
    # nodes, the drivers connecting here and the `ray job` CLI must all send it.
    env.setdefault("RAY_AUTH_MODE", "token")
    return env


def _tail(log: Path, lines: int = 8) -> str:
    """The last lines of a log, so that a failure in CI says why without the file."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_tree(process: subprocess.Popen, pids: list[int], grace: float = 30.0) -> None:
    """SIGTERM the process (ray start --block then stops its children itself), then SIGKILL what is left."""
    import psutil

    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    alive = []
    for pid in pids:
        try:
            alive.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, still = psutil.wait_procs(alive, timeout=grace)
    for p in still:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


class LocalCluster:
    """A Ray head on 127.0.0.1 plus nodes joined with ``ray start --address``."""

    def __init__(self, root: Path, ports: Ports | None = None, python_path: list[str] | None = None,
                 temp_dir: Path | None = None, loopback_only: bool = True):
        self.root = Path(root)
        self.ports = ports or Ports()
        # Ray's sockets live under the temp dir and a socket path has at most 107 characters.
        self.temp_dir = Path(temp_dir) if temp_dir else self.root / "ray"
        self.env = _env(python_path or [])
        if loopback_only:  # raises LoopbackUnavailable (no Linux, no C compiler) rather than exposing ports
            from .loopback import build, preload_env

            self.env = preload_env(self.env, build())
        self.loopback_only = loopback_only
        self.loopback_unavailable = ""  # why not, where a caller fell back to loopback_only=False
        self.nodes: dict[str, Node] = {}
        self.object_store_bytes = 512 * 1024**2  # per node; Ray's default takes 30 % of the memory each

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def gcs_address(self) -> str:
        return f"{LOOPBACK}:{self.ports.gcs}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.dashboard}"

    def _ray_start(self, name: str, args: list[str], cpus: float, resources: dict[str, float]) -> Node:
        index = len(self.nodes)
        log = self.root / f"{name}.log"
        argv = [
            str(Path(sys.executable).parent / "ray"), "start", "--block", "--disable-usage-stats",
            "--node-ip-address", LOOPBACK, "--num-cpus", str(cpus), "--num-gpus", "0",
            "--object-store-memory", str(self.object_store_bytes),
            "--min-worker-port", str(self.ports.worker_min), "--max-worker-port", str(self.ports.worker_max),
            "--dashboard-agent-listen-port", str(self.ports.agent_base + index),
            *(["--resources", json.dumps(resources)] if resources else []),
            *args,
        ]
        with open(log, "ab") as out:
            process = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True, cwd=self.root)
        node = Node(name, process, log, dict(resources))
        self.nodes[name] = node
        return node

    def start_head(self, cpus: int = 3, resources: dict[str, float] | None = None, timeout: float = 180) -> Node:
        self.root.mkdir(parents=True, exist_ok=True)
        args = ["--head", "--port", str(self.ports.gcs), "--dashboard-host", LOOPBACK,
                "--dashboard-port", str(self.ports.dashboard), "--ray-client-server-port", str(self.ports.client_server),
                "--temp-dir", str(self.temp_dir)]

        def started(node: Node) -> None:
            self._wait(self._dashboard_up, timeout, f"the head's job API at {self.dashboard_url}", node)
            self.wait_for_nodes(1, timeout, node)

        return self._start_with_retries("head", args, cpus, resources or {"head": 1}, started)

    def add_node(self, name: str = "node2", cpus: int = 2, resources: dict[str, float] | None = None,
                 timeout: float = 180) -> Node:
        before = len(self.alive_nodes())
        # A temp dir of its own, as a separate machine has: with the head's, both nodes' runtime
        # env agents unpack a job's working folder into the same path, and the second unpacking
        # replaced the folder the job's driver was running in (os.getcwd() then failed).
        args = ["--address", self.gcs_address, "--temp-dir", str(self.temp_dir.with_name(f"{self.temp_dir.name}-{name}"))]
        return self._start_with_retries(name, args, cpus, resources or {name: 1},
                                        lambda node: self.wait_for_nodes(before + 1, timeout, node))

    def _start_with_retries(self, name, args, cpus, resources, started, attempts: int = 3) -> Node:
        """``ray start`` gives a raylet 30 s (hard-coded) to register; on a loaded machine it may
        miss that and exit, so a failed start is tried again."""
        for attempt in range(1, attempts + 1):
            node = self._ray_start(name, args, cpus, resources)
            try:
                started(node)
                return node
            except RuntimeError:
                self.nodes.pop(name, None)
                _stop_tree(node.process, node.descendants())
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def pids(self) -> set[int]:
        """Every process of every node: its ``ray start``, GCS, raylet, agents, workers."""
        return {pid for node in self.nodes.values() for pid in (node.process.pid, *node.descendants())}

    def kill_raylet(self, name: str) -> int:
        """SIGKILL the node's raylet (its Ray workers go with it), as a lost machine would; the pid."""
        pid = self.nodes[name].pid_of("raylet")
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop_node(self, name: str, grace: float = 30.0) -> None:
        node = self.nodes.pop(name)
        _stop_tree(node.process, node.descendants(), grace)

    def stop(self, grace: float = 30.0) -> None:
        """Further nodes first, then the head; every process by pid, killed after ``grace``
        seconds (a throwaway test cluster needs no graceful shutdown)."""
        for name in [n for n in self.nodes if n != "head"] + (["head"] if "head" in self.nodes else []):
            self.stop_node(name, grace)

    # -- state ------------------------------------------------------------------------------------
    def _dashboard_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=5):
                return True
        except urllib.error.HTTPError:
            return True  # 401 without a token: it is up
        except OSError:
            return False

    def _state(self, resource: str, filters: list[tuple[str, str, str]] = ()) -> list[dict]:
        """Ray's state API over the head's dashboard (what ``ray list nodes|actors`` and
        ``ray.util.state`` read): a plain HTTP request, where a Python process that imports Ray
        and connects costs seconds a call (the node polls of start-up made several)."""
        params = [("limit", "10000"), ("timeout", "30"), ("detail", "true")]
        for key, predicate, value in filters:
            params += [("filter_keys", key), ("filter_predicates", predicate), ("filter_values", value)]
        request = urllib.request.Request(f"{self.dashboard_url}/api/v0/{resource}?{urllib.parse.urlencode(params)}",
                                         headers=auth_headers())
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        if answer.get("result") is False:
            raise RuntimeError(f"state API ({resource}): {answer.get('msg')}")
        return answer["data"]["result"]["result"]

    def alive_nodes(self) -> list[dict]:
        """Ray's alive nodes (id and resources, as ``ray.nodes()`` gives them), or [] while the
        head's dashboard does not answer."""
        try:
            nodes = self._state("nodes", [("state", "=", "ALIVE")])
        except (OSError, ValueError, KeyError, RuntimeError):
            return []
        return [{"id": n["node_id"], "resources": n.get("resources_total", {})} for n in nodes]

    def actor_nodes(self, class_name: str) -> set[str]:
        """Node ids where actors of ``class_name`` ran (alive or dead), from Ray's state API."""
        return {a["node_id"] for a in self._state("actors", [("class_name", "=", class_name)])}

    def wait_for_nodes(self, count: int, timeout: float = 180, node: Node | None = None) -> list[dict]:
        nodes: list[dict] = []

        def enough() -> bool:
            nonlocal nodes
            nodes = self.alive_nodes()
            return len(nodes) >= count

        self._wait(enough, timeout, f"{count} alive Ray node(s)", node)
        return nodes

    @staticmethod
    def _wait(check, timeout: float, what: str, node: Node | None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node is not None and node.process.poll() is not None:
                raise RuntimeError(f"{what}: `ray start` exited ({node.process.returncode}); see {node.log}:\n"
                                   + _tail(node.log))
            if check():
                return
            time.sleep(0.25)  # a check is one local HTTP request
        raise TimeoutError(f"no {what} after {timeout:.0f} s" + (f"; see {node.log}" if node else ""))


class MlflowServer:
    """``mlflow server`` on 127.0.0.1: SQLite backend, artifacts served through the server, so
    clients reach runs, artifacts and the registry only over HTTP."""

    def __init__(self, root: Path, port: int = 5150, env: dict[str, str] | None = None):
        self.root = Path(root)
        self.port = port
        self.env = env or _env([])
        self.process: subprocess.Popen | None = None

    def pids(self) -> set[int]:
        """The server's process and its workers."""
        import psutil

        if self.process is None:
            return set()
        try:
            return {self.process.pid, *(p.pid for p in psutil.Process(self.process.pid).children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()

    def __enter__(self) -> "MlflowServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 120) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            str(Path(sys.executable).parent / "mlflow"), "server", "--host", LOOPBACK, "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1",
        ]
        # The server's job runner (a pool of huey consumers for MLflow's GenAI jobs) is not needed here.
        env = {**self.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.root / "mlflow-server.log", "ab") as out:
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.root / "mlflow-server.log"
                raise RuntimeError(f"mlflow server exited ({self.process.returncode}); see {log}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5):
                    return
            except OSError:
                time.sleep(0.25)
        raise TimeoutError(f"mlflow server not up at {self.uri} after {timeout:.0f} s")

    def stop(self, grace: float = 30.0) -> None:
        if self.process is None:
            return
        import psutil

        try:
            pids = [p.pid for p in psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pids = []
        _stop_tree(self.process, pids, grace)
        self.process = None



def auth_headers() -> dict[str, str]:
    """The token header for a Ray 2.60 dashboard (token from $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH
    or ~/.ray/auth_token), or {} without one."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        token = path.read_text().strip() if path.is_file() else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def serve_applications(dashboard_url: str) -> dict:
    """Serve's status from the dashboard's REST API (what ``serve status`` shows)."""
    request = urllib.request.Request(f"{dashboard_url}/api/serve/applications/", headers=auth_headers())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def running_replicas(dashboard_url: str, app: str, deployment: str) -> int:
    apps = serve_applications(dashboard_url).get("applications", {})
    replicas = apps.get(app, {}).get("deployments", {}).get(deployment, {}).get("replicas", [])
    return sum(r.get("state") == "RUNNING" for r in replicas)


def serve_config(cluster_config: Path, model_uri: str, tracking_uri: str, http_port: int, replicas: int = 2) -> dict:
    """``serve/config.cluster.yaml`` sized for CPUs on one machine: its shape (proxies, routes,
    limits, health checks) kept, the device, sizes, port, model and tracking server changed."""
    import yaml

    cfg = yaml.safe_load(Path(cluster_config).read_text())
    cfg["proxy_location"] = "HeadOnly"  # every node is this machine: a proxy per node would fight for the port
    cfg["http_options"]["port"] = http_port
    app = cfg["applications"][0]
    app["runtime_env"]["env_vars"].update({"MLFLOW_TRACKING_URI": tracking_uri, "OMP_NUM_THREADS": "1"})
    app["args"]["device"] = "cpu"
    app["args"]["models"]["rate_points"] = {"default": model_uri}
    app["args"]["models"]["default_rate_point"] = "default"
    for deployment in app["deployments"]:
        if deployment["name"] == "Ingress":
            deployment.update(num_replicas=1, ray_actor_options={"num_cpus": 0.1})
        else:
            deployment["autoscaling_config"].update(min_replicas=replicas, initial_replicas=replicas, max_replicas=replicas)
            deployment["ray_actor_options"] = {"num_cpus": 0.5, "num_gpus": 0}
            deployment["graceful_shutdown_timeout_s"] = 5
    return cfg
