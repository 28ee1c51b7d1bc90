"""Image input guards and padding."""

import io
import os
import stat

import pytest
import torch
from PIL import Image

from resulic.errors import ImageError
from resulic.images import (
    current_umask, image_to_tensor, open_image, pad_to_multiple, save_image_atomic, tensor_to_image, write_atomic,
)


def _png(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_reads_files_and_bytes(tmp_path):
    (tmp_path / "a.png").write_bytes(_png())
    assert open_image(tmp_path / "a.png").size == (40, 30)
    assert open_image(_png()).mode == "RGB"


@pytest.mark.parametrize(
    "payload,message",
    [(b"", "empty"), (b"hello, not an image", "not an image"), (_png()[:60], "unreadable or truncated")],
)
def test_bad_images(tmp_path, payload, message):
    path = tmp_path / "x.png"
    path.write_bytes(payload)
    with pytest.raises(ImageError, match=message):
        open_image(path)


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ImageError, match="exceeds the limit"):
        open_image(_png((400, 300)), max_pixels=1000)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "nope.png")


def test_pad_and_tensor_round_trip():
    img = Image.new("RGB", (130, 70), (1, 2, 3))
    x = image_to_tensor(img)
    padded = pad_to_multiple(x, 128)
    assert padded.shape[-2:] == (128, 256)
    assert tensor_to_image(padded[..., :70, :130]).tobytes() == img.tobytes()
    assert torch.equal(pad_to_multiple(padded, 128), padded)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(TypeError):
        write_atomic(target, object())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    write_atomic(target, b"ok")
    assert target.read_bytes() == b"ok"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        assert current_umask() == umask
        write_atomic(tmp_path / "photo.rslc", b"data")
        save_image_atomic(Image.new("RGB", (4, 4)), tmp_path / "photo.png")
        (tmp_path / "plain.bin").write_bytes(b"data")  # what open() gives: the reference
    finally:
        os.umask(previous)
    for name in ("photo.rslc", "photo.png", "plain.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "photo.rslc", "plain.bin"]  # no temporaries
