"""Training photos anyone can get, with their licenses, as a manifest with cached latents.

Sources (none needs more than the package registries):

- ``debian``: the photos inside Debian's wallpaper packages, fetched with ``apt-get download``
  and unpacked with ``dpkg-deb -x`` (nothing is installed); each photo's license is read from
  the package's machine-readable ``copyright`` file (the stanza whose ``Files:`` pattern matches).
- ``wheels``: the photos that ship inside scikit-image and scikit-learn.
- any folder a user names, with the license they state.

Every photo is downscaled once (``max_side``), written as PNG, optionally mirrored, and encoded
by the model's autoencoder once: training then crops latents instead of running the encoder on
every step (on a CPU the encoder costs more than the rest of a stage-1 step). Test sets are
never training data: photos whose pixels equal an image in an ``exclude`` folder, or whose name
says Kodak, are dropped and counted. No Ray, no MLflow.
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

from .errors import ConfigError, ImageError
from .images import list_images, open_image, shrink_to, write_atomic

# Debian bookworm packages with real photographs: package -> glob patterns of the photos (the
# abstract pictures and textures in the same packages are left out by name).
DEBIAN_PHOTOS: dict[str, tuple[str, ...]] = {
    "lomiri-wallpapers-16.04": ("usr/share/backgrounds/*_by_*.jpg",),
    "mate-backgrounds": ("usr/share/backgrounds/mate/nature/*.jpg",),
    "plasma-workspace-wallpapers": tuple(
        f"usr/share/wallpapers/{name}/contents/images/2560x1600.jpg"
        for name in (
            "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
            "Grey", "Kite", "OneStandsOut", "Path", "summer_1am",
        )
    ),
}
NOT_PHOTOS = ("umang_by_", "analogpattern_by_")  # abstract art and a texture among the photos
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


@dataclass
class ManifestEntry:
    path: str
    caption: str
    latent: str
    license: str
    source: str
    sha256: str  # of the original pixels


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


def debian_photos(workdir: Path, packages: Iterable[str] = tuple(DEBIAN_PHOTOS)) -> list[Photo]:
    """Download the wallpaper packages (no install) and list their photos with licenses."""
    workdir.mkdir(parents=True, exist_ok=True)
    photos: list[Photo] = []
    for package in packages:
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
        pairs = copyright_licenses(root / "usr/share/doc" / package / "copyright")
        for pattern in DEBIAN_PHOTOS[package]:
            for path in sorted(root.glob(pattern)):
                if any(marker in path.name for marker in NOT_PHOTOS):
                    continue
                rel = path.relative_to(root).as_posix()
                label = path.parent.parent.parent.name if "wallpapers" in rel else path.stem
                photos.append(Photo(
                    f"{package}-{_safe(label)}", f"debian:{package}:/{rel}", license_for(rel, pairs),
                    lambda p=path: open_image(p),
                ))
    return photos


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

def build_manifest(
    photos: list[Photo],
    out_dir: Path,
    *,
    max_side: int,
    min_side: int,
    mirror: bool,
    encode: Callable[[Image.Image], "np.ndarray"] | None,
    exclude: Iterable[Path] = (),
    progress: Callable[[str], None] = print,
) -> dict:
    """Write ``images/``, ``latents/`` and ``manifest.jsonl`` under ``out_dir``; returns a summary.

    ``encode`` turns a PIL image into its latent (C, H/8, W/8) float array; None skips latents.
    Images are cropped to a multiple of 8 px so that latent and pixel crops line up.
    """
    excluded = {pixel_hash(open_image(p)) for folder in exclude if folder.is_dir() for p in list_images(folder)}
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "latents").mkdir(parents=True, exist_ok=True)
    entries: list[ManifestEntry] = []
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
        img = shrink_to(original, max_side)
        w, h = (img.width // 8) * 8, (img.height // 8) * 8
        if min(w, h) < min_side:
            dropped.append(f"{photo.name}: {img.width}x{img.height} is smaller than {min_side} px")
            continue
        img = img.crop((0, 0, w, h))
        variants = [("", img)] + ([("-mirror", img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))] if mirror else [])
        for suffix, variant in variants:
            stem = f"{photo.name}{suffix}"
            image_path = out_dir / "images" / f"{stem}.png"
            latent_path = out_dir / "latents" / f"{stem}.safetensors"
            if not image_path.exists():
                variant.save(image_path.with_suffix(".tmp.png"), format="PNG")
                image_path.with_suffix(".tmp.png").replace(image_path)
            if encode is not None and not latent_path.exists():
                from safetensors.numpy import save_file

                tmp = latent_path.with_suffix(".tmp")
                save_file({"latent": np.ascontiguousarray(encode(variant), dtype=np.float32)}, str(tmp))
                tmp.replace(latent_path)
            entries.append(ManifestEntry(
                f"images/{stem}.png", "", f"latents/{stem}.safetensors" if encode is not None else "",
                photo.license, photo.source, digest,
            ))
        progress(f"[data] {number}/{len(photos)} {photo.name} {w}x{h} ({photo.license})")
    if not entries:
        raise ConfigError("no training photos left (every source was empty or excluded)")
    lines = "".join(json.dumps({k: v for k, v in asdict(e).items() if v != "" or k == "caption"}) + "\n" for e in entries)
    write_atomic(out_dir / "manifest.jsonl", lines.encode())
    licenses: dict[str, int] = {}
    for e in entries:
        licenses[e.license] = licenses.get(e.license, 0) + 1
    summary = {"records": len(entries), "photos": len({e.sha256 for e in entries}), "dropped": dropped, "licenses": licenses}
    write_atomic(out_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary

