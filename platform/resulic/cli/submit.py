"""``ray job submit`` commands for the platform's jobs on a Ray cluster (docs/cluster.md).

    python jobs/submit.py train configs/train/stage1-sd21.yaml --storage s3://… [--set key=value ...] [--dry-run]

builds (and runs, unless ``--dry-run``)

    ray job submit --address http://127.0.0.1:8265 --working-dir . --submission-id <id>
        --runtime-env-json '{...}' --entrypoint-num-cpus 1 --no-wait
        -- python jobs/train.py --config configs/train/stage1-sd21.yaml --set run.storage_path=s3://…

- The config is loaded and validated here first, so a bad key fails on the laptop, not after
  the upload.
- The submission id is ``resulic-<kind>-<name>-<hash>``: the job's name (run.name, the sweep's
  name...) and 8 hex digits of the resolved config. Submitting the same job twice is refused by
  Ray instead of starting a second driver on the same run; a changed config is a new id;
  ``--attempt N`` resubmits the same config (e.g. after a spot loss; training resumes from its
  last checkpoint).
- The runtime environment: the working folder (``--working-dir .``, .gitignore'd files and
  outputs excluded, and ``platform/resulic``, which travels as the py_module), ``platform/resulic``
  as a py_module so the submitted library code is what runs (not the copy installed on the
  nodes) and its bundled weights are uploaded once, the offline/telemetry variables, and
  ``MLFLOW_TRACKING_URI`` when ``--tracking-uri`` (or ``$RESULIC_TRACKING_URI``) names a server;
  otherwise the cluster's own (cluster.yaml and the KubeRay manifests set it on every node).
- ``--storage`` (or ``$RESULIC_STORAGE_PATH``) sets the job's storage path key; a config that
  leaves it to the environment (``${RESULIC_STORAGE_PATH}``, the cluster configs) is refused
  without one.

- Ray 2.60 clusters started with ``ray start`` ask for a token (``~/.ray/auth_token``); the
  ``ray job`` CLI only sends it when ``RAY_AUTH_MODE=token``, which ``submit_environment`` sets
  when a token is there and the mode is unset (as ``ray.init`` does itself).
- After the job, ``job_report`` gives its status, where its logs are and the MLflow runs it
  printed (``MLflow run <id>`` / ``MLflow parent run <id>``).

No Ray or MLflow import at module level: building a command needs neither.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..config import load_config
from ..errors import ConfigError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # `ray dashboard cluster.yaml` forwards the head's dashboard here
# What every job needs on every node, whatever the cluster's defaults.
JOB_ENV = {
    "HF_HUB_OFFLINE": "1",  # weights come from shared storage, never from the hub
    "TRANSFORMERS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_TRAIN_V2_ENABLED": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
PY_MODULES = ["platform/resulic"]
# Not uploaded with the working folder (Ray also skips what .gitignore lists). Ray matches these
# against each py_module as well, relative to the module's own folder, so "/platform/resulic"
# (anchored at the root) leaves the library out of the working folder only: the py_module carries
# it, and the bundled weights (64 MB) travel once per job instead of twice.
EXCLUDES = [".git", ".venv", "outputs", "ray_results", "mlruns", "mlartifacts", "mlflow.db", "*.rslc",
            *(f"/{module}" for module in PY_MODULES)]


# Where every node mounts the shared file system at the same path: cluster.yaml's EFS and the
# resulic-shared volume of deploy/k8s. Other mounts are named with --shared-path.
SHARED_MOUNTS = ["/shared"]


@dataclass(frozen=True)
class JobKind:
    script: str
    storage_key: str | None  # the config key that holds the storage path, if the job has one


KINDS = {
    "train": JobKind("jobs/train.py", "run.storage_path"),
    "sweep": JobKind("jobs/sweep.py", "storage_path"),
    "evaluate": JobKind("jobs/evaluate.py", None),
    "promote": JobKind("jobs/promote.py", None),
}


@dataclass
class JobRequest:
    kind: str
    config: str
    overrides: list[str] = field(default_factory=list)
    address: str = DEFAULT_ADDRESS
    tracking_uri: str | None = None
    storage: str | None = None
    attempt: int = 1
    wait: bool = False
    shared_paths: list[str] = field(default_factory=list)  # folders every node mounts at this same path

    def all_overrides(self) -> list[str]:
        """The user's --set values plus the storage path one (last, so it wins)."""
        extra = []
        if self.storage:
            key = KINDS[self.kind].storage_key
            if key is None:
                raise ConfigError(f"--storage: a {self.kind} job has no storage path (train and sweep jobs do)")
            extra.append(f"{key}={self.storage}")
        return [*self.overrides, *extra]


def _schema(kind: str):
    if kind == "train":
        from ..train.config import TrainConfig

        return TrainConfig
    if kind == "sweep":
        from ..tune.sweep import SweepConfig

        return SweepConfig
    if kind == "promote":
        from ..tune.promote import PromoteConfig

        return PromoteConfig
    from ..evaluation.evaluate import EvaluateConfig

    return EvaluateConfig


