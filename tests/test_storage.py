"""Folder copies through pyarrow's filesystems, exercised with file:// URIs (the same code path
as s3:// and gs://)."""

from resulic.services import storage


def test_uri_round_trip_of_a_folder(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    (src / "manifest.json").write_text("{}")
    (src / "w.bin").write_bytes(b"\x00\x01")
    uri = f"file://{tmp_path}/bucket/run/model"
    storage.upload_folder(src, uri)
    assert storage.file_exists(storage.join(uri, "manifest.json"))
    assert not storage.file_exists(storage.join(uri, "missing.json"))
    copy = storage.download_folder(uri)
    assert (copy / "w.bin").read_bytes() == b"\x00\x01"


def test_join_and_local_paths(tmp_path):
    assert storage.join("s3://b/root/", "run", "model") == "s3://b/root/run/model"
    assert storage.join(str(tmp_path), "a") == str(tmp_path / "a")
    assert not storage.is_uri(str(tmp_path)) and storage.is_uri("gs://x")
    (tmp_path / "f").write_text("x")
    assert storage.file_exists(str(tmp_path / "f"))
