"""Training data: image folders, JSONL manifests or the sample photos -> records -> a Ray Data
pipeline of random crops with caption dropout, streamed to the training workers' shards.

A manifest has one JSON object per line: ``{"path": "img/001.png", "caption": "a red boat"}``;
``path`` is relative to the manifest, absolute, or a URI that pyarrow can open (``s3://…``,
``gs://…``). Everything a user can get wrong (bad JSON, a missing file, an image smaller than
the crop) is reported before training starts, naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ConfigError, ImageError
from .images import list_images, open_image, sample_images


@dataclass(frozen=True)
class ImageRecord:
    path: str  # a local path or a URI
    caption: str = ""

    @property
    def is_remote(self) -> bool:
        return "://" in self.path

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def read_manifest(path: str | Path) -> list[ImageRecord]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{path}: manifest not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read manifest ({exc})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not item["path"]:
            raise ConfigError(f'{path}:{number}: expected an object with a "path" string')
        caption = item.get("caption", "")
        if not isinstance(caption, str):
            raise ConfigError(f'{path}:{number}: "caption" must be a string')
        image = item["path"]
        if "://" not in image and not Path(image).is_absolute():
            image = str((path.parent / image).resolve())
        records.append(ImageRecord(image, caption))
    if not records:
        raise ConfigError(f"{path}: manifest lists no images")
    return records


def materialize_samples(folder: str | Path) -> list[ImageRecord]:
    """Write scikit-image's sample photos as PNGs (once) so that Ray Data can read them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for name, img in sample_images():
        path = folder / f"{name}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            img.save(tmp, format="PNG")
            tmp.replace(path)
        records.append(ImageRecord(str(path.resolve())))
    return records


def resolve_records(source: str, cache_dir: str | Path) -> list[ImageRecord]:
    """``source`` (folder, manifest or 'samples') -> records."""
    if source == "samples":
        return materialize_samples(Path(cache_dir) / "samples")
    path = Path(source)
    if path.is_dir():
        records = [ImageRecord(str(p.resolve())) for p in list_images(path)]
        if not records:
            raise ConfigError(f"data.source: {path} holds no images")
        return records
    if path.is_file():
        return read_manifest(path)
    raise ConfigError(f"data.source: {source} is neither an image folder, a manifest file nor 'samples'")


def dataset_hash(records: list[ImageRecord]) -> str:
    """Identifies the dataset: the records (paths and captions) in order."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(asdict(r), sort_keys=True).encode())
    return h.hexdigest()[:16]


def split_validation(records: list[ImageRecord], count: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """A fixed held-out subset chosen by a hash of each image's name (stable as data is added)."""
    if count >= len(records):
        raise ConfigError(
            f"data.validation_images: {count} held out of {len(records)} image(s) leaves none to train on"
        )
    ranked = sorted(records, key=lambda r: hashlib.sha256(r.name.encode()).hexdigest())
    held = set(ranked[:count])
    return [r for r in records if r not in held], [r for r in records if r in held]


def check_images(records: list[ImageRecord], min_side: int) -> None:
    """Local images exist, are images and are at least ``min_side`` on both sides (headers only)."""
    for r in records:
        if r.is_remote:
            continue  # checked when a worker reads it
        path = Path(r.path)
        if not path.is_file():
            raise ImageError(f"{path}: listed in the training data but not found")
        try:
            with Image.open(path) as img:
                w, h = img.size
        except Exception as exc:  # noqa: BLE001 - any failure to read a header is the same for a user
            raise ImageError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
        if min(w, h) < min_side:
            raise ImageError(f"{path}: {w}x{h} is smaller than the {min_side}-px crop (data.crop_size)")


def read_bytes(path: str) -> bytes:
    if "://" in path:
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        with fs.open_input_file(inner) as f:
            return f.read()
    return Path(path).read_bytes()


def load_image(path: str) -> Image.Image:
    return open_image(read_bytes(path)) if "://" in path else open_image(path)


def random_crop(img: Image.Image, size: int, rng: np.random.Generator) -> np.ndarray:
    w, h = img.size
    if min(w, h) < size:
        raise ImageError(f"image {w}x{h} is smaller than the {size}-px crop")
    left, top = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    side = min(size, w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


class CropAndDrop:
    """Ray Data row transform: read, random-crop, drop the caption with probability p.

    A fresh random generator per process: every epoch sees new crops and dropouts.
    """

    def __init__(self, crop_size: int, caption_dropout: float) -> None:
        self.crop_size = crop_size
        self.caption_dropout = caption_dropout
        self.rng: np.random.Generator | None = None  # created in the worker, never pickled

    def __call__(self, row: dict) -> dict:
        if self.rng is None:
            self.rng = np.random.default_rng()
        try:
            img = load_image(row["path"])
            crop = random_crop(img, self.crop_size, self.rng)
        except ImageError as exc:
            raise ImageError(f"{row['path']}: {exc}") from None
        caption = "" if self.rng.random() < self.caption_dropout else row["caption"]
        return {"image": crop, "caption": caption}


def train_dataset(records: list[ImageRecord], crop_size: int, caption_dropout: float):
    """The streaming Ray Data pipeline the workers' shards read from."""
    import ray.data

    items = [{"path": r.path, "caption": r.caption} for r in records]
    return ray.data.from_items(items).map(CropAndDrop(crop_size, caption_dropout), num_cpus=0.25)
