"""The README's commands and the ``--help`` examples, read from the files themselves so they cannot
drift from the code.

Every command line of README.md's ```bash blocks, of ``resulic --help``'s examples and of the
jobs' ``--help`` texts is parsed by the parser that will run it, and every repository path it
names must exist. Then the README is walked as a new user would, in a fresh folder that holds the
repository's files and a user's own inputs (photo.png, photos/): the
commands that are cheap run for real, in order, each on what the previous ones wrote. What runs
cheaper than written, and why, is the table ``CHEAPER`` below; what does not run here, and where it
is tested instead, is ``NOT_RUN_HERE``.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

from resulic.cli import commands as cli

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# What a clone holds at its top level: a path in a command that starts with one of these names
# is the repository's and must exist. Git's list, not the folder's: what a user's runs made
# (ray_results/, mlartifacts/, outputs/, data/) is not the repository's.
GENERATED = ("outputs", "ray_results", "mlruns", "mlartifacts", "mlflow.db", "data")


def _repo_entries() -> list[str]:
    import subprocess

    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, timeout=30, check=True).stdout
        return sorted({line.split("/", 1)[0] for line in out.splitlines() if line and not line.startswith(".")})
    except (OSError, subprocess.SubprocessError):  # not a git checkout
        return sorted(p.name for p in REPO.iterdir() if not p.name.startswith(".") and p.name not in GENERATED)


REPO_ENTRIES = _repo_entries()
JOBS_WITH_THE_RESULIC_PARSER = {"train", "sweep", "promote"}  # jobs/<kind>.py == resulic <kind>


# -- reading the commands -----------------------------------------------------------------------

def shell_commands(text: str) -> list[list[str]]:
    """The command lines of a shell text: continuations joined, comments dropped, ``[optional ...]``
    groups removed (they show optional arguments, not literal ones), ``<placeholders>`` filled."""
    commands = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = re.sub(r"<[^<>]*>", "PLACEHOLDER", re.sub(r"\[--[^\]]*\]", "", line))
        tokens = shlex.split(line, comments=True)
        if tokens:
            commands.append(tokens)
    return commands


def readme_commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README.md has no ```bash blocks"
    return [c for block in blocks for c in shell_commands(block)]


def help_examples() -> list[list[str]]:
    """``resulic --help``'s examples and the command lines of each job's --help (its docstring)."""
    commands = [c for c in shell_commands(cli.EPILOG) if c[0] == "resulic"]
    lines = []
    for job in sorted((REPO / "jobs").glob("*.py")):
        doc = importlib.import_module(f"jobs.{job.stem}").__doc__ or ""
        lines += [line for line in doc.splitlines() if re.match(r"\s*(\S*python|ray job submit|resulic) ", line)]
    commands += [c for line in lines for c in shell_commands(line)]
    assert len(commands) > 20
    return commands


def tokens_naming_paths(argv: list[str]) -> list[str]:
    """Arguments (and KEY=VALUE values) that name a repository path; outputs (-o) are not inputs."""
    out = []
    for i, token in enumerate(argv):
        if i and argv[i - 1] in ("-o", "--output"):
            continue
        for value in (token, token.split("=", 1)[-1]):
            head = value.split("/", 1)[0]
            if head in REPO_ENTRIES and (value == head or "/" in value):
                out.append(value)
    return out


# -- parsing them -------------------------------------------------------------------------------

class Parsed(Exception):
    """Raised instead of running a job, once its parser accepted the arguments."""


def parse_only(main, argv: list[str], monkeypatch) -> None:
    """Run ``main(argv)`` until its argparse parser has parsed ``argv``, then stop."""
    real_parse = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        real_parse(self, args, namespace)
        raise Parsed

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
        try:
            main(argv)
        except Parsed:
            return
        except SystemExit as exc:
            pytest.fail(f"{main.__module__} {shlex.join(argv)}: does not parse (exit {exc.code})")
    pytest.fail(f"{main.__module__} {shlex.join(argv)}: parsed no arguments")


def check_resulic_args(argv: list[str]) -> None:
    if argv in (["--help"], ["-h"]):
        return  # run for real below (it exits 0)
    try:
        cli.build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`resulic {shlex.join(argv)}` does not parse (exit {exc.code})")


def check_python_script(argv: list[str], monkeypatch) -> None:
    script = Path(argv[0])
    assert (REPO / script).is_file(), f"{script}: no such script"
    if script.parts[0] == "jobs":
        if script.stem in JOBS_WITH_THE_RESULIC_PARSER:
            check_resulic_args([script.stem, *argv[1:]])
        else:
            parse_only(importlib.import_module(f"jobs.{script.stem}").main, argv[1:], monkeypatch)
    else:  # a benchmark: importing one loads what it measures (Ray, Serve...), so its options are
        # checked against its source instead; each must be an option the script declares
        source = (REPO / script).read_text()
        for option in (a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")):
            assert f'"{option}"' in source, f"{script} has no option {option}"


def check_command(argv: list[str], monkeypatch) -> None:
    """One command line: parsed by what will run it; the repository paths it names exist."""
    for path in tokens_naming_paths(argv):
        assert glob.glob(str(REPO / path)), f"`{shlex.join(argv)}` names {path}, which is not in the repository"
    program, args = argv[0], argv[1:]
    if program == "resulic":
        check_resulic_args(args)
    elif Path(program).name in ("python", "python3"):
        check_python_script(args, monkeypatch)
    elif program == "make":
        targets = re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M)
        assert set(args) <= set(targets), f"make {args}: the Makefile has {targets}"
    elif argv[:3] == ["ray", "job", "submit"]:
        assert "--" in args, f"`{shlex.join(argv)}`: ray job submit needs -- before the entrypoint"
        check_command(args[args.index("--") + 1:], monkeypatch)
    elif program in ("ray", "curl", "source", ".venv/bin/serve", ".venv/bin/mlflow"):
        pass  # other programs: their repository paths are checked above
    else:
        pytest.fail(f"`{shlex.join(argv)}`: a command this test does not know; teach check_command about it")


def test_readme_commands_parse_and_name_existing_paths(monkeypatch):
    commands = readme_commands()
    assert ["make", "run"] in commands and any(c[:2] == ["resulic", "evaluate"] for c in commands)
    for argv in commands:
        check_command(argv, monkeypatch)


def test_help_examples_parse_and_name_existing_paths(monkeypatch):
    for argv in help_examples():
        check_command(argv, monkeypatch)


def test_docs_commands_parse_and_name_existing_paths(monkeypatch):
    """The ``resulic`` and ``python`` lines of docs/*.md's ```bash blocks (other programs there,
    kubectl, aws, docker, serve, are for a cluster and not checked)."""
    checked = 0
    for doc in sorted((REPO / "docs").glob("*.md")):
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), re.S):
            for argv in shell_commands(block):
                while argv and re.match(r"^[A-Z_]+=", argv[0]):  # VAR=value command
                    argv = argv[1:]
                for part in " ".join(shlex.quote(a) for a in argv).split(" '&&' "):
                    command = shlex.split(part)
                    if command and (command[0] == "resulic" or Path(command[0]).name in ("python", "python3")):
                        check_command(command, monkeypatch)
                        checked += 1
    assert checked > 10


def test_readme_links_and_named_paths_exist():
    text = README.read_text()
    named = re.findall(r"\]\(([^)#]+)\)", text) + re.findall(r"`([\w./-]+/[\w./-]*)`", text)
    repo_paths = [p for p in named if p.split("/", 1)[0] in REPO_ENTRIES]
    assert len(repo_paths) > 10
    missing = [p for p in repo_paths if not glob.glob(str(REPO / p))]
    assert not missing, f"README.md names paths that are not in the repository: {missing}"


def test_the_checks_catch_a_wrong_command(monkeypatch):
    """The checks above are not vacuous: a wrong option, a missing config and an unknown program fail."""
    for argv in (["resulic", "evaluate", "--modle", "tiny"], ["resulic", "train", "--config", "configs/train/stage9.yaml"],
                 [".venv/bin/python", "jobs/build_dataset.py", "--no-such-flag"], ["resulic-tool", "x"]):
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            check_command(argv, monkeypatch)


# -- walking the README for real ----------------------------------------------------------------

SHIPPED = "platform/resulic/weights/small-codecs/"


def cheaper_evaluate(args: list[str]) -> list[str]:
    # The shipped codecs take seconds per image and point; the tiny profile runs the same code
    # path (real files, the same metrics) in a fraction of that. The folders were checked above.
    # Tiny has a fixed rate, so a variable-rate model's --level options go with its --model.
    out, models = [], False
    for i, a in enumerate(args):
        if i and args[i - 1] in ("--model", "--level"):
            continue
        if a in ("--model", "--level"):
            models = models or a == "--model"
            continue
        out.append(a)
    return out + (["--model", "tiny"] if models else []) + ["--max-images", "1", "--crop", "64", "--workers", "0"]


def cheaper_compress(args: list[str]) -> list[str]:
    # Pfo runs for its iterations (20 in configs/semantics/example.yaml); two show the loop works.
    return args + ["--semantics-set", "pfo.iterations=2"] if "--pfo" in args else args


# subcommand -> how the walk makes it cheap (later options override earlier ones in argparse)
CHEAPER = {
    "compress": cheaper_compress,
    "evaluate": cheaper_evaluate,
    "baselines": lambda args: args + ["--max-images", "1", "--crop", "64", "--workers", "1"],
}
NOT_RUN_HERE = {
    # what the line contains -> why it is not run here (and where it is tested)
    "models:/": "needs make run's registry (tests/test_promote.py, test_registry.py)",
    "sd21": "needs Stable Diffusion 2.1's weights (tests/test_shipped.py covers the other profiles)",
    "remote": "needs a running service (tests/test_serve.py)",
    "sweep": "minutes of Ray Tune (tests/test_sweep_ray.py)",
    "promote": "needs a sweep (tests/test_promote.py)",
    "kodak": "Kodak is not in a clone",
}
# Data limits a tiny, one-image run may hit in bd-rate; anything else (a missing file or metric,
# a bad option) is a broken README.
BD_RATE_DATA_LIMITS = ("needs at least 2 rate points", "monotonic", "share no", "no overlap")


def user_folder(tmp_path: Path) -> Path:
    """A folder as a user's: the repository's files (examples/ and configs/semantics/ among them: the
    text commands use those as written) and their own photos."""
    from resulic.images import sample_images

    home = tmp_path / "clone"
    home.mkdir()
    for name in REPO_ENTRIES:
        (home / name).symlink_to(REPO / name)
    (home / "photos").mkdir()
    for i, (name, img) in enumerate(sample_images(2)):
        small = img.convert("RGB").crop((100, 60, 164, 124))
        small.save(home / "photos" / f"{name}.png")
        if i == 0:  # a photo the size of a small picture: a bpp target of a few tenths is in the model's range
            img.convert("RGB").crop((0, 0, 384, 256)).save(home / "photo.png")
    return home


def made_by_a_shipped_codec(path: str) -> bool:
    from resulic.codec import shipped
    from resulic.codec.container import unpack

    return Path(path).is_file() and shipped.folder_for_fingerprint(unpack(Path(path).read_bytes()).header.fingerprint) is not None


def run_resulic(argv: list[str], capsys, monkeypatch, tiny: bool) -> tuple[int, str, str]:
    if not tiny:  # --rate, the shipped folders and their files: the shipped codec itself
        monkeypatch.delenv("RESULIC_MODEL", raising=False)
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # --help
        code = exc.code
    finally:
        monkeypatch.setenv("RESULIC_MODEL", "tiny")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def walk(commands: list[list[str]], home: Path, capsys, monkeypatch) -> list[str]:
    monkeypatch.chdir(home)
    ran, seen = [], set()
    for argv in commands:
        if argv[0] != "resulic" or tuple(argv) in seen:
            continue
        seen.add(tuple(argv))
        line = shlex.join(argv)
        if any(key in line.lower() for key in NOT_RUN_HERE):
            continue
        args = [m for a in argv[1:] for m in (sorted(glob.glob(a)) if "*" in a else [a])]  # the shell's globbing
        args = CHEAPER.get(args[0], lambda a: a)(args)
        shipped = "--rate" in args or "--bpp" in args or SHIPPED in line or (args[0] == "decompress" and made_by_a_shipped_codec(args[1]))
        code, out, err = run_resulic(args, capsys, monkeypatch, tiny=not shipped)
        if args[0] == "bd-rate" and code == 2:
            assert any(limit in err for limit in BD_RATE_DATA_LIMITS), f"`{line}`: {err}"
        else:
            assert code == 0, f"`{line}` (run as `resulic {shlex.join(args)}`) failed: {err[-800:]}"
        ran.append(args[0])
    return ran


@pytest.mark.slow
def test_walk_the_readme(tmp_path, capsys, monkeypatch):
    home = user_folder(tmp_path)
    inputs = {p: p.read_bytes() for p in [home / "photo.png", *(home / "photos").iterdir()]}
    ran = walk(readme_commands(), home, capsys, monkeypatch)
    assert {"compress", "decompress", "info", "evaluate", "baselines", "bd-rate", "plot"} <= set(ran)
    assert [p.name for p, data in inputs.items() if p.read_bytes() != data] == [], "the README overwrote a user's photo"
    assert (home / "photo.rslc").is_file() and sorted(p.name for p in (home / "compressed").iterdir())
    assert (home / "outputs/eval/results.json").is_file() and list((home / "outputs/plots").glob("*.png"))


@pytest.mark.slow
def test_walk_the_help_examples(tmp_path, capsys, monkeypatch):
    home = user_folder(tmp_path)
    original = (home / "photo.png").read_bytes()
    ran = walk(help_examples(), home, capsys, monkeypatch)
    assert (home / "photo.png").read_bytes() == original, "a --help example overwrote the user's photo"
    assert {"compress", "decompress", "info"} <= set(ran)


def test_license_file_and_weights_statement():
    """LICENSE is the licence pyproject names; README's License section links the weights' terms,
    and the example files the text commands use exist and parse."""
    import json
    import tomllib

    from resulic.config import SemanticsConfig, load_config

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "Apache-2.0"
    assert "Apache License" in (REPO / "LICENSE").read_text()[:200] and "Version 2.0" in (REPO / "LICENSE").read_text()[:200]
    section = README.read_text().split("## License", 1)[1].split("\n## ", 1)[0]
    assert "platform/resulic/weights/README.md" in section and "(LICENSE)" in section
    weights = (REPO / "platform/resulic/weights/README.md").read_text()
    for folder in ("taef2", "small-prior", "small-codecs"):
        assert (REPO / "platform/resulic/weights" / folder).is_dir() and f"`{folder}/`" in weights
    captions = [json.loads(line) for line in (REPO / "examples/captions.jsonl").read_text().splitlines()]
    assert sorted(c["image"] for c in captions) == sorted(p.name for p in (REPO / "examples/photos").iterdir())
    load_config(SemanticsConfig, REPO / "configs/semantics/example.yaml")


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    """README's ```python block, as written, on a user's photo.png: a real file's bytes and back."""
    from PIL import Image

    from resulic.images import sample_images

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1 and len([line for line in blocks[0].splitlines() if line.strip()]) <= 5
    monkeypatch.chdir(tmp_path)
    sample_images(1)[0][1].crop((0, 0, 256, 192)).save("photo.png")
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    assert Image.open("photo-python.png").size == (256, 192)
    from resulic.codec.container import unpack

    assert unpack(scope["data"]).header.width == 256  # a real file's bytes
