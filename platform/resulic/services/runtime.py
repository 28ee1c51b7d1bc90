"""Process-level settings for entrypoints: quiet third-party logs, sensible thread counts.

By default a user sees what they need (progress, tables, where things went) and the libraries'
warnings and errors; their INFO chatter (Ray's, MLflow's database migrations, HTTP clients) is
hidden. ``resulic --verbose`` (``RESULIC_VERBOSE=1``, which Ray workers inherit) restores it.

Neither function imports a heavy library: ``resulic --help`` and ``resulic info`` must start in a
fraction of a second, and importing diffusers alone takes seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
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


# The libraries' deprecation notices (torch.jit's FutureWarning, Ray's RayDeprecationWarning...):
# for whoever upgrades the libraries, not for a codec user. As PYTHONWARNINGS, a process has these
# filters from its first line: Ray workers get it in their environment (cluster.local_worker_env).
WARNING_FILTERS = "ignore::FutureWarning,ignore::DeprecationWarning"


def quiet_libraries() -> None:
    """Hide library chatter that is not actionable for a codec user (unless verbose)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per download otherwise
    if verbose():
        return
    # Processes this one starts (Ray's, MLflow's server...) filter from their start. Here, a
    # warning option also tells Ray not to install its own filter when imported (ray.util.
    # annotations: "module" for RayDeprecationWarning, ahead of ours, unless sys.warnoptions is set).
    os.environ.setdefault("PYTHONWARNINGS", WARNING_FILTERS)
    if not sys.warnoptions:
        sys.warnoptions.extend(WARNING_FILTERS.split(","))
    # MLflow and Ray set their loggers' levels when imported: MLflow reads this variable, and
    # cluster.ensure_ray passes the level to ray.init; loggers already configured are set here.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Importing ray.serve gives its logger a level of its own (INFO: "Started Serve", "Application
    # ... is ready"), which the "ray" logger's cannot override: callers run this after that import.
    if "ray.serve" in sys.modules:
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    # Two loggers outside the "ray" tree: Ray Train V2 names one by its file path (an INFO line
    # "Reporting training result N: TrainingReport(...)" per checkpoint, from the training loop),
    # and Tune's result analysis warns "Failed to fetch metrics" for every trial because the
    # sweep turns off the per-trial result files on purpose (results live in MLflow).
    train_context = sys.modules.get("ray.train.v2._internal.execution.context")
    if train_context is not None:
        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # diffusers and transformers read their level from these when they are first imported...
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*should be kept in float32.*")
    # DDP compares a gradient's strides with its bucket's: a channels-last 1x1 convolution weight
    # (C, C, 1, 1) has strides (C, 1, C, C) against the bucket's (C, 1, 1, 1) — the same memory
    # order (size-1 dimensions have any stride), so nothing is copied that would not be anyway.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
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


# -- stopping on Ctrl-C and SIGTERM -----------------------------------------------------------------

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's status for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so cleanups run
    (``write_atomic`` removes its temporary file) and the process exits with status 143."""


_stopping: int | None = None  # the signal that a command's handler turned into an exception
_raised = False
STOP_DEADLINE_S = 10.0  # a stop that no code saw (swallowed somewhere) ends the process after this


def _in_finalizer(frame) -> bool:
    """Whether the signal arrived inside a ``__del__``: Python prints and drops an exception raised
    there ("Exception ignored in ..."), and the command would go on as if nothing happened."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _stop(signum, frame):
    global _stopping, _raised
    if _raised:  # a second Ctrl-C while cleaning up: leave now
        os._exit(128 + signum)
    if _stopping is None:
        _stopping = signum
        deadline = threading.Timer(STOP_DEADLINE_S, os._exit, (128 + signum,))
        deadline.daemon = True
        deadline.start()
    if _in_finalizer(frame):  # deliver it again in a moment, outside the finalizer
        threading.Timer(0.05, signal.pthread_kill, (threading.main_thread().ident, signum)).start()
        return
    _raised = True
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def stop_on_signals():
    """While inside: Ctrl-C and SIGTERM stop the command at once. Both raise in the main thread
    (KeyboardInterrupt, :class:`Terminated`), and what catches them may skip slow, graceful
    teardown (see :func:`stopping`). The previous handlers come back on leaving. Ray's ``ray.init()``
    installs its own SIGTERM handler (an abort, status 134): :func:`restore_stop_handlers` after it."""
    global _stopping
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _raised
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _stopping, _raised = None, False
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def restore_stop_handlers() -> None:
    """After ``ray.init()`` replaced SIGTERM's handler: :func:`stop_on_signals`' again, where it was called."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _stop:
        signal.signal(signal.SIGTERM, _stop)


def stopping() -> bool:
    """True once a command's Ctrl-C/SIGTERM handler fired: the process is about to exit, so a
    cleanup may skip what only a long-lived process needs (shutting Ray down gracefully...)."""
    return _stopping is not None


def exit_status(exc: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM: from the signal the handler saw (a library may have turned
    :class:`Terminated` into a plain KeyboardInterrupt on its way up), else from the exception."""
    if _stopping is not None:
        return 128 + _stopping
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def ignore_interrupts_in_child() -> None:
    """A worker process's initializer: Ctrl-C (sent to the whole process group) is the parent's to
    handle; it stops the workers itself, without a traceback from each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
