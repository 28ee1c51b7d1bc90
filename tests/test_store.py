"""Trained-codec folders and sd21-shaped loading through locally saved models."""

import json
import numpy as np
import pytest
import yaml

from resulic.codec.store import load_codec, save_codec
from resulic.codec.resolve import resolve_codec
from resulic.config import BackboneConfig
from resulic.errors import ModelLoadError
from resulic.models.backbone import build_tiny, load_backbone, save_backbone, weights_digest


@pytest.fixture(scope="module")
def folder(codec, tmp_path_factory):
    return save_codec(codec, tmp_path_factory.mktemp("codec") / "r300")


def test_folder_holds_only_declarative_files(folder):
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["compressor.safetensors", "config.yaml", "control.safetensors", "manifest.json"]


def test_save_and_load_give_the_same_model_and_pixels(codec, folder, encoded):
    loaded = load_codec(folder)
    assert loaded.fingerprint == codec.fingerprint
    assert json.loads((folder / "manifest.json").read_text())["fingerprint"] == codec.fingerprint.hex()
    assert np.array_equal(np.asarray(loaded.decompress(encoded.data)), np.asarray(codec.decompress(encoded.data)))


def test_resolve_codec_accepts_folder_yaml_and_default(folder, codec):
    assert resolve_codec(str(folder)).fingerprint == codec.fingerprint
    assert resolve_codec("configs/model/tiny.yaml").fingerprint == codec.fingerprint
    assert resolve_codec(None).fingerprint == codec.fingerprint
    with pytest.raises(ModelLoadError, match="neither"):
        resolve_codec("no/such/model")


@pytest.mark.parametrize("damage", ["edit_config", "truncate_weights", "drop_manifest", "wrong_format"])
def test_damaged_folders_are_refused(folder, tmp_path, damage):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    if damage == "edit_config":
        cfg = yaml.safe_load((bad / "config.yaml").read_text())
        cfg["rate_point"]["seed"] = 1
        (bad / "config.yaml").write_text(yaml.safe_dump(cfg))
    elif damage == "truncate_weights":
        data = (bad / "compressor.safetensors").read_bytes()
        (bad / "compressor.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "drop_manifest":
        (bad / "manifest.json").unlink()
    else:
        (bad / "manifest.json").write_text('{"format": "pickle"}')
    with pytest.raises(ModelLoadError):
        load_codec(bad)


def test_sd21_profile_loads_a_locally_saved_model(tmp_path):
    tiny = build_tiny(BackboneConfig())
    save_backbone(tiny, tmp_path / "sd")
    loaded = load_backbone(BackboneConfig(profile="sd21", source=str(tmp_path / "sd")))
    assert weights_digest(loaded.vae, loaded.unet, loaded.text_encoder) == weights_digest(tiny.vae, tiny.unet, tiny.text_encoder)
    assert loaded.tokenizer("a red barn").input_ids == tiny.tokenizer("a red barn").input_ids
    assert loaded.identity.startswith("sd21:")


def test_missing_sd21_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="backbone.source") as info:
        load_backbone(BackboneConfig(profile="sd21", source="nobody/no-such-model"))
    assert "hub id 'nobody/no-such-model'" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="local folder"):
        load_backbone(BackboneConfig(profile="sd21", source=str(tmp_path / "empty")))


def test_saving_never_replaces_an_unrelated_folder(codec, folder, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(ModelLoadError, match="refusing to replace"):
        save_codec(codec, precious)
    assert (precious / "thesis.tex").read_text() == "do not delete"
    assert save_codec(codec, folder) == folder  # an earlier codec folder may be replaced


def _rehash(folder):
    """Recompute manifest.json's hashes, as anyone crafting a folder would."""
    from resulic.codec.store import FILES, _sha256

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {name: _sha256(folder / name) for name in FILES}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_non_safetensors_weights_file_is_one_line(folder, tmp_path, encoded, capsys):
    import shutil

    from resulic.cli.commands import main

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "compressor.safetensors").write_bytes(b"\x80\x04K\x01." + bytes(100))  # a pickle, not safetensors
    _rehash(bad)
    with pytest.raises(ModelLoadError, match="compressor.safetensors: not a readable safetensors file"):
        load_codec(bad)
    (tmp_path / "f.rslc").write_bytes(encoded.data)
    assert main(["decompress", str(tmp_path / "f.rslc"), "--model", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable safetensors file" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def sd21_folder(tmp_path_factory):
    """A trained-codec folder on an sd21-profile backbone (the tiny weights in diffusers layout)."""
    from resulic.codec import Codec
    from resulic.config import ModelConfig

    root = tmp_path_factory.mktemp("sd21")
    save_backbone(build_tiny(BackboneConfig()), root / "backbones" / "sd")
    config = ModelConfig(backbone=BackboneConfig(profile="sd21", source=str(root / "backbones" / "sd")))
    return save_codec(Codec.build(config), root / "codec"), root


def test_backbone_source_must_be_in_an_allowed_place(sd21_folder, monkeypatch):
    folder, root = sd21_folder
    monkeypatch.delenv("RESULIC_BACKBONE_ROOTS", raising=False)
    with pytest.raises(ModelLoadError, match="outside the allowed backbone locations.*RESULIC_BACKBONE_ROOTS"):
        load_codec(folder)
    monkeypatch.setenv("RESULIC_BACKBONE_ROOTS", str(root / "backbones"))
    assert load_codec(folder).config.backbone.source == str(root / "backbones" / "sd")
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    for source, message in [(str(root / "backbones" / ".." / "elsewhere"), "outside the allowed"),
                            ("../../etc", "outside the allowed"), ("not a hub id", "neither a hub id")]:
        cfg["backbone"]["source"] = source
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
        _rehash(folder)
        with pytest.raises(ModelLoadError, match=message):
            load_codec(folder)


def test_backbone_weights_are_never_read_from_pickles(tmp_path):
    tiny = build_tiny(BackboneConfig())
    save_backbone(tiny, tmp_path / "sd")
    tiny.vae.save_pretrained(tmp_path / "sd" / "vae", safe_serialization=False)
    (tmp_path / "sd" / "vae" / "diffusion_pytorch_model.safetensors").unlink()  # only the .bin pickle is left
    with pytest.raises(ModelLoadError, match="backbone.source"):
        load_backbone(BackboneConfig(profile="sd21", source=str(tmp_path / "sd")))


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_a_saved_folder_follows_the_umask(codec, tmp_path, umask):
    """Like mkdir and open: mkdtemp's 0o700 staging folder must not decide who may read a codec."""
    import os

    old = os.umask(umask)
    try:
        folder = save_codec(codec, tmp_path / "codec")
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o666 & ~umask}
