"""The ``resulic`` command: real files in and out, one-line errors, no partial outputs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resulic.cli.commands import main


@pytest.fixture()
def image_file(tmp_path, photo):
    path = tmp_path / "photo.png"
    photo.save(path)
    return path


def test_compress_info_decompress(tmp_path, image_file, capsys, codec):
    assert main(["compress", str(image_file), "-o", str(tmp_path / "p.rslc")]) == 0
    assert "bpp" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "p.rslc")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["width"] == 200 and info["fingerprint"] == codec.fingerprint.hex()
    assert info["file_bytes"] == (tmp_path / "p.rslc").stat().st_size
    assert main(["decompress", str(tmp_path / "p.rslc"), "-o", str(tmp_path / "out.png")]) == 0
    out = Image.open(tmp_path / "out.png")
    assert out.size == (200, 150)
    # the CLI's pixels are the library's pixels
    assert np.array_equal(np.asarray(out), np.asarray(codec.decompress((tmp_path / "p.rslc").read_bytes())))


def test_folder_mode_continues_past_bad_files(tmp_path, photo, capsys):
    src = tmp_path / "in"
    src.mkdir()
    photo.save(src / "a.png")
    photo.resize((64, 40)).save(src / "b.jpg")
    (src / "broken.png").write_bytes(b"not an image")
    assert main(["compress", str(src), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 of 3 file(s) failed" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.rslc", "b.rslc"]
    assert main(["info", str(tmp_path / "out")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(x["file"]).name for x in lines] == ["a.rslc", "b.rslc"] and lines[1]["width"] == 64
    assert main(["decompress", str(tmp_path / "out"), "-o", str(tmp_path / "dec")]) == 0
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["a.png", "b.png"]


def test_decompress_never_overwrites_an_image_it_did_not_write(tmp_path, image_file, capsys):
    """`decompress photo.rslc -o photo.png` next to the photo it was made from: refused, the photo
    untouched; an image an earlier decompress wrote is replaced; --force replaces anything."""
    original = image_file.read_bytes()
    assert main(["compress", str(image_file), "-o", str(tmp_path / "photo.rslc")]) == 0
    assert main(["decompress", str(tmp_path / "photo.rslc")]) == 2  # default output: photo.png, the original
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err and "photo.png exists" in err
    assert image_file.read_bytes() == original
    assert main(["decompress", str(tmp_path / "photo.rslc"), "-o", str(tmp_path / "dec.png")]) == 0
    assert main(["decompress", str(tmp_path / "photo.rslc"), "-o", str(tmp_path / "dec.png")]) == 0  # its own: again
    assert main(["decompress", str(tmp_path / "photo.rslc"), "--force"]) == 0
    assert image_file.read_bytes() != original and Image.open(image_file).size == (200, 150)
    (tmp_path / "dec.jpg").write_bytes(original)  # any other format is never ours
    assert main(["decompress", str(tmp_path / "photo.rslc"), "-o", str(tmp_path / "dec.jpg")]) == 2


@pytest.mark.parametrize(
    "payload,message",
    [(b"", "empty"), (b"\x89PNG\r\n\x1a\n0000000000000", "not a ResULIC file"), (None, "truncated")],
)
def test_bad_files_give_one_line_and_no_output(tmp_path, encoded, capsys, payload, message):
    bad = tmp_path / "bad.rslc"
    bad.write_bytes(encoded.data[:-5] if payload is None else payload)
    assert main(["decompress", str(bad), "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resulic: error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.rslc"]


def test_zero_size_image_and_missing_input(tmp_path, capsys):
    (tmp_path / "empty.png").write_bytes(b"")
    assert main(["compress", str(tmp_path / "empty.png")]) == 2
    err = capsys.readouterr().err
    assert "file is empty" in err and err.count("empty.png") == 1
    assert main(["compress", str(tmp_path / "missing.png")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.rslc"))


def test_bad_model_option(tmp_path, image_file, capsys):
    (tmp_path / "m.yaml").write_text("rate_point:\n  guidance: loud\n")
    assert main(["compress", str(image_file), "--model", str(tmp_path / "m.yaml")]) == 2
    assert "rate_point.guidance" in capsys.readouterr().err


def test_console_script_help():
    exe = Path(sys.executable).with_name("resulic")
    out = subprocess.run([str(exe), "compress", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--model" in out.stdout and "--steps" in out.stdout


def test_unwritable_output_is_a_clear_error(tmp_path, image_file, capsys):
    (tmp_path / "taken").mkdir()  # the output path is an existing folder
    assert main(["compress", str(image_file), "-o", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'taken'}" in err and "Traceback" not in err


def test_semantic_options_set_the_text_mode_that_info_reports(tmp_path, image_file, capsys):
    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"image": image_file.name, "caption": "an astronaut with a helmet"}) + "\n")
    out = tmp_path / "s.rslc"
    args = ["compress", str(image_file), "-o", str(out), "--captions", str(captions), "--srr", "--pfo",
            "--semantics-set", "pfo.iterations=2", "--semantics-set", "pfo.progress=false"]
    assert main(args) == 0
    assert "residual+pfo" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["text_mode"] == "residual+pfo" and info["format_version"] == 2 and info["text_tokens"] > 0
    assert main(["compress", str(image_file), "-o", str(out), "--caption", "--captions", str(captions)]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["text_mode"] == "caption"


@pytest.mark.parametrize(
    "extra,message",
    [(["--pfo"], "add --srr"), (["--caption"], "no caption"), (["--srr", "--semantics-set", "pfo.iters=3"], "pfo.iters: unknown key")],
)
def test_semantic_option_errors_are_one_line(tmp_path, image_file, capsys, extra, message):
    assert main(["compress", str(image_file), "-o", str(tmp_path / "x.rslc"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.rslc").exists()


def test_decode_limits_refuse_with_the_option_to_raise_them(tmp_path, codec, image_file, capsys):
    S = codec.config.rate_point.sampling_steps
    path = tmp_path / "slow.rslc"
    assert main(["compress", str(image_file), "-o", str(path), "--steps", str(4 * S + 1)]) == 0
    assert f"decode the file with --max-steps {4 * S + 1}" in capsys.readouterr().err
    assert main(["decompress", str(path), "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"over the limit of {4 * S}" in err and err.endswith("raise the limit with --max-steps")
    assert not (tmp_path / "out.png").exists()
    assert main(["decompress", str(path), "-o", str(tmp_path / "out.png"), "--max-steps", str(4 * S + 1)]) == 0
    assert main(["decompress", str(path), "--max-pixels", "1000"]) == 2
    assert "--max-pixels" in capsys.readouterr().err
    assert main(["decompress", str(path), "--max-pixels", "0"]) == 2
    assert "decode limits: max_pixels" in capsys.readouterr().err


def test_decode_limit_help_states_the_librarys_defaults():
    from resulic.cli.commands import build_parser
    from resulic.codec.limits import STEPS_FACTOR, DecodeLimits

    limits = DecodeLimits()
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["decompress"]
    helps = {a.dest: a.help for a in sub._actions}
    assert f"{limits.max_pixels:,}" in helps["max_pixels"] and f"{STEPS_FACTOR} x" in helps["max_steps"]
    assert f"{limits.max_guidance:g})" in helps["max_guidance"] and f"{limits.max_text_tokens})" in helps["max_text_tokens"]


def test_every_option_of_every_command_has_help_text():
    import argparse

    from resulic.cli.commands import build_parser

    missing = []

    def walk(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    walk(subparser, f"{name} {sub}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "resulic")
    assert not missing, f"options without help: {missing}"


def test_info_rates_lists_the_shipped_points_and_help_points_at_it(capsys):
    from resulic.cli.commands import build_parser
    from resulic.codec import shipped

    assert main(["info", "--rates"]) == 0
    out = capsys.readouterr().out
    for name in shipped.rate_names():
        assert f"  {name} " in out
    assert "--level 0..127" in out and "(default 42)" in out
    for point in shipped.index()["points"]:  # a tiered model says which levels each compressor codes
        if point.get("low_tier"):
            assert f"levels 0..{point['low_tier']['levels'] - 1} a second compressor" in out
    compress_help = build_parser()._subparsers._group_actions[0].choices["compress"].format_help()
    assert "resulic info --rates" in " ".join(compress_help.split())
    assert main(["info", "--rates", "x.rslc"]) == 2 and main(["info"]) == 2
    err = capsys.readouterr().err
    assert err.count("resulic: error:") == 2 and "--rates" in err


def test_compress_refuses_what_a_default_decoder_would_refuse(tmp_path, image_file, capsys):
    # The 200x150 photo is 256x256 = 65,536 pixels padded to 128: the limit counts those, as the
    # decoder does, and the default is the decoders' default, so any file written reads back.
    from resulic.cli.commands import COMPRESS_MAX_PIXELS
    from resulic.codec.limits import DecodeLimits

    assert COMPRESS_MAX_PIXELS == DecodeLimits().max_pixels
    assert main(["compress", str(image_file), "-o", str(tmp_path / "p.rslc"), "--max-pixels", "65535"]) == 2
    err = capsys.readouterr().err
    assert "65,536 pixels padded to" in err and "--max-pixels" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.rslc").exists()
    assert main(["compress", str(image_file), "-o", str(tmp_path / "p.rslc"), "--max-pixels", "65536"]) == 0


def test_compress_says_which_rate_point_it_used(tmp_path, image_file, capsys, monkeypatch):
    monkeypatch.delenv("RESULIC_MODEL")  # the shipped codec
    assert main(["compress", str(image_file), "-o", str(tmp_path / "a.rslc"), "--rate", "r1"]) == 0
    assert ", rate point r1, " in capsys.readouterr().out
    assert main(["compress", str(image_file), "-o", str(tmp_path / "b.rslc"), "--level", "0"]) == 0
    assert ", rate point variable level 0, " in capsys.readouterr().out


@pytest.mark.parametrize("option,value,message", [
    ("--seed", "1099511627776", "--seed 1099511627776: must be in 0..4294967295"),
    ("--seed", "-1", "--seed -1: must be in 0..4294967295"),
    ("--seed", "4294967296", "--seed 4294967296: must be in 0..4294967295"),
    ("--steps", "0", "--steps 0: must be in 1..999"),
    ("--steps", "1000", "--steps 1000: must be in 1..999"),
    ("--guidance", "nan", "--guidance nan: must be in 0..100"),
    ("--guidance", "-0.5", "--guidance -0.5: must be in 0..100"),
])
def test_header_fields_out_of_range_are_refused_before_any_model_loads(tmp_path, image_file, capsys, monkeypatch,
                                                                       option, value, message):
    """The issue's seed 2^40 used to exit 0 with a file every decoder refuses."""
    import resulic.services.registry

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(resulic.services.registry, "open_codec", no_model)
    out = tmp_path / "p.rslc"
    assert main(["compress", str(image_file), "-o", str(out), option, value]) == 2
    err = capsys.readouterr().err
    assert err == f"resulic: error: {message}\n" and not out.exists()


