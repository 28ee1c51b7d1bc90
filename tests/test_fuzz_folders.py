"""Hostile trained-codec folders (issue 25): mutated folders, the manifest's hashes recomputed as
an attacker would, each loaded; nothing may crash, hang or answer in more than one line. Plus the
issue's reproducers through the CLI: a "billion laughs" config.yaml, an unknown tensor key, a YAML
tag, a wrong-shaped tensor, links out of the folder. The 1,000-folder table is in docs/security.md
(benchmarks/fuzz_folders.py)."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from resulic.cli.commands import main
from resulic.codec.store import check_compressor_state, load_codec, save_codec
from resulic.errors import ModelLoadError

REPO = Path(__file__).resolve().parents[1]


def _fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_folders", REPO / "benchmarks" / "fuzz_folders.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def base(codec, tmp_path_factory):
    return save_codec(codec, tmp_path_factory.mktemp("codec") / "base")


@pytest.fixture()
def folder(base, tmp_path):
    return Path(shutil.copytree(base, tmp_path / "codec"))


@pytest.mark.timeout(600)
def test_no_mutated_folder_crashes_hangs_or_answers_in_several_lines(base, codec, tmp_path):
    fuzz = _fuzz()
    results = fuzz.run(base, 210, seed=25, backbone=codec.backbone, cdf_tables=fuzz.cdf_tables_of(codec),
                       timeout_s=120, work=tmp_path)
    failures = [r for r in results if r.failure]
    assert not failures, fuzz.table(failures) + "\n" + "\n".join(f"{r.detail}: {r.message}" for r in failures)
    outcomes = {r.outcome for r in results}
    assert "ok" in outcomes  # harmless changes (a link inside the folder, valid coding tables) still load
    assert any("anchors and aliases" in o for o in outcomes)
    assert any("link out of the folder" in o for o in outcomes)
    assert all(len(r.message) < 1000 for r in results)


def _write_config(folder: Path, text: str) -> None:
    (folder / "config.yaml").write_text(text)
    _fuzz().refresh_manifest(folder)


def _compress(folder: Path, image: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["compress", str(image), "--model", str(folder), "-o", str(image.with_suffix(".rslc"))]) == 2
    captured = capsys.readouterr()
    assert not image.with_suffix(".rslc").exists()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    return captured.err


@pytest.fixture()
def image(tmp_path, photo):
    path = tmp_path / "photo.png"
    photo.save(path)
    return path


@pytest.mark.timeout(120)
def test_billion_laughs_config_is_one_line_at_once(folder, image, capsys):
    _write_config(folder, _fuzz().billion_laughs())
    err = _compress(folder, image, capsys)
    assert "config.yaml: not valid YAML (anchors and aliases (&, *) are not allowed at line 1" in err


def test_yaml_tags_are_one_line(folder, image, capsys):
    _write_config(folder, "backbone: !!python/object/apply:os.system ['touch pwned']\n")
    err = _compress(folder, image, capsys)
    assert "config.yaml: not valid YAML (could not determine a constructor for the tag" in err


def _edit_tensors(folder: Path, name: str, edit) -> None:
    state = dict(load_file(folder / name))
    edit(state)
    (folder / name).unlink()
    save_file(state, folder / name)
    _fuzz().refresh_manifest(folder)


def test_an_unknown_tensor_key_is_one_line(folder, image, capsys):
    _edit_tensors(folder, "compressor.safetensors", lambda s: s.update({"nope._quantized_cdf": torch.zeros(2, 3)}))
    err = _compress(folder, image, capsys)
    assert "weights do not fit the model config (unknown tensor 'nope._quantized_cdf')" in err


def test_a_wrong_shaped_tensor_is_one_line(folder, image, capsys):
    def edit(state):
        key = next(k for k, v in state.items() if v.ndim == 4)
        state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)

    _edit_tensors(folder, "compressor.safetensors", edit)
    err = _compress(folder, image, capsys)
    assert "weights do not fit the model config (tensor" in err and "the model config needs" in err


def test_links_out_of_the_folder_give_one_answer_whatever_they_point_at(folder, image, capsys, tmp_path):
    """A caller must not learn which files exist (or are readable) outside the folder."""
    answers = set()
    outside = tmp_path / "outside.yaml"
    shutil.copy(folder / "config.yaml", outside)
    for target in ("/etc/shadow", "/nonexistent/config.yaml", str(outside), "../outside.yaml", "/dev/zero"):
        (folder / "config.yaml").unlink()
        (folder / "config.yaml").symlink_to(target)
        answers.add(_compress(folder, image, capsys).replace(str(folder), "<folder>"))
    assert answers == {"resulic: error: <folder>: config.yaml is a link out of the folder (refused)\n"}


def test_missing_and_unreadable_files_give_one_answer(folder, image, capsys):
    answers = set()
    path = folder / "control.safetensors"
    for make in (lambda: None, lambda: path.mkdir(), lambda: os.mkfifo(path), lambda: path.symlink_to("nothing"),
                 lambda: path.symlink_to("control.safetensors")):
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            path.rmdir() if path.is_dir() else path.unlink()
        make()
        answers.add(_compress(folder, image, capsys).replace(str(folder), "<folder>"))
    assert answers == {"resulic: error: <folder>: control.safetensors is missing or unreadable\n"}


def test_a_link_inside_the_folder_is_followed(folder, codec):
    (folder / "weights").mkdir()
    (folder / "control.safetensors").rename(folder / "weights" / "control.safetensors")
    (folder / "control.safetensors").symlink_to("weights/control.safetensors")
    assert load_codec(folder, backbone=codec.backbone).fingerprint == codec.fingerprint


@pytest.mark.parametrize("name,size,message", [
    ("config.yaml", 17 << 10, "config.yaml is 17,408 bytes, over the limit of 16,384"),
    ("manifest.json", 65 << 10, "manifest.json is 66,560 bytes, over the limit of 65,536"),
])
def test_folder_files_have_size_limits(folder, name, size, message):
    (folder / name).write_bytes(b"#" * size)
    with pytest.raises(ModelLoadError, match=message):
        load_codec(folder)


@pytest.mark.timeout(120)
def test_a_huge_safetensors_header_is_refused_before_it_is_parsed(folder, codec):
    fuzz = _fuzz()
    fuzz.big_header(folder, tensors=20_000)  # ~1.3 MB: over the header limit
    fuzz.refresh_manifest(folder)
    with pytest.raises(ModelLoadError, match=r"not a readable safetensors file \(a header of [0-9,]+ bytes, over"):
        load_codec(folder, backbone=codec.backbone)
    fuzz.big_header(folder, tensors=12_000)  # under the header limit, over the tensor count
    fuzz.refresh_manifest(folder)
    with pytest.raises(ModelLoadError, match=r"\(12,000 tensors, over the limit of 10,000\)"):
        load_codec(folder, backbone=codec.backbone)


def test_coding_tables_are_checked_before_the_encoder_sees_them(codec):
    from resulic.models.compressor import LatentCompressor

    state = {k: v.clone() for k, v in codec.compressor.state_dict().items() if k.rpartition(".")[2] != "mask"}
    fresh = LatentCompressor(codec.config.compressor)
    check_compressor_state(fresh, state)  # the real tables pass
    cdf_key = next(k for k in state if k.endswith("_quantized_cdf"))
    bad = dict(state, **{cdf_key: state[cdf_key].clone()})
    bad[cdf_key][0, 1] = bad[cdf_key][0, 0]  # a zero-width symbol: the rANS encoder would never finish
    with pytest.raises(ValueError, match="row 0 is not a CDF from 0 to 65536"):
        check_compressor_state(fresh, bad)
    length_key = cdf_key.replace("_quantized_cdf", "_cdf_length")
    bad = dict(state, **{length_key: state[length_key].clone()})
    bad[length_key][0] = 10**6
    with pytest.raises(ValueError, match="a CDF length outside"):
        check_compressor_state(fresh, bad)


def test_config_widths_are_bounded(folder, codec):
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["compressor"]["channels"] = 10**6  # would allocate terabytes before any weight is compared
    _write_config(folder, yaml.safe_dump(cfg))
    with pytest.raises(Exception, match="compressor.channels: Input should be less than or equal to 1024"):
        load_codec(folder, backbone=codec.backbone)
