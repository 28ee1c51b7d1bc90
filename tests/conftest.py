"""Shared fixtures. Tests run offline, on one torch thread, with the tiny profile."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Commands without --model use the embedded tiny profile in tests (fast); the shipped default
# has its own tests (tests/test_shipped.py), which unset this.
os.environ["RESULIC_MODEL"] = "tiny"

from pathlib import Path

import pytest
import torch
from PIL import Image

from resulic.runtime import quiet_libraries

quiet_libraries()
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a skip with the reason when a user's clone has none."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not present (only the project's development machines have ../shared)")
    return path


@pytest.fixture(scope="session")
def codec():
    from resulic.codec import Codec

    return Codec.build()


@pytest.fixture(scope="session")
def photo() -> Image.Image:
    """A real photo, cropped to a size that is not a multiple of the 128-px stride."""
    from resulic.images import sample_images

    _, img = sample_images(1)[0]
    return img.crop((100, 60, 100 + 200, 60 + 150))


@pytest.fixture(scope="session")
def encoded(codec, photo):
    return codec.encode(photo)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session (127.0.0.1, 4 logical CPUs on any machine)."""
    from resulic import cluster

    import ray

    cluster.ensure_ray(min_cpus=3)
    cluster.quiet_data_progress()
    yield ray
    ray.shutdown()