def test_the_largest_seed_round_trips(tmp_path, image_file, capsys):
    out = tmp_path / "p.rslc"
    assert main(["compress", str(image_file), "-o", str(out), "--model", "tiny", "--seed", str(2**32 - 1)]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 2**32 - 1
    assert main(["decompress", str(out), "--model", "tiny", "-o", str(tmp_path / "p.png")]) == 0


def _no_model(monkeypatch):
    import resulic.services.registry

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the paths were checked")

    monkeypatch.setattr(resulic.services.registry, "open_codec", no_model)


@pytest.mark.parametrize("output,message", [
    ("taken", "cannot write {tmp}/taken: it is a folder"),
    ("photo.png/x.rslc", "cannot write {tmp}/photo.png/x.rslc: {tmp}/photo.png is not a folder"),
    ("/proc/x.rslc", "cannot write /proc/x.rslc: cannot create files in /proc"),
])
def test_output_path_errors_come_before_any_model_loads(tmp_path, image_file, capsys, monkeypatch, output, message):
    """They used to appear only after the encode (8 s on the shipped model)."""
    (tmp_path / "taken").mkdir()
    _no_model(monkeypatch)
    out = output if output.startswith("/") else str(tmp_path / output)
    assert main(["compress", str(image_file), "-o", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resulic: error: " + message.format(tmp=tmp_path)) and err.count("\n") == 1


def test_decompress_and_info_refuse_files_over_the_size_limit_unread(tmp_path, capsys, monkeypatch):
    big = tmp_path / "big.rslc"
    big.write_bytes(b"\xc5" * 2000)
    _no_model(monkeypatch)
    assert main(["decompress", str(big), "-o", str(tmp_path / "big.png"), "--max-file-bytes", "1000"]) == 2
    err = capsys.readouterr().err
    assert err == f"resulic: error: {big}: 2,000 bytes, over the limit of 1,000 (raise it with --max-file-bytes)\n"
    assert not (tmp_path / "big.png").exists()
    assert main(["info", str(big), "--max-file-bytes", "1000"]) == 2
    assert "over the limit of 1,000" in capsys.readouterr().err


def test_decompress_default_file_limit_is_documented():
    from resulic.cli.commands import DEFAULT_MAX_FILE_BYTES, build_parser

    assert DEFAULT_MAX_FILE_BYTES == 16 * 1024 * 1024
    assert "16,777,216" in build_parser()._subparsers._group_actions[0].choices["decompress"].format_help()
    assert "--max-file-bytes" in (REPO_DOCS / "security.md").read_text()


REPO_DOCS = Path(__file__).resolve().parents[1] / "docs"
