"""Training photos anyone can get, with their licenses, as a manifest with cached latents.

Sources (none needs more than the package registries):

- ``debian``: the photos inside Debian's wallpaper packages, fetched with ``apt-get download``
  and unpacked with ``dpkg-deb -x`` (nothing is installed); each photo's license is read from
  the package's machine-readable ``copyright`` file (the stanza whose ``Files:`` pattern matches).
- ``wheels``: the photos that ship inside scikit-image and scikit-learn.
- any folder a user names, with the license they state.

Every photo is written at several scales (full resolution, 1/2 and 1/4 by default, the longest
side capped by ``max_side``): a 2560x1600 wallpaper downscaled to 512 px would keep 6 % of its
pixels, and downscaling also removes JPEG artefacts. Each scale is encoded by the model's
autoencoder once, over the whole picture (TAEF2's group norms see the whole image, as they do
when the codec compresses it): training then crops latents instead of running the encoder on
every step. Every record carries its photo's ``group`` (the original pixels' hash), so that a
held-out photo is held out at every scale; photos named by ``hold_out`` are written to a
separate ``heldout/`` folder and never enter the training manifest. Test sets are never training
data: photos whose pixels equal an image in an ``exclude`` folder, or whose name says Kodak, are
dropped and counted. No Ray, no MLflow.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from ..errors import ConfigError, ImageError
from ..images import list_images, open_image, write_atomic

# Debian bookworm packages with real photographs: package -> glob patterns of the photos (the
# abstract pictures and textures in the same packages are left out by name).
DEBIAN_PHOTOS: dict[str, tuple[str, ...]] = {
    "lomiri-wallpapers-16.04": ("usr/share/backgrounds/*_by_*.jpg",),
    "mate-backgrounds": ("usr/share/backgrounds/mate/nature/*.jpg",),
    # The one photograph among this package's renders (a nuthatch on a tree, 6028x3391).
    "lomiri-wallpapers-20.04": ("usr/share/backgrounds/Kleiber_by_*.jpg",),
    "plasma-workspace-wallpapers": tuple(
        f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg"
        for name in (
            "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
            "Grey", "Kite", "OneStandsOut", "Path", "summer_1am",
        )
    ),
}
NOT_PHOTOS = ("umang_by_", "analogpattern_by_")  # abstract art and a texture among the photos
# Packages whose photos are heavily JPEG-compressed at full size: only their 1/2 scale and below.
HALF_SCALE_PACKAGES = ("mate-backgrounds",)
# As each image's docstring (scikit-image) or README (scikit-learn) states; the Middlebury
# motorcycle pair is left out (no license stated).
SKIMAGE_PHOTOS = {
    "astronaut": "public domain (NASA)",
    "coffee": "CC0-1.0 (Rachel Michetti)",
    "chelsea": "CC0-1.0 (Stefan van der Walt)",
    "rocket": "public domain (SpaceX)",
}
SKLEARN_PHOTOS = {"china": "CC-BY-2.0 (danielbuechele, Flickr)", "flower": "CC-BY-2.0 (vultilion, Flickr)"}


@dataclass(frozen=True)
class Photo:
    name: str  # unique, safe as a file name
    source: str  # where it came from (package, wheel or folder)
    license: str
    load: Callable[[], Image.Image]
    max_scale: float = 1.0  # the largest scale worth training on (below 1 for over-compressed JPEGs)


@dataclass
class ManifestEntry:
    path: str
    caption: str
    latent: str
    license: str
    source: str
    sha256: str  # of the original pixels
    group: str  # the photo this record is a scale of (held out together)
    scale: float


# --------------------------------------------------------------------------------------------
# Sources

def copyright_licenses(copyright_file: Path) -> list[tuple[str, str]]:
    """(Files pattern, License) pairs of a DEP-5 ``copyright`` file, most specific last."""
    pairs: list[tuple[str, str]] = []
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    for stanza in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:\s*(.+(?:\n[ \t]+.+)*)", stanza, re.M)
        lic = re.search(r"^License:\s*(\S.*)$", stanza, re.M)
        if files and lic:
            for pattern in files.group(1).split():
                pairs.append((pattern, lic.group(1).strip()))
    return pairs


def license_for(path: str, pairs: list[tuple[str, str]]) -> str:
    """The license of the last stanza whose pattern matches the end of ``path`` (DEP-5 rule)."""
    found = "unknown"
    for pattern, lic in pairs:
        # Packages install files under other folders than their source tree's, so a pattern
        # matches the path's end or, failing that, the file name.
        named = Path(pattern).name
        if pattern == "*" or fnmatch.fnmatch(path, f"*{pattern}") or ("*" not in named and named == Path(path).name):
            found = lic
    return found


def _unpacked(workdir: Path, package: str) -> Path:
    """The package's files under ``workdir/<package>``: downloaded (no install) and unpacked once."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / package
    if not root.is_dir():
        debs = list(workdir.glob(f"{package}_*.deb"))
        if not debs:
            done = subprocess.run(["apt-get", "download", package], cwd=workdir, capture_output=True, text=True)
            debs = list(workdir.glob(f"{package}_*.deb"))
            if done.returncode != 0 or not debs:
                detail = (done.stderr.strip().splitlines() or ["no .deb written"])[-1]
                raise ConfigError(f"apt-get download {package}: {detail} (run 'apt-get update' first?)")
        staging = Path(tempfile.mkdtemp(dir=workdir))
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True)
        staging.rename(root)
    return root


