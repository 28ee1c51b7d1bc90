"""A new bundled prior is a decoder upgrade, not a new bitstream (models/backbone.py
EARLIER_BUNDLED_PRIORS): after `release_small.py prior`, the shipped points write files with new
fingerprints and still decode the files they wrote through the earlier prior — from the CLI's
lookup, a loaded folder and a Serve catalog alike; without the earlier prior named, such files
and folders are refused."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from resulic.codec import shipped
from resulic.codec.container import unpack
from resulic.codec.store import load_codec
from resulic.errors import ModelLoadError, ModelMismatchError
from resulic.models import backbone
from resulic.models.backbone import random_small_prior, save_prior

V1 = shipped.SHIPPED_DIR / "v1"
pytestmark = pytest.mark.skipif(not (V1 / "manifest.json").is_file(), reason="no shipped codecs in this checkout")


@pytest.fixture
def release_small():
    spec = importlib.util.spec_from_file_location("release_small", Path(__file__).parents[1] / "jobs" / "release_small.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def installation(tmp_path, monkeypatch):
    """A copy of the shipped prior and of one shipped point, put where the package looks."""
    prior, codecs = tmp_path / "small-prior", tmp_path / "small-codecs"
    shutil.copytree(backbone.SMALL_PRIOR, prior)
    shutil.copytree(V1, codecs / "v1")
    entry = next(p for p in shipped.index()["points"] if p["name"] == "v1")
    (codecs / shipped.INDEX).write_text(json.dumps({"default": "v1", "points": [entry]}))
    monkeypatch.setattr(backbone, "SMALL_PRIOR", prior)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", codecs)
    shipped._backbone_of.cache_clear()
    # As a release does first: the prior about to be replaced is named an earlier one.
    current = shipped._backbone(codecs / "v1").identity
    monkeypatch.setattr(backbone, "EARLIER_BUNDLED_PRIORS", (*backbone.EARLIER_BUNDLED_PRIORS, current))
    shipped._backbone_of.cache_clear()
    yield codecs
    shipped._backbone_of.cache_clear()  # the shipped backbone again for the tests that follow


def test_a_released_prior_keeps_the_files_of_every_shipped_point_decodable(installation, release_small, photo, tmp_path):
    image = photo.crop((0, 0, 64, 64))
    before = shipped.load("v1", folder=installation)
    old_file = before.compress(image, level=10)
    old_fingerprint = unpack(old_file).header.fingerprint

    new_prior = save_prior(random_small_prior(7), tmp_path / "candidate")
    assert release_small.main(["prior", str(new_prior)]) == 0

    point = shipped.index(installation)["points"][0]
    assert point["fingerprint"] != old_fingerprint.hex() and old_fingerprint.hex() in point["earlier_fingerprints"]
    after = shipped.load_for_file(old_file, folder=installation)  # the CLI's lookup by the file's fingerprint
    assert after is not None and after.backbone.identity != before.backbone.identity
    assert after.decodes(old_fingerprint) and after.fingerprint.hex() == point["fingerprint"]
    decoded = after.decode(old_file).image  # the same bits, through the new prior
    assert decoded.size == image.size
    new_file = after.compress(image, level=10)
    assert unpack(new_file).header.fingerprint == after.fingerprint
    assert unpack(new_file).latent == unpack(old_file).latent  # the compressor did not change

    # A Serve catalog of the folder routes the old files to it; the registry tags them.
    from resulic.serving.catalog import Catalog, RatePointsConfig
    from resulic.services.registry import _version_tags

    catalog = Catalog(RatePointsConfig(rate_points={"v1": str(installation / "v1")}))
    assert catalog.for_fingerprint(old_fingerprint.hex()).fingerprint == after.fingerprint.hex()
    assert Catalog.from_snapshot(catalog.as_dict()).for_fingerprint(old_fingerprint.hex()).name == "v1"
    manifest = json.loads((installation / "v1" / "manifest.json").read_text())
    assert old_fingerprint.hex() in _version_tags(manifest)["earlier_fingerprints"].split(",")


def test_without_the_earlier_prior_named_its_files_and_folders_are_refused(installation, monkeypatch, photo, tmp_path):
    old_file = shipped.load("v1", folder=installation).compress(photo.crop((0, 0, 64, 64)), level=10)
    shutil.rmtree(backbone.SMALL_PRIOR)
    save_prior(random_small_prior(7), backbone.SMALL_PRIOR)
    monkeypatch.setattr(backbone, "EARLIER_BUNDLED_PRIORS", ())
    shipped._backbone_of.cache_clear()
    with pytest.raises(ModelLoadError, match="fingerprint"):
        load_codec(installation / "v1")
    from resulic.codec import Codec
    from resulic.codec.store import folder_config

    codec = Codec.build(folder_config(V1))  # a codec on the new prior
    assert codec.earlier_fingerprints == ()
    with pytest.raises(ModelMismatchError, match="made by model"):
        codec.decode(old_file)


def test_the_release_refuses_to_replace_a_prior_the_shipped_files_name(installation, release_small, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(backbone, "EARLIER_BUNDLED_PRIORS", ())
    new_prior = save_prior(random_small_prior(7), tmp_path / "candidate")
    digest = (backbone.SMALL_PRIOR / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert release_small.main(["prior", str(new_prior)]) == 2
    assert "EARLIER_BUNDLED_PRIORS" in capsys.readouterr().err
    assert (backbone.SMALL_PRIOR / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == digest


def test_a_folder_saved_before_the_upgrade_keeps_naming_its_files_as_its_manifest(installation, photo):
    """A user's own folder (not re-saved by the release): it loads with the new prior, reads its
    old files, and writes the fingerprint its manifest (so a Serve catalog, the registry) names."""
    image = photo.crop((0, 0, 64, 64))
    old_file = shipped.load("v1", folder=installation).compress(image, level=10)
    shutil.rmtree(backbone.SMALL_PRIOR)
    save_prior(random_small_prior(7), backbone.SMALL_PRIOR)
    shipped._backbone_of.cache_clear()
    codec = load_codec(installation / "v1")
    manifest = json.loads((installation / "v1" / "manifest.json").read_text())
    assert codec.fingerprint.hex() == manifest["fingerprint"] == unpack(old_file).header.fingerprint.hex()
    assert codec.earlier_fingerprints and all(map(codec.decodes, codec.earlier_fingerprints))
    assert codec.decode(old_file).image.size == image.size
    new_file = codec.compress(image, level=10)
    assert new_file == old_file  # the bits never depended on the prior

    from resulic.serving.catalog import Catalog, RatePointsConfig

    catalog = Catalog(RatePointsConfig(rate_points={"mine": str(installation / "v1")}))
    assert catalog.for_fingerprint(unpack(new_file).header.fingerprint.hex()).name == "mine"


def test_a_folder_that_is_no_prior_is_one_line(installation, release_small, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert release_small.main(["prior", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not a stage-0 prior folder" in err and "Traceback" not in err