def job_config(kind: str, path: str, overrides: list[str]):
    """The job's config as the job itself loads it, validated with its own schema."""
    return load_config(_schema(kind), path, overrides)


def _with_storage(cfg, kind: str, path: str):
    """A storage path the config leaves to ``$RESULIC_STORAGE_PATH`` must come with the request
    (``--storage``, or the variable, which ``request_from_env`` turns into it): the job gets it on
    its command line, so the submission id and the job agree, never from the nodes' environment."""
    from ..services.storage import storage_from_environment

    return storage_from_environment(cfg, KINDS[kind].storage_key, path, environ={}, hint="--storage <location>")


def _resolved(kind: str, path: str, overrides: list[str]) -> tuple[str, dict]:
    """(job name, resolved config as plain data: the values that differ from their defaults, so a
    release that adds a key leaves every submission id as it was)."""
    cfg = job_config(kind, path, overrides)
    if KINDS[kind].storage_key is not None:
        cfg = _with_storage(cfg, kind, path)
    if kind == "train":
        name = cfg.run.name
    elif kind == "promote":
        name = f"{cfg.model_name}-{cfg.sweep}"
    else:
        name = cfg.name
    return name, cfg.model_dump(mode="json", exclude_defaults=True)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "job"


def submission_id(request: JobRequest) -> str:
    if request.kind not in KINDS:
        raise ValueError(f"unknown job kind {request.kind!r}; one of {', '.join(KINDS)}")
    name, resolved = _resolved(request.kind, request.config, request.all_overrides())
    digest = hashlib.sha256(
        json.dumps({"kind": request.kind, "config": resolved}, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:8]
    suffix = f"-a{request.attempt}" if request.attempt > 1 else ""
    return f"resulic-{request.kind}-{slug(name)}-{digest}{suffix}"


def runtime_env(request: JobRequest) -> dict:
    env = dict(JOB_ENV)
    if request.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = request.tracking_uri
    return {"py_modules": PY_MODULES, "excludes": EXCLUDES, "env_vars": env}


def _left_behind(relative: PurePosixPath, workdir: Path) -> bool:
    """Whether the working folder is uploaded without ``relative``: one of EXCLUDES (names and
    globs match any path component, a leading / anchors at the root), or git-ignored (Ray skips
    what the .gitignore files list; `git check-ignore` reads them as Ray does). Outside a git
    checkout only EXCLUDES can be checked."""
    for pattern in EXCLUDES:
        if pattern.startswith("/"):
            anchored = PurePosixPath(pattern[1:])
            if relative == anchored or anchored in relative.parents:
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in relative.parts):
            return True
    try:
        check = subprocess.run(["git", "-C", str(workdir), "check-ignore", "-q", "--", str(relative)],
                               capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return check.returncode == 0  # 1: not ignored; 128: not a git checkout


def _unreachable(source: str, shared: list[str], workdir: Path) -> str | None:
    """Why the cluster's nodes cannot read a data.source (None when they can): ``samples`` (in
    the package) and URIs are read everywhere, a path under a shared mount is the same on every
    node, and a path in the working folder travels with it unless it is left behind."""
    if source == "samples" or "://" in source:
        return None
    path = Path(os.path.normpath(workdir / source))  # an absolute source stays as it is
    if any(path == Path(root) or Path(root) in path.parents for root in map(os.path.normpath, shared)):
        return None
    if workdir not in path.parents:
        return f"is a path on this machine under no shared mount ({', '.join(shared)})"
    if not path.exists():
        return "is not in the working folder, so no node gets it"
    if _left_behind(PurePosixPath(path.relative_to(workdir).as_posix()), workdir):
        return "is git-ignored (or excluded), so the working folder is uploaded without it"
    return None


def _path_like(value: str, workdir: Path) -> bool:
    """Whether a model or init location names a file-system path (absolute, ./-relative or present
    in the working folder) rather than a hub id, a run name, ``bundled`` or a URI."""
    if "://" in value or value in ("bundled", "random", "samples") or value.startswith("shipped:"):
        return False
    return value.startswith(("/", "./", "../", "~")) or (workdir / value).exists()


def _locations(stage, workdir: Path) -> list[tuple[str, str]]:
    """(key, value) of every location a training stage reads that must exist on the nodes."""
    found = [("data.source", stage.data.source)]
    if stage.init_from and _path_like(stage.init_from, workdir):
        found.append(("init_from", stage.init_from))
    source = stage.model.backbone.source
    if _path_like(source, workdir):
        found.append(("model.backbone.source", source))
    return found


def check_reachable(request: JobRequest, workdir: Path | None = None) -> None:
    """Refuse a train or sweep job that reads a location the cluster's nodes cannot (its
    data.source, a folder init_from names, the backbone's weights folder): the job would start,
    upload, wait for GPUs and only then fail on a file that exists only here."""
    if request.kind not in ("train", "sweep"):
        return
    workdir = Path(workdir or os.getcwd()).resolve()
    cfg = job_config(request.kind, request.config, request.all_overrides())
    if request.kind == "train":
        stages = [(request.config, cfg)]
    else:
        from ..tune.sweep import Sweep

        stages = list(zip(cfg.stages, Sweep.from_config(cfg).stages))
    shared = [*SHARED_MOUNTS, *request.shared_paths]
    for config, stage in stages:
        for key, value in _locations(stage, workdir):
            reason = _unreachable(os.path.expanduser(value), shared, workdir)
            if reason is None:
                continue
            # As written: a sweep's stages hold the absolute form of a local path (Sweep.from_config).
            shown = Path(value).relative_to(workdir).as_posix() if Path(value).is_relative_to(workdir) else value
            where = ("put the dataset where every node reads it (e.g. python jobs/build_dataset.py -o "
                     "/shared/datasets/photos, then --set data.source=/shared/datasets/photos/manifest.jsonl, "
                     "or an s3:// URI)") if key == "data.source" else \
                "put it where every node reads it (under /shared, or an s3:// URI)"
            raise ConfigError(f"{config}: {key}: {shown} {reason}, and the cluster's nodes cannot read it; "
                              f"{where}, or pass --shared-path DIR if every node mounts DIR at this same path")


def build_command(request: JobRequest) -> list[str]:
    """The ``ray job submit`` argv (entrypoint last, after ``--``, unquoted)."""
    check_reachable(request)
    argv = [
        "ray", "job", "submit",
        "--address", request.address,
        "--working-dir", ".",
        "--submission-id", submission_id(request),
        "--runtime-env-json", json.dumps(runtime_env(request), separators=(",", ":")),
        "--entrypoint-num-cpus", "1",
    ]
    if not request.wait:
        argv.append("--no-wait")
    argv += ["--", "python", KINDS[request.kind].script, "--config", request.config]
    for override in request.all_overrides():
        argv += ["--set", override]
    return argv


def format_command(argv: list[str]) -> str:
    return shlex.join(argv)


AUTH_MODE_ENV = "RAY_AUTH_MODE"
MLFLOW_RUN_LINE = re.compile(r"MLflow (?:parent )?run ([0-9a-f]{32})")


def auth_token_available(environ=os.environ) -> bool:
    """A Ray token where Ray's own loader looks: $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if environ.get("RAY_AUTH_TOKEN"):
        return True
    path = environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    return os.path.isfile(path)


def submit_environment(environ=os.environ) -> dict[str, str]:
    """The environment for ``ray job ...``: token authentication on when a token is there and
    ``RAY_AUTH_MODE`` is unset (an explicit mode is kept)."""
    env = dict(environ)
    if AUTH_MODE_ENV not in env and auth_token_available(env):
        env[AUTH_MODE_ENV] = "token"
    return env


@dataclass
class JobReport:
    submission_id: str
    status: str  # Ray's JobStatus name: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    message: str
    mlflow_runs: list[str]

    def lines(self, address: str, tracking_uri: str | None) -> list[str]:
        out = [f"job {self.submission_id}: {self.status}" + (f" ({self.message})" if self.message and self.status != "SUCCEEDED" else ""),
               f"logs: ray job logs {self.submission_id} --address {address}   (add -f to follow; "
               f"dashboard: {address.rstrip('/')}/#/jobs/{self.submission_id})"]
        where = tracking_uri or "the cluster's MLFLOW_TRACKING_URI"
        for run_id in self.mlflow_runs:
            out.append(f"MLflow run {run_id} in {where}" + (f": {run_link(tracking_uri, run_id)}" if tracking_uri else ""))
        if not self.mlflow_runs and self.status in ("PENDING", "RUNNING"):
            out.append(f"status: ray job status {self.submission_id} --address {address}")
        return out


def run_link(tracking_uri: str, run_id: str) -> str:
    """The run's page on an MLflow server (its id for a local store)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return run_id
    try:
        from mlflow import MlflowClient

        experiment = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id
    except Exception:  # the server may be unreachable from here; the id is still useful
        return f"{tracking_uri.rstrip('/')} (run {run_id})"
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


def job_report(address: str, submission: str) -> JobReport:
    """Status and MLflow runs of a submitted job, from the cluster's job API."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    info = client.get_job_info(submission)
    logs = client.get_job_logs(submission)
    runs = list(dict.fromkeys(MLFLOW_RUN_LINE.findall(logs)))
    status = getattr(info.status, "value", str(info.status))
    return JobReport(submission, status, (info.message or "").strip().splitlines()[0] if info.message else "", runs)


def request_from_env(kind: str, config: str, overrides=(), *, address=None, tracking_uri=None, storage=None,
                     attempt: int = 1, wait: bool = False, shared_paths=()) -> JobRequest:
    """A request with the defaults the environment gives: ``$RAY_ADDRESS``, ``$RESULIC_TRACKING_URI``,
    ``$RESULIC_STORAGE_PATH``."""
    return JobRequest(
        kind, config, list(overrides),
        address=address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS,
        tracking_uri=tracking_uri or os.environ.get("RESULIC_TRACKING_URI") or None,
        storage=storage or os.environ.get("RESULIC_STORAGE_PATH") or None,
        attempt=attempt, wait=wait, shared_paths=list(shared_paths),
    )
