"""Process-level settings for entrypoints: quiet third-party logs, sensible thread counts.

By default a user sees what they need (progress, tables, where things went) and the libraries'
warnings and errors; their INFO chatter (Ray's, MLflow's database migrations, HTTP clients) is
hidden. ``resulic --verbose`` (``RESULIC_VERBOSE=1``, which Ray workers inherit) restores it.

Neither function imports a heavy library: ``resulic --help`` and ``resulic info`` must start in a
fraction of a second, and importing diffusers alone takes seconds.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

VERBOSE_ENV = "RESULIC_VERBOSE"
# Loggers whose INFO messages are the libraries' business, not a user's.
LIBRARY_LOGGERS = ("ray", "mlflow", "alembic", "urllib3", "httpx", "filelock", "optuna", "fsspec")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(on: bool) -> None:
    """For this process and the Ray workers it starts (cluster.WORKER_ENV passes the variable on)."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"


def library_log_level() -> int:
    """The level of the libraries' loggers (Ray's too: ``ray.init(logging_level=...)``)."""
    return logging.INFO if verbose() else logging.WARNING


def quiet_libraries() -> None:
    """Hide library chatter that is not actionable for a codec user (unless verbose)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per download otherwise
    if verbose():
        return
    # MLflow and Ray set their loggers' levels when imported: MLflow reads this variable, and
    # cluster.ensure_ray passes the level to ray.init; loggers already configured are set here.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Importing ray.serve gives its logger a level of its own (INFO: "Started Serve", "Application
    # ... is ready"), which the "ray" logger's cannot override: callers run this after that import.
    if "ray.serve" in sys.modules:
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    # diffusers and transformers read their level from these when they are first imported...
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*should be kept in float32.*")
    # ...and a process that imported them already is told directly.
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
    if "transformers" in sys.modules:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
    logging.getLogger("diffusers").setLevel(logging.ERROR)


def configure_threads() -> None:
    """Use the thread count from OMP_NUM_THREADS when set (torch otherwise takes every core).

    A process that has not imported torch yet needs nothing: torch reads OMP_NUM_THREADS itself
    when it starts. Importing it here would cost every command seconds, model or not.
    """
    if "torch" not in sys.modules:
        return
    import torch

    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))
