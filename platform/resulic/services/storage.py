"""Folders on local disk, NFS or object storage (``s3://``, ``gs://``, …) through pyarrow's
filesystems, which Ray Train uses for its own storage too; and a config's storage path taken from
``$RESULIC_STORAGE_PATH`` where the config leaves it to the environment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, TypeVar

from ..errors import ConfigError

MODEL_DIR = "model"  # <storage>/<run name>/model: a training run's final trained-codec folder

STORAGE_ENV = "RESULIC_STORAGE_PATH"
# A config's storage path left to where the job runs (the cluster configs, *-sd21.yaml): the
# configs ship inside the cluster image, and a bucket name written into them meant a rebuild for
# every bucket. The same variable jobs/submit.py reads for --storage.
STORAGE_PLACEHOLDER = "${" + STORAGE_ENV + "}"

Config = TypeVar("Config")  # a pydantic config: TrainConfig, SweepConfig


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


def storage_from_environment(cfg: Config, key: str, source: str, environ: Mapping[str, str] = os.environ,
                             hint: str | None = None) -> Config:
    """``cfg`` with :data:`STORAGE_PLACEHOLDER` at the dotted ``key`` (``run.storage_path``,
    ``storage_path``) replaced by ``$RESULIC_STORAGE_PATH``; any other value is kept. An unset
    variable is a one-line error naming the key and ``hint``, the caller's other way to give it
    (default ``--set <key>=...``)."""
    parts = key.split(".")
    owners = [cfg]
    for part in parts[:-1]:
        owners.append(getattr(owners[-1], part))
    if getattr(owners[-1], parts[-1]) != STORAGE_PLACEHOLDER:
        return cfg
    location = environ.get(STORAGE_ENV, "").strip()
    if not location:
        raise ConfigError(
            f"{source}: {key}: {STORAGE_PLACEHOLDER} leaves the storage path to the environment, and "
            f"{STORAGE_ENV} is not set: export {STORAGE_ENV}=s3://<bucket>/resulic/ray_results (storage "
            f"every node reaches) or pass {hint or f'--set {key}=<location>'}"
        )
    value = location
    for owner, part in zip(reversed(owners), reversed(parts)):
        value = owner.model_copy(update={part: value})  # a new config; the loaded one stays as it was
    return value
