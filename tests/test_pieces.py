"""The shipped folders store each weights file's shared parts once (``pieces/``): a pieced folder
loads as the whole one did, writes out whole byte for byte, and refuses a piece that is missing,
edited or claimed twice — as it refuses an edited file."""

import filecmp
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from resulic.codec import shipped, store
from resulic.errors import ModelLoadError

needs_release = pytest.mark.skipif(not (shipped.SHIPPED_DIR / shipped.INDEX).is_file(), reason="no shipped codecs in this checkout")
WEIGHTS = ("compressor.safetensors", "control.safetensors")


@pytest.fixture(scope="module")
def whole_set(tmp_path_factory) -> Path:
    """The shipped set written out whole: every folder as ``save_codec`` writes one."""
    out = tmp_path_factory.mktemp("whole") / "small-codecs"
    out.mkdir()
    shutil.copy(shipped.SHIPPED_DIR / shipped.INDEX, out / shipped.INDEX)
    for point in shipped.index()["points"]:
        store.materialize(shipped.SHIPPED_DIR / point["folder"], out / point["folder"])
    return out


@pytest.fixture
def pieced_set(whole_set, tmp_path) -> Path:
    out = tmp_path / "small-codecs"
    shutil.copytree(whole_set, out)
    shipped.share_pieces(out)
    return out


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@needs_release
def test_the_shared_parts_are_stored_once_and_rebuild_every_file_byte_for_byte(whole_set, pieced_set, tmp_path):
    points = shipped.index(pieced_set)["points"]
    pieces = sorted((pieced_set / store.PIECES_DIR).iterdir())
    # one control module for every point; the tiered default's low tier is the same piece as the
    # point that ships it alone (v1)
    assert len(pieces) < 2 * len(points)
    assert _size(pieced_set) < 0.85 * _size(whole_set)
    for point in points:
        folder = pieced_set / point["folder"]
        assert not any((folder / name).exists() for name in WEIGHTS), folder
        out = store.materialize(folder, tmp_path / "out" / point["folder"])
        for name in (*store.FILES, "manifest.json"):
            assert filecmp.cmp(whole_set / point["folder"] / name, out / name, shallow=False), (point["name"], name)
    tiered = json.loads((pieced_set / shipped.variable_name(pieced_set) / "manifest.json").read_text())
    assert [p["prefix"] for p in tiered["pieces"]["compressor.safetensors"]] == ["main.", "low."]


@needs_release
def test_a_pieced_folder_loads_with_its_fingerprint_and_encodes_as_the_whole_one(whole_set, pieced_set):
    name = shipped.variable_name(pieced_set)
    point = next(p for p in shipped.index(pieced_set)["points"] if p["name"] == name)
    encoder = store.load_codec(pieced_set / point["folder"], encode_only=True)
    whole = store.load_codec(whole_set / point["folder"], encode_only=True)
    assert encoder.fingerprint.hex() == point["fingerprint"]
    for (k, a), (_, b) in zip(encoder.compressor.state_dict().items(), whole.compressor.state_dict().items()):
        assert a.equal(b), k
    assert store.folder_is_whole(pieced_set / point["folder"])
    # a shipped folder copied elsewhere in this installation still finds the installed pieces
    elsewhere = pieced_set.parent / "elsewhere" / point["folder"]
    shutil.copytree(shipped.SHIPPED_DIR / point["folder"], elsewhere)
    assert store.load_codec(elsewhere, encode_only=True).fingerprint.hex() == point["fingerprint"]


def _a_piece(folder: Path) -> Path:
    manifest = json.loads((folder / "manifest.json").read_text())
    digest = manifest["pieces"]["compressor.safetensors"][0]["sha256"]
    return folder.parent / store.PIECES_DIR / f"{digest}.safetensors"


