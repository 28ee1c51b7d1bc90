"""Training data: image folders, JSONL manifests or the sample photos -> records -> a Ray Data
pipeline of random crops with caption dropout, streamed to the training workers' shards.

A manifest has one JSON object per line: ``{"path": "img/001.png", "caption": "a red boat"}``;
``path`` is relative to the manifest, absolute, or a URI that pyarrow can open (``s3://…``,
``gs://…``). An optional ``"latent"`` (a safetensors file with the image's autoencoder latent,
as ``jobs/build_dataset.py`` writes) lets training crop latents instead of encoding each crop;
other keys (license, source, sha256) are kept for people and ignored here. Everything a user can get wrong (bad JSON, a missing file, an image smaller than
the crop) is reported before training starts, naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError, ImageError
from ..images import list_images, open_image, sample_images, save_image_atomic

LATENT_FACTOR = 8  # pixels per latent cell (the autoencoders of every profile downsample by 8)
MIN_EPOCH_ROWS = 512  # rows of one pass over the data (small datasets are repeated)


@dataclass(frozen=True)
class ImageRecord:
    path: str  # a local path or a URI
    caption: str = ""
    latent: str = ""  # the cached latent of the whole image (safetensors), or none
    group: str = ""  # the photo this image is a version of (a scale, a mirror): held out together

    @property
    def is_remote(self) -> bool:
        return "://" in self.path

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def photo(self) -> str:
        """What hold-out splits by: the record's group, else its file name."""
        return self.group or self.name


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
        latent = item.get("latent", "")
        if not isinstance(latent, str):
            raise ConfigError(f'{path}:{number}: "latent" must be a path string')
        # Older manifests have no group; their sha256 (of the original pixels) is shared by a
        # photo's mirrored copy, so it holds the two out together.
        group = item.get("group") or item.get("sha256") or ""
        if not isinstance(group, str):
            raise ConfigError(f'{path}:{number}: "group" must be a string')
        image, latent = (_beside(path, p) if p else "" for p in (item["path"], latent))
        records.append(ImageRecord(image, caption, latent, group))
    if not records:
        raise ConfigError(f"{path}: manifest lists no images")
    if len({bool(r.latent) for r in records}) > 1:
        raise ConfigError(f'{path}: either every line has a "latent" or none has')
    return records


def _beside(manifest: Path, path: str) -> str:
    """A manifest's path: URIs and absolute paths as they are, others relative to the manifest."""
    if "://" in path or Path(path).is_absolute():
        return path
    return str((manifest.parent / path).resolve())


def materialize_samples(folder: str | Path) -> list[ImageRecord]:
    """Write scikit-image's sample photos as PNGs (once) so that Ray Data can read them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for name, img in sample_images():
        path = folder / f"{name}.png"
        if not path.exists():  # a temporary name of its own: concurrent trials write the same folder
            save_image_atomic(img, path)
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
    """Hold out ``count`` photos, fixed by a hash of each photo's identity (stable as data is
    added): every record of a held-out photo (its other scales, a mirrored copy) leaves the
    training set; validation uses the first record of each (a manifest lists the largest first)."""
    photos = list(dict.fromkeys(r.photo for r in records))
    if count >= len(photos):
        raise ConfigError(
            f"data.validation_images: {count} held out of {len(photos)} photo(s) leaves none to train on"
        )
    held = set(sorted(photos, key=lambda p: hashlib.sha256(p.encode()).hexdigest())[:count])
    train = [r for r in records if r.photo not in held]
    validation = list({r.photo: r for r in reversed(records) if r.photo in held}.values())[::-1]
    return train, validation


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


def load_latent(path: str) -> np.ndarray:
    """(C, h, w) float32 from a safetensors file with one tensor named ``latent``."""
    from safetensors.numpy import load

    return load(read_bytes(path))["latent"]


def random_aligned_crop(
    img: Image.Image, latent: np.ndarray, size: int, factor: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The same random square of the image and of its latent (``factor`` px per latent cell).

    Crops are cut on the latent grid (multiples of ``factor`` px) so pixels and cells line up."""
    h, w = latent.shape[-2:]
    cells = size // factor
    if min(h, w) < cells or img.size != (w * factor, h * factor):
        raise ImageError(f"image {img.width}x{img.height} and latent {w}x{h} do not fit a {size}-px crop")
    left, top = int(rng.integers(0, w - cells + 1)), int(rng.integers(0, h - cells + 1))
    pixels = img.crop((left * factor, top * factor, (left + cells) * factor, (top + cells) * factor))
    return np.asarray(pixels, dtype=np.uint8), np.ascontiguousarray(latent[:, top : top + cells, left : left + cells])


