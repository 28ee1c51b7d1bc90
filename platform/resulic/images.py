"""Image and file I/O at the codec's edges: reading with guards, tensors, padding, atomic writes."""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

if TYPE_CHECKING:  # torch is imported where tensors are made: reading and writing files does not need it
    import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
DEFAULT_MAX_PIXELS = 64_000_000  # a decompression-bomb guard; configurable by callers
DECODED_MARK = ("Software", "resulic decompress")  # a PNG text chunk: this image was decoded by us


def open_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file (or its bytes) as RGB, checking its size before decoding pixels."""
    name = "image data" if isinstance(source, (bytes, bytearray)) else str(source)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("image data is empty")
        fp = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: file is empty")
        fp = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            w, h = img.size  # read from the header; no pixels decoded yet
            if w * h > max_pixels:
                raise ImageError(f"{name}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,}")
            if w == 0 or h == 0:
                raise ImageError(f"{name}: image has zero size")
            img.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (or a format Pillow cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: unreadable or truncated image ({exc})") from None
    return img.convert("RGB")


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor (1, 3, H, W) in [0, 1]."""
    import torch

    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_image(x: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> 8-bit PIL RGB (rounded, as a viewer would see it)."""
    import torch

    if x.dim() == 4:
        x = x[0]
    arr = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``multiple`` by repeating the edge (no artificial edges to code)."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def padded_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    return h + (-h) % multiple, w + (-w) % multiple


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it (briefly)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename: never a half-written file.

    The file gets the permissions ``open()`` would give it (0o666 less the umask): mkstemp makes
    its temporary file 0o600, which the rename would otherwise keep.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def png_bytes(img: Image.Image, mark: bool = False) -> bytes:
    """PNG bytes; ``mark``: with :data:`DECODED_MARK` (a decoded image, see :func:`is_decoded_by_us`)."""
    buf = io.BytesIO()
    if mark:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text(*DECODED_MARK)
        img.save(buf, format="PNG", pnginfo=info)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


def save_image_atomic(img: Image.Image, path: str | Path, mark: bool = False) -> None:
    """Write ``img`` in the format its suffix names (PNG otherwise), atomically. ``mark``: a PNG
    carries :data:`DECODED_MARK`, so a later decode knows the file is its own (:func:`is_decoded_by_us`)."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        path.suffix.lower(), "PNG"
    )
    if fmt == "PNG":
        write_atomic(path, png_bytes(img, mark=mark))
        return
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    write_atomic(path, buf.getvalue())


def is_decoded_by_us(path: str | Path) -> bool:
    """Whether ``path`` is a PNG that ``resulic decompress`` wrote (it carries :data:`DECODED_MARK`)."""
    try:
        with Image.open(path) as img:
            return img.format == "PNG" and img.text.get(DECODED_MARK[0]) == DECODED_MARK[1]
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError):
        return False


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such image folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


SAMPLE_NAMES = ("astronaut", "coffee", "chelsea", "rocket")


def sample_images(limit: int | None = None) -> list[tuple[str, Image.Image]]:
    """Real photos that ship inside the scikit-image wheel (no download needed)."""
    from skimage import data as skdata

    out = []
    for name in SAMPLE_NAMES[:limit]:
        arr = getattr(skdata, name)()
        out.append((name, Image.fromarray(arr).convert("RGB")))
    return out


def shrink_to(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    scale = max_side / max(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