def debian_photos(workdir: Path, packages: Iterable[str] = tuple(DEBIAN_PHOTOS)) -> list[Photo]:
    """Download the wallpaper packages (no install) and list their photos with licenses."""
    workdir.mkdir(parents=True, exist_ok=True)
    photos: list[Photo] = []
    for package in packages:
        root = _unpacked(workdir, package)
        pairs = copyright_licenses(root / "usr/share/doc" / package / "copyright")
        for pattern in DEBIAN_PHOTOS[package]:
            for path in sorted(root.glob(pattern)):
                if any(marker in path.name for marker in NOT_PHOTOS):
                    continue
                rel = path.relative_to(root).as_posix()
                label = path.parent.parent.parent.name if "wallpapers" in rel else path.stem
                photos.append(Photo(
                    f"{package}-{_safe(label)}", f"debian:{package}:/{rel}", license_for(rel, pairs),
                    lambda p=path: open_image(p), 0.5 if package in HALF_SCALE_PACKAGES else 1.0,
                ))
    return photos


# enlightenment-data (Debian, 400 MB): photographs at 3840x2160 stored as JPEG inside EFL's
# .edj files; the drawn backgrounds of the same folder (Dunes, Flat-Fan, Sunset-Hills, the
# Squiggles) are left out by name.
EDJE_PACKAGE = "enlightenment-data"
EDJE_PHOTOS = (
    "Bamboo", "Foggy-Trees", "God-Rays", "Green-Maple", "Lichen-Branches", "Mountain", "Peaks", "Red-Maple",
    "Sea-of-Lanterns", "Snow-Trees", "Spruce-Needles", "Sunset-Clouds", "White-Flower", "Yellow-Flower",
)
EDJE_FOLDER = "usr/share/enlightenment/data/backgrounds"


def edje_photos(workdir: Path) -> list[Photo]:
    """The photographs inside enlightenment-data's backgrounds: each .edj holds the picture at
    several sizes; the largest JPEG entry (read with ``eet -x``, from libeet-bin) is the photo."""
    import shutil

    if shutil.which("eet") is None:
        raise ConfigError("the enlightenment-data photos need the 'eet' tool: apt-get install libeet-bin "
                          "(or --no-edje)")
    root = _unpacked(workdir, EDJE_PACKAGE)
    lic = license_for(f"data/backgrounds/{EDJE_PHOTOS[0]}.edj",
                      copyright_licenses(root / "usr/share/doc" / EDJE_PACKAGE / "copyright"))
    extracted = workdir / f"{EDJE_PACKAGE}-photos"
    extracted.mkdir(exist_ok=True)
    photos = []
    for name in EDJE_PHOTOS:
        edj = root / EDJE_FOLDER / f"{name}.edj"
        if not edj.is_file():
            continue
        target = extracted / f"{name}.jpg"
        if not target.exists():
            _largest_jpeg(edj, target)
        photos.append(Photo(f"{EDJE_PACKAGE}-{name}", f"debian:{EDJE_PACKAGE}:/{EDJE_FOLDER}/{name}.edj", lic,
                            lambda p=target: open_image(p)))
    return photos