def center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    side = min(size, w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


class CropAndDrop:
    """Ray Data row transform: read, random-crop, mirror half of the crops (``hflip``), drop the
    caption with probability p.

    A fresh random generator per process: every epoch sees new crops and dropouts. Only rows
    without a cached latent are mirrored (their latent is then encoded from the mirrored pixels):
    a mirrored latent is not the latent of the mirrored pixels. TAEF2's 32 channels are
    orientation-specific — the mirrored latent of a Kodak photo is 63-77 % of the latent's
    energy away from the latent of the mirrored photo and decodes to 19-25 dB against it, where
    the latent itself decodes to 27-33 dB (benchmarks/mirror_latent.py) — so a mirrored pair would train the compressor
    against a target it cannot meet (the ~20 dB cap of training rounds 3 and 4,
    docs/small-profile.md).
    """

    def __init__(self, crop_size: int, caption_dropout: float, hflip: bool = False,
                 cache_bytes: int = 3 << 30) -> None:
        self.crop_size = crop_size
        self.caption_dropout = caption_dropout
        self.hflip = hflip
        self.rng: np.random.Generator | None = None  # created in the worker, never pickled
        # Decoded images and latents, kept while they fit: a dataset of a few dozen photos at
        # three scales (about 2 GB decoded) is read once, not on every crop (decoding a
        # full-resolution PNG costs more than a training step).
        self.cache: dict[str, tuple] = {}
        self.cache_left = cache_bytes

    def _load(self, row: dict) -> tuple[Image.Image, np.ndarray | None]:
        key = row["path"]
        if key in self.cache:
            return self.cache[key]
        item = (load_image(row["path"]), load_latent(row["latent"]) if row.get("latent") else None)
        size = item[0].width * item[0].height * 3 + (item[1].nbytes if item[1] is not None else 0)
        if size <= self.cache_left:
            self.cache[key] = item
            self.cache_left -= size
        return item

    def __call__(self, row: dict) -> dict:
        if self.rng is None:
            self.rng = np.random.default_rng()
        out = {}
        try:
            img, latent = self._load(row)
            if latent is not None:
                out["image"], out["latent"] = random_aligned_crop(img, latent, self.crop_size, LATENT_FACTOR, self.rng)
            else:
                out["image"] = random_crop(img, self.crop_size, self.rng)
        except ImageError as exc:
            raise ImageError(f"{row['path']}: {exc}") from None
        if self.hflip and "latent" not in out and self.rng.random() < 0.5:
            out["image"] = np.ascontiguousarray(out["image"][:, ::-1])
        out["caption"] = "" if self.rng.random() < self.caption_dropout else row["caption"]
        return out


def crops_per_epoch(records: list[ImageRecord], crop_size: int) -> list[int]:
    """How often each record is cropped in one pass: in proportion to its area (a 2560x1600 photo
    gives far more distinct crops than a 640x400 one), at least once."""
    counts = []
    for r in records:
        if r.is_remote:
            counts.append(1)
            continue
        with Image.open(r.path) as img:
            counts.append(max(1, round(img.width * img.height / (4 * crop_size * crop_size))))
    return counts


def epoch_items(records: list[ImageRecord], crop_size: int) -> list[dict]:
    """One pass over the data as rows: each record as often as its area asks (crops_per_epoch),
    at least MIN_EPOCH_ROWS rows, in a fixed shuffled order."""
    import random

    counts = crops_per_epoch(records, crop_size)
    items = [{"path": r.path, "caption": r.caption, **({"latent": r.latent} if r.latent else {})}
             for r, n in zip(records, counts) for _ in range(n)]
    # Small datasets are repeated so that an epoch is long enough to keep a pipeline streaming
    # (every epoch restarts it).
    items = items * max(1, -(-MIN_EPOCH_ROWS // len(items)))
    random.Random(0).shuffle(items)  # a photo's crops spread over the epoch, not in one batch
    return items


def worker_batches(items: list[dict], crop_size: int, caption_dropout: float, hflip: bool, batch_size: int,
                   rank: int, world: int, seed: int):
    """Endless batches for one training worker, cropped in its own process: its share of the
    rows (every ``world``-th), reshuffled each epoch, in the layout Ray Data's ``iter_batches``
    gives (``image`` (B, H, W, 3) uint8, ``latent`` (B, C, h, w), ``caption``)."""
    share = items[rank::world]
    if not share:
        raise ConfigError("this worker's share of the training rows is empty: use fewer workers or more images")
    transform = CropAndDrop(crop_size, caption_dropout, hflip)
    transform.rng = np.random.default_rng(seed + 7919 * rank)

    def rows():
        epoch = 0
        while True:  # each epoch its own order, reproducible from (seed, rank, epoch)
            for i in np.random.default_rng((seed, rank, epoch)).permutation(len(share)):
                yield transform(share[i])
            epoch += 1

    stream = rows()
    while True:
        batch = [next(stream) for _ in range(batch_size)]
        yield {key: np.array([r[key] for r in batch]) if key == "caption" else np.stack([r[key] for r in batch])
               for key in batch[0]}


def train_dataset(records: list[ImageRecord], crop_size: int, caption_dropout: float, hflip: bool = False):
    """The streaming Ray Data pipeline the workers' shards read from."""
    import ray.data

    # One long-lived actor crops, so no worker process is started per epoch (on a 2-core machine
    # starting Python workers costs more than the crops). It reserves no CPU: the training workers
    # it feeds hold the CPUs a job asks for, and an actor that waited for one more would wait for
    # ever (a 2-CPU node with a 1-CPU job driver and a 1-CPU worker, or a restarted worker group
    # on the node that survived). Its crops are light next to a training step.
    return ray.data.from_items(epoch_items(records, crop_size)).map(
        CropAndDrop, fn_constructor_kwargs={"crop_size": crop_size, "caption_dropout": caption_dropout, "hflip": hflip},
        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0,
    )
