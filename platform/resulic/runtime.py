"""Process-level settings for entrypoints: quiet third-party logs, sensible thread counts."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    """Hide library chatter that is not actionable for a codec user."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per download otherwise
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*should be kept in float32.*")
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
    except Exception:  # pragma: no cover - diffusers missing is reported elsewhere
        pass
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
    except Exception:  # pragma: no cover
        pass
    logging.getLogger("diffusers").setLevel(logging.ERROR)


def configure_threads() -> None:
    """Use the thread count from OMP_NUM_THREADS when set (torch otherwise takes every core)."""
    import torch

    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))
