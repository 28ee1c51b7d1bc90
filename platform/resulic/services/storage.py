"""Folders on local disk, NFS or object storage (``s3://``, ``gs://``, …) through pyarrow's
filesystems, which Ray Train uses for its own storage too."""

from __future__ import annotations

import tempfile
from pathlib import Path

MODEL_DIR = "model"  # <storage>/<run name>/model: a training run's final trained-codec folder


def is_uri(location: str) -> bool:
    return "://" in location


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_uri(base) else str(Path(base, *parts))


def file_exists(location: str) -> bool:
    if not is_uri(location):
        return Path(location).is_file()
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(location)
    return fs.get_file_info(inner).type == pyarrow.fs.FileType.File


def upload_folder(local: Path, location: str) -> None:
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(location)
    fs.create_dir(inner, recursive=True)  # object stores ignore this; local and NFS need it
    pyarrow.fs.copy_files(str(local), location)


def download_folder(location: str) -> Path:
    """A local copy of a folder URI (a fresh temporary folder)."""
    import pyarrow.fs

    target = Path(tempfile.mkdtemp(prefix="resulic-"))
    pyarrow.fs.copy_files(location, str(target))
    return target
