"""What the ``resulic`` command and its remote client share: the file suffix, the (source,
destination) pairs of a file or folder argument, and the ``--tracking-uri`` option."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from ..errors import ResulicError

SUFFIX = ".rslc"


def tracking_uri_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", metavar="URI",
                   help="the MLflow store that holds models:/ URIs (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")


def file_pairs(inp: Path, out: str | None, pattern: Callable[[Path], bool], suffix: str, folder_tag: str):
    """(source, destination) pairs for a file or a folder."""
    if inp.is_dir():
        dest = Path(out) if out else inp.with_name(inp.name + folder_tag)
        sources = sorted(p for p in inp.iterdir() if p.is_file() and pattern(p))
        if not sources:
            raise ResulicError(f"{inp}: no matching files in the folder")
        return [(p, dest / (p.stem + suffix)) for p in sources], True
    if not inp.exists():
        raise ResulicError(f"{inp}: no such file or folder")
    return [(inp, Path(out) if out else inp.with_suffix(suffix))], False
