"""The shipped default: TAEF2 reconstructs as published, and the trained small-profile codecs
that commands use without --model compress for real (not noise), at distinct rates, and decode
by fingerprint."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resulic.codec import shipped
from resulic.images import sample_images
from resulic.evaluation.roundtrip import psnr

from .conftest import shared_path

REPO = Path(__file__).resolve().parents[1]
needs_release = pytest.mark.skipif(not (shipped.SHIPPED_DIR / shipped.INDEX).is_file(), reason="no shipped codecs in this checkout")


def test_taef2_reconstructs_kodim23_as_the_reference():
    from resulic.models.taef2 import TinyAutoencoder

    img = Image.open(shared_path("datasets", "kodak", "kodim23.png")).convert("RGB")
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    model = TinyAutoencoder.from_folder().eval()
    with torch.no_grad():
        y = model.decode(model.encode(x)).clamp(0, 1)
    out = Image.fromarray((y[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    assert psnr(img, out) >= 33.0  # 33.35 dB with the published reference code


def test_bundled_taef2_equals_the_original_weights():
    from resulic.models.taef2 import TinyAutoencoder

    enc = shared_path("weights", "taef2", "taef2_encoder.pth")
    original = TinyAutoencoder.from_original(enc, enc.with_name("taef2_decoder.pth"))
    bundled = TinyAutoencoder.from_folder()
    for (k, a), (_, b) in zip(original.state_dict().items(), bundled.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.fixture(scope="module")
def photo():
    _, img = sample_images(2)[1]  # not a training photo of the release (coffee is; camera isn't RGB)
    return img.crop((0, 0, 192, 128))


@needs_release
def test_every_shipped_point_reconstructs_the_photo_and_rates_increase(photo):
    rates, qualities = [], []
    for name in [p["name"] for p in shipped.index()["points"] if not p.get("variable")]:
        codec = shipped.load(name)
        enc = codec.encode(photo)
        out = codec.decode(enc.data).image
        rates.append(enc.bpp)
        qualities.append(psnr(photo, out))
    assert rates == sorted(rates) and len(set(rates)) == len(rates), rates
    assert min(qualities) > 13.5, qualities  # random weights give 8-12 dB here; measured 15.2-18.5


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """The `resulic` command without RESULIC_MODEL (the shipped default), run in this process
    (a `python -m resulic.cli` process costs seconds of imports; tests/test_cli_startup.py
    covers the process itself): run(*args) -> (exit status, stderr)."""
    from resulic.cli.commands import main

    monkeypatch.delenv("RESULIC_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str]:
        code = main(list(args))
        return code, capsys.readouterr().err

    return run


@needs_release
def test_cli_default_compress_and_decompress_by_fingerprint(tmp_path, photo, cli):
    photo.save(tmp_path / "p.png")
    lowest = next(p["name"] for p in shipped.index()["points"] if not p.get("variable"))  # r1
    code, err = cli("compress", "p.png", "-o", "low.rslc", "--rate", lowest)
    assert code == 0, err
    code, err = cli("compress", "p.png", "-o", "d.rslc")
    assert code == 0, err
    assert (tmp_path / "low.rslc").stat().st_size < (tmp_path / "d.rslc").stat().st_size
    code, err = cli("decompress", "low.rslc", "-o", "low.png")  # no --rate: the header names the point
    assert code == 0, err
    assert psnr(photo, Image.open(tmp_path / "low.png")) > 13.5
    code, err = cli("compress", "p.png", "-o", "x.rslc", "--rate", "nope")
    assert code == 2 and "not a shipped rate point" in err and "Traceback" not in err


@needs_release
def test_an_encoder_writes_the_whole_codecs_files_without_the_decoder_parts(tmp_path, photo):
    """`resulic compress` loads the shipped point to encode only (no prior, no control module, no
    diffusers): the same fingerprint and the same bytes as the whole codec at every tier's levels;
    asked to decode or to be saved, it says what it is; a folder whose compressor was edited is
    refused as a whole load refuses it."""
    import shutil

    from resulic.codec.store import load_codec, materialize, save_codec
    from resulic.errors import ModelLoadError

    from .test_store import _rehash

    whole = shipped.load(shipped.variable_name())
    encoder = shipped.load(shipped.variable_name(), encode_only=True)
    assert encoder.encode_only and encoder.cdm is None and encoder.backbone.unet is None
    assert encoder.fingerprint == whole.fingerprint
    for level in (0, 34, 35, 127):  # both tiers, at their ends
        data = encoder.compress(photo, level=level)
        assert data == whole.compress(photo, level=level), level
    assert whole.decode(data).image.size == photo.size
    with pytest.raises(ModelLoadError, match="loaded to encode only"):
        encoder.decode(data)
    with pytest.raises(ModelLoadError, match="encode only"):
        save_codec(encoder, tmp_path / "copy")
    pristine = materialize(shipped.folder_for("v1"), tmp_path / "pristine")  # its shared pieces as files
    edited = tmp_path / "v1"
    shutil.copytree(pristine, edited)
    raw = bytearray((edited / "compressor.safetensors").read_bytes())
    raw[-1] ^= 1
    (edited / "compressor.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ModelLoadError, match="do not match manifest.json"):
        load_codec(edited, encode_only=True)
    shutil.copy(pristine / "compressor.safetensors", edited)
    config = (edited / "config.yaml").read_text()
    (edited / "config.yaml").write_text(config.replace("source: bundled", "source: ../../etc"))
    _rehash(edited)  # a crafted folder: its hashes match, its backbone.source points outside
    with pytest.raises(ModelLoadError, match="outside the allowed"):
        load_codec(edited, encode_only=True)  # never read by an encoder, refused as a decoder refuses it


@needs_release
def test_index_lists_points_in_rate_order_with_their_fingerprints():
    data = shipped.index()
    assert data["default"] in shipped.rate_names()
    for point in data["points"]:
        manifest = json.loads((shipped.SHIPPED_DIR / point["folder"] / "manifest.json").read_text())
        assert manifest["fingerprint"] == point["fingerprint"]


@needs_release
def test_the_shipped_variable_rate_model_spans_the_points_and_hits_a_bpp_target(tmp_path, photo, cli):
    """One model for every rate (issue 17): its lowest and highest levels bracket a wide range,
    and `--bpp` without --model uses it and lands within -10 %..+5 % of the target."""
    codec = shipped.load(shipped.variable_name())
    low, high = codec.encode(photo, level=0), codec.encode(photo, level=127)
    assert high.bpp > 2.5 * low.bpp, (low.bpp, high.bpp)
    assert psnr(photo, codec.decode(low.data).image) > 13.5
    target = (low.bpp * high.bpp) ** 0.5
    photo.save(tmp_path / "p.png")
    code, err = cli("compress", "p.png", "-o", "p.rslc", "--bpp", f"{target:.4f}")
    assert code == 0, err
    achieved = (tmp_path / "p.rslc").stat().st_size * 8 / (photo.width * photo.height)
    assert 0.9 * target <= achieved <= 1.05 * float(f"{target:.4f}"), (achieved, target)
    code, err = cli("decompress", "p.rslc", "-o", "p-decoded.png", "--one-pass")
    assert code == 0, err
    assert psnr(photo, Image.open(tmp_path / "p-decoded.png")) > 13.5


def test_the_variable_point_is_the_default_when_an_earlier_one_ships_beside_it(tmp_path):
    """An earlier variable-rate release stays in the index so its files decode; --bpp and
    --level use the default point when it is variable-rate, else the first such point."""
    points = [{"name": "r1", "folder": "r1"}, {"name": "v1", "folder": "v1", "variable": {"default_level": 42}},
              {"name": "variable", "folder": "variable", "variable": {"default_level": 64}}]
    (tmp_path / "index.json").write_text(json.dumps({"default": "variable", "points": points}))
    assert shipped.variable_name(tmp_path) == "variable"
    (tmp_path / "index.json").write_text(json.dumps({"default": "r1", "points": points}))
    assert shipped.variable_name(tmp_path) == "v1"


def test_a_release_can_keep_an_earlier_point_byte_for_byte(tmp_path, codec):
    """jobs/release_small.py --keep: the earlier point's folder is copied as it is (its files keep
    decoding by fingerprint) and listed after the released points; a folder that the index never
    listed is refused."""
    from resulic.codec.store import save_codec
    from resulic.errors import ModelLoadError

    save_codec(codec, tmp_path / "trained")
    out = tmp_path / "shipped"
    first = shipped.release([("variable", tmp_path / "trained")], "variable", {}, out=out)
    old = first["points"][0]
    old_bytes = {p.name: p.read_bytes() for p in (out / "variable").iterdir()}
    data = shipped.release([("variable", tmp_path / "trained")], "variable", {}, out=out, kept=[("v1", out / "variable")])
    assert [p["name"] for p in data["points"]] == ["variable", "v1"]
    assert data["points"][1]["fingerprint"] == old["fingerprint"] and data["points"][1]["kept"]
    assert {p.name: p.read_bytes() for p in (out / "v1").iterdir()} == old_bytes
    assert shipped.folder_for_fingerprint(bytes.fromhex(old["fingerprint"]), out) is not None
    with pytest.raises(ModelLoadError, match="not a trained-codec folder"):
        shipped.release([("variable", tmp_path / "trained")], "variable", {}, out=out, kept=[("x", tmp_path)])
    with pytest.raises(ModelLoadError, match="not a point of the shipped index"):
        shipped.release([("variable", tmp_path / "trained")], "variable", {}, out=out, kept=[("x", tmp_path / "trained")])


def test_every_config_that_fine_tunes_a_shipped_point_matches_its_parts():
    """`make run`'s demo sweep fine-tunes a shipped point (init_from=shipped:...): its stage's
    backbone, compressor and control must equal the point's, or every trial fails at start
    (it did once the shipped points were re-released with exact entropy parameters and the
    small model config was not)."""
    from resulic.codec import shipped
    from resulic.config import load_config
    from resulic.train.checkpoint import check_continues
    from resulic.train.config import TrainConfig
    from resulic.tune.sweep import Sweep, SweepConfig

    repo = Path(__file__).resolve().parents[1]
    stages = [(p.name, Sweep.from_config(load_config(SweepConfig, p)).stages[0])
              for p in sorted((repo / "configs" / "sweep").glob("*.yaml"))]
    stages += [(p.name, load_config(TrainConfig, p)) for p in sorted((repo / "configs" / "train").glob("*.yaml"))]
    checked = 0
    for name, stage in stages:
        if (stage.init_from or "").startswith("shipped:"):
            check_continues(shipped.folder_for(stage.init_from.split(":", 1)[1]), stage.model)  # ConfigError names the keys
            checked += 1
    assert checked >= 2, "fewer configs fine-tune a shipped point than when this test was written"


def test_a_config_that_cannot_continue_a_shipped_point_is_told_which_keys_differ():
    from resulic.config import ModelConfig
    from resulic.errors import ConfigError
    from resulic.train.checkpoint import check_continues

    folder = shipped.folder_for("r2")
    import yaml

    saved = ModelConfig.model_validate(yaml.safe_load((folder / "config.yaml").read_text()))
    assert check_continues(folder, saved) is False  # itself: fine, no gains added
    changed = saved.model_copy(update={"compressor": saved.compressor.model_copy(
        update={"exact_entropy_parameters": False, "channels": 32})})
    with pytest.raises(ConfigError, match=r"model.compressor: differs .* \(channels, exact_entropy_parameters\)"):
        check_continues(folder, changed)