def _largest_jpeg(edj: Path, target: Path) -> None:
    keys = subprocess.run(["eet", "-l", str(edj)], capture_output=True, text=True, check=True).stdout.split()
    best = b""
    with tempfile.TemporaryDirectory() as tmp:
        for key in (k for k in keys if k.startswith("edje/images/")):
            out = Path(tmp) / "entry"
            subprocess.run(["eet", "-x", str(edj), key, str(out)], capture_output=True, check=True)
            data = out.read_bytes()
            if data.startswith(b"\xff\xd8\xff") and len(data) > len(best):
                best = data
    if not best:
        raise ConfigError(f"{edj}: holds no JPEG image")
    write_atomic(target, best)


def wheel_photos() -> list[Photo]:
    """The photographs inside the scikit-image and scikit-learn wheels."""
    from skimage import data as skdata
    from sklearn.datasets import load_sample_image

    photos = [
        Photo(f"skimage-{name}", f"scikit-image:data.{name}", lic,
              lambda n=name: Image.fromarray(getattr(skdata, n)()).convert("RGB"))
        for name, lic in SKIMAGE_PHOTOS.items()
    ]
    photos += [
        Photo(f"sklearn-{name}", f"scikit-learn:{name}.jpg", lic,
              lambda n=name: Image.fromarray(load_sample_image(f"{n}.jpg")).convert("RGB"))
        for name, lic in SKLEARN_PHOTOS.items()
    ]
    return photos


def folder_photos(folder: Path, license: str) -> list[Photo]:
    images = list_images(folder)
    if not images:
        raise ConfigError(f"{folder}: holds no images")
    return [Photo(f"{_safe(folder.name)}-{_safe(p.stem)}", f"folder:{p}", license, lambda p=p: open_image(p)) for p in images]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "image"