@needs_release
def test_an_edited_or_missing_piece_is_refused_with_its_name(pieced_set, monkeypatch):
    monkeypatch.setattr(store, "INSTALLED_PIECES", pieced_set / "none")  # this set's own pieces only
    folder = pieced_set / "r1"
    piece = _a_piece(folder)
    data = bytearray(piece.read_bytes())
    data[-1] ^= 1
    piece.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="contents do not match its name"):
        store.load_codec(folder, encode_only=True)
    assert not store.folder_is_whole(folder)
    piece.unlink()
    with pytest.raises(ModelLoadError, match=r"stored as shared pieces, and piece [0-9a-f]{12} is in neither"):
        store.load_codec(folder, encode_only=True)


@needs_release
def test_pieces_that_do_not_make_the_manifests_file_are_refused(pieced_set, monkeypatch):
    monkeypatch.setattr(store, "INSTALLED_PIECES", pieced_set / "none")
    folder = pieced_set / "r2"
    manifest = json.loads((folder / "manifest.json").read_text())
    # another point's compressor: a real piece, but not the file this manifest hashes
    other = json.loads((pieced_set / "r1" / "manifest.json").read_text())["pieces"]["compressor.safetensors"]
    manifest["pieces"]["compressor.safetensors"] = other
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="compressor.safetensors: contents do not match manifest.json"):
        store.load_codec(folder, encode_only=True)
    manifest["pieces"]["compressor.safetensors"] = other + other  # the same tensors twice
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="both hold"):
        store.load_codec(folder, encode_only=True)
    manifest["pieces"]["compressor.safetensors"] = [{"prefix": "", "sha256": "../../etc/passwd"}]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="expected a list of"):
        store.load_codec(folder, encode_only=True)


@needs_release
def test_a_release_keeps_only_the_pieces_its_points_use(pieced_set):
    data = shipped.index(pieced_set)
    dropped = data["points"].pop()  # a point no longer shipped: its own compressor piece goes
    piece = _a_piece(pieced_set / dropped["folder"])
    (pieced_set / shipped.INDEX).write_text(json.dumps(data))
    shipped.share_pieces(pieced_set)
    assert not piece.exists()
    for point in data["points"]:
        assert store.folder_is_whole(pieced_set / point["folder"]), point["name"]


def test_a_saved_folder_is_whole_and_loads_the_same_once_pieced(tmp_path, codec):
    """``save_codec`` never writes pieces; a folder pieced and written out whole again loads as it did."""
    folder = store.save_codec(codec, tmp_path / "set" / "c")
    assert "pieces" not in json.loads((folder / "manifest.json").read_text())
    with store.whole_folder(folder) as whole:
        assert whole == folder
    store.share_pieces(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["pieces"]) == set(WEIGHTS)
    for name in WEIGHTS:
        digest = manifest["pieces"][name][0]["sha256"]
        piece = tmp_path / "set" / store.PIECES_DIR / f"{digest}.safetensors"
        assert hashlib.sha256(piece.read_bytes()).hexdigest() == digest
    with store.whole_folder(folder) as whole:
        assert whole != folder and all((whole / name).is_file() for name in WEIGHTS)
        assert store.load_codec(whole).fingerprint == codec.fingerprint
    assert store.load_codec(folder).fingerprint == codec.fingerprint


def test_a_file_its_pieces_would_not_rebuild_stays_a_file_and_leaves_no_piece(tmp_path, codec):
    """A weights file with safetensors metadata is not what its pieces rebuild (they carry none):
    it stays in the folder, and nothing is left in ``pieces/`` for it."""
    from safetensors.torch import load_file, save_file

    from .test_store import _rehash

    folder = store.save_codec(codec, tmp_path / "set" / "c")
    save_file(load_file(folder / "control.safetensors"), folder / "control.safetensors", metadata={"by": "someone"})
    _rehash(folder)
    used = store.share_pieces(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["pieces"]) == {"compressor.safetensors"} and (folder / "control.safetensors").is_file()
    assert sorted(p.stem for p in (tmp_path / "set" / store.PIECES_DIR).iterdir()) == sorted(used)
    assert store.load_codec(folder).fingerprint == codec.fingerprint
