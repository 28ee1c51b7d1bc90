"""Connecting to Ray: the cluster named by ``RAY_ADDRESS`` (a submitted job), or a local one
started here, bound to 127.0.0.1.

Import this module before ``ray`` anywhere in the platform: Ray reads
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` at import time, and ``0`` keeps a local cluster on the
loopback address instead of the machine's external one.
"""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

# What local Ray workers need to behave like the driver (offline, one thread each).
WORKER_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
              "MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY", "TOKENIZERS_PARALLELISM", "RESULIC_VERBOSE")

# Where Ray's job supervisor hands a submitted job's config (runtime env included) to its driver.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def submitted_job_env() -> dict[str, str]:
    """The environment variables of the submitted job this driver runs in (``ray job submit
    --runtime-env-json``), or {} outside a job. Ray refuses a ``ray.init(runtime_env=...)`` that
    sets one of them again, even to the same value."""
    from ray.job_config import JobConfig

    injected = os.environ.get(JOB_CONFIG_ENV)
    if not injected:
        return {}
    runtime_env = JobConfig.from_json(json.loads(injected)).runtime_env or {}
    return dict(runtime_env.get("env_vars") or {})


def worker_env() -> dict[str, str]:
    """The driver's WORKER_ENV variables that Ray workers would not get otherwise: inside a
    submitted job, those the job's runtime environment does not set already."""
    job_env = submitted_job_env()
    return {k: os.environ[k] for k in WORKER_ENV if k in os.environ and k not in job_env}


def ensure_ray(min_cpus: float = 1) -> None:
    """Use the running Ray (or ``RAY_ADDRESS``'s); otherwise start a local one with at least
    ``min_cpus`` logical CPUs plus two spare."""
    import ray

    from .runtime import library_log_level

    if ray.is_initialized():
        return
    env = worker_env()
    if os.environ.get("RAY_ADDRESS"):
        if os.environ["RAY_ADDRESS"] != "auto" and "://" not in os.environ["RAY_ADDRESS"]:
            # Ray Train's cleanup actors find the cluster's state API from RAY_ADDRESS, else by
            # looking for Ray processes on the node: with two clusters on one machine they guess.
            env.setdefault("RAY_ADDRESS", os.environ["RAY_ADDRESS"])
        ray.init(runtime_env={"env_vars": env} if env else None, log_to_driver=True,
                 logging_level=library_log_level())
        return
    # Logical CPUs: Ray only counts them. Two spare ones keep Ray Data and the Train/Tune
    # controllers from waiting on the workers' share on a small machine.
    num_cpus = max(math.ceil(min_cpus) + 2, os.cpu_count() or 1)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=True,  # Ray Train cleans up through the state API, which the dashboard serves
        dashboard_host="127.0.0.1",
        object_store_memory=2 * 1024**3,
        runtime_env={"env_vars": env},
        log_to_driver=True,
        logging_level=library_log_level(),  # Ray's INFO lines only with --verbose
    )


def quiet_data_progress() -> None:
    """Ray Data's per-operator progress bars drown the training log; the trainer prints its own."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
