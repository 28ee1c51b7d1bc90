"""Connecting to Ray: the cluster named by ``RAY_ADDRESS`` (a submitted job), or a local one
started here, bound to 127.0.0.1.

Import this module before ``ray`` anywhere in the platform: Ray reads
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` at import time, and ``0`` keeps a local cluster on the
loopback address instead of the machine's external one.
"""

from __future__ import annotations

import logging
import math
import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

# What local Ray workers need to behave like the driver (offline, one thread each).
WORKER_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
              "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY", "TOKENIZERS_PARALLELISM", "RESULIC_VERBOSE",
              "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "PYTHONWARNINGS")
# Ray Train's preemption watcher polls for nodes being drained (cloud spot instances); on one
# machine there is nothing to drain and its failed polls print tracebacks as warnings. A local
# Ray started here runs without it unless verbose (or the variable is set).
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def local_worker_env() -> dict[str, str]:
    """The environment of a local Ray's workers: the driver's WORKER_ENV variables, and unless
    verbose no preemption watcher (the Train controller, an actor, reads it from here) and the
    warning filters of runtime.quiet_libraries from each worker's start (PYTHONWARNINGS)."""
    from .runtime import WARNING_FILTERS, verbose

    env = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
    if not verbose():
        env.setdefault(PREEMPTION_WATCHER_ENV, "0")
        env.setdefault("PYTHONWARNINGS", WARNING_FILTERS)  # the libraries' deprecation notices, from the start
    return env

# Where Ray's job supervisor hands a submitted job's config (runtime env included) to its driver.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def in_submitted_job() -> bool:
    """True in the driver of a job submitted with ``ray job submit`` (Ray hands it the job's config)."""
    return bool(os.environ.get(JOB_CONFIG_ENV))


def driver_runtime_env() -> dict | None:
    """The runtime env this driver gives ``ray.init``: None inside a submitted job, else the
    WORKER_ENV variables it has.

    Inside a job the job's runtime env (``ray job submit --runtime-env-json``: working folder,
    py_modules, variables) already reaches every worker, and Ray refuses a ``ray.init`` runtime
    env that sets a variable the job sets ("Failed to merge the Job's runtime env": every
    submitted job died at start; tried on a local cluster, docs/cluster.md).
    """
    if in_submitted_job():
        return None
    env = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
    return {"env_vars": env}


def ensure_ray(min_cpus: float = 1) -> None:
    """Use this process's Ray (or ``RAY_ADDRESS``'s); otherwise start a local one of its own, with
    at least ``min_cpus`` logical CPUs plus two spare (a cluster to join is named by ``RAY_ADDRESS``)."""
    import ray

    from .runtime import library_log_level

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=driver_runtime_env(), log_to_driver=True, logging_level=library_log_level())
        return
    env = {**local_worker_env(), **loopback_preload()}
    # Logical CPUs: Ray only counts them. Two spare ones keep Ray Data and the Train/Tune
    # controllers from waiting on the workers' share on a small machine.
    num_cpus = max(math.ceil(min_cpus) + 2, os.cpu_count() or 1)
    ray.init(
        # "local": a new Ray of its own. Without it ray.init joins any Ray it finds running on the
        # machine (it scans for GCS processes) and then refuses num_cpus.
        address="local",
        num_cpus=num_cpus,
        include_dashboard=True,  # Ray Train cleans up through the state API, which the dashboard serves
        dashboard_host="127.0.0.1",
        object_store_memory=2 * 1024**3,
        runtime_env={"env_vars": env},
        log_to_driver=True,
        logging_level=library_log_level(),  # Ray's INFO lines only with --verbose
    )


def loopback_preload() -> dict[str, str]:
    """``LD_PRELOAD`` for a local Ray's workers (services/loopback.py): a training run's rank-0
    worker holds PyTorch's TCPStore, which listens on every interface whatever address it is
    given (docs/security.md); with the library it listens on 127.0.0.1. Empty where the library
    cannot be built here (not Linux, no C compiler) — said at INFO, since the run works as before."""
    from .loopback import LoopbackUnavailable, build, preload_env

    try:
        return {"LD_PRELOAD": preload_env(dict(os.environ), build())["LD_PRELOAD"]}
    except LoopbackUnavailable as exc:
        logging.getLogger(__name__).info("training workers keep their listeners where they bind them: %s", exc)
        return {}


def quiet_data_progress() -> None:
    """Ray Data's per-operator progress bars drown the training log; the trainer prints its own."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