def pixel_hash(img: Image.Image) -> str:
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return hashlib.sha256(str(arr.shape).encode() + arr.tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# The manifest

def scale_sizes(size: tuple[int, int], scales: Iterable[float], max_side: int, min_side: int,
                max_scale: float = 1.0) -> list[tuple[float, tuple[int, int]]]:
    """(scale, size) of each scale worth writing: the longest side capped by ``max_side``, both
    sides multiples of 8 (latent and pixel crops line up) and at least ``min_side``, and each
    scale at most 0.7x the previous one kept (a capped full scale that equals the 1/2 scale is
    written once)."""
    w, h = size
    kept: list[tuple[float, tuple[int, int]]] = []
    for scale in sorted({s for s in scales if 0 < s <= max_scale}, reverse=True):
        factor = min(scale, max_side / max(w, h))
        sw, sh = (int(round(w * factor)) // 8) * 8, (int(round(h * factor)) // 8) * 8
        if min(sw, sh) < min_side:
            continue
        if kept and max(sw, sh) > 0.7 * max(kept[-1][1]):
            continue
        kept.append((round(factor, 4), (sw, sh)))
    return kept


def build_manifest(
    photos: list[Photo],
    out_dir: Path,
    *,
    max_side: int,
    min_side: int,
    encode: Callable[[Image.Image], "np.ndarray"] | None,
    scales: Iterable[float] = (1.0, 0.5, 0.25),
    exclude: Iterable[Path] = (),
    hold_out: Iterable[str] = (),
    progress: Callable[[str], None] = print,
) -> dict:
    """Write ``images/``, ``latents/`` and ``manifest.jsonl`` under ``out_dir``; returns a summary.

    ``encode`` turns a PIL image into its latent (C, H/8, W/8) float array; None skips latents.
    Photos whose name contains one of ``hold_out`` go to ``heldout/`` (their largest scale, no
    latents) and ``heldout.jsonl`` instead: never trained on at any scale.
    """
    excluded = {pixel_hash(open_image(p)) for folder in exclude if folder.is_dir() for p in list_images(folder)}
    hold_out = tuple(hold_out)
    for sub in ("images", "latents", "heldout"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    entries: list[ManifestEntry] = []
    held: list[ManifestEntry] = []
    dropped: list[str] = []
    for number, photo in enumerate(photos, 1):
        if "kodim" in photo.name.lower() or "kodak" in photo.name.lower():
            dropped.append(f"{photo.name}: a Kodak test image")
            continue
        try:
            original = photo.load()
        except (ImageError, OSError) as exc:
            dropped.append(f"{photo.name}: unreadable ({exc})")
            continue
        digest = pixel_hash(original)
        if digest in excluded:
            dropped.append(f"{photo.name}: equal to a test image")
            continue
        sizes = scale_sizes(original.size, scales, max_side, min_side, photo.max_scale)
        if not sizes:
            dropped.append(f"{photo.name}: {original.width}x{original.height} is smaller than {min_side} px at every scale")
            continue
        is_held = any(marker in photo.name for marker in hold_out)
        for scale, (w, h) in sizes[:1] if is_held else sizes:
            img = _resized(original, w, h)
            stem = photo.name if scale == 1 else f"{photo.name}@{scale:g}"
            folder = "heldout" if is_held else "images"
            image_path = out_dir / folder / f"{stem}.png"
            latent_path = out_dir / "latents" / f"{stem}.safetensors"
            if not image_path.exists():  # fast PNG compression: these files are written once, read once
                img.save(image_path.with_suffix(".tmp.png"), format="PNG", compress_level=1)
                image_path.with_suffix(".tmp.png").replace(image_path)
            has_latent = encode is not None and not is_held
            if has_latent and not latent_path.exists():
                from safetensors.numpy import save_file

                tmp = latent_path.with_suffix(".tmp")
                save_file({"latent": np.ascontiguousarray(encode(img), dtype=np.float32)}, str(tmp))
                tmp.replace(latent_path)
            (held if is_held else entries).append(ManifestEntry(
                f"{folder}/{stem}.png", "", f"latents/{stem}.safetensors" if has_latent else "",
                photo.license, photo.source, digest, digest[:16], scale,
            ))
        shown = ", ".join(f"{w}x{h}" for _, (w, h) in sizes)
        progress(f"[data] {number}/{len(photos)} {photo.name} {shown} ({photo.license}){' held out' if is_held else ''}")
        # The manifests so far, after every photo: an interrupted build (hours at full
        # resolution on a small CPU) is already a dataset, and a rerun skips the files it has.
        _write_manifests(out_dir, entries, held)
    if not entries:
        raise ConfigError("no training photos left (every source was empty or excluded)")
    _write_manifests(out_dir, entries, held)
    licenses: dict[str, int] = {}
    for e in entries:
        licenses[e.license] = licenses.get(e.license, 0) + 1
    summary = {
        "records": len(entries), "photos": len({e.group for e in entries}), "pixels": _pixels(out_dir, entries),
        "held_out": [e.path for e in held], "dropped": dropped, "licenses": licenses,
    }
    write_atomic(out_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _write_manifests(out_dir: Path, entries: list[ManifestEntry], held: list[ManifestEntry]) -> None:
    def lines(items: list[ManifestEntry]) -> bytes:
        return "".join(json.dumps({k: v for k, v in asdict(e).items() if v != "" or k == "caption"}) + "\n"
                       for e in items).encode()

    if entries:
        write_atomic(out_dir / "manifest.jsonl", lines(entries))
    if held:
        write_atomic(out_dir / "heldout.jsonl", lines(held))


def _resized(img: Image.Image, w: int, h: int) -> Image.Image:
    """``img`` at (w, h): Lanczos when it shrinks; a crop of at most 7 px when only the multiple
    of 8 differs."""
    if (img.width // 8) * 8 == w and (img.height // 8) * 8 == h:
        return img.crop((0, 0, w, h))
    return img.resize((w, h), Image.Resampling.LANCZOS)


def _pixels(out_dir: Path, entries: list[ManifestEntry]) -> int:
    total = 0
    for e in entries:
        with Image.open(out_dir / e.path) as img:
            total += img.width * img.height
    return total
