"""The docs name only modules and files that exist: every ``resulic.<module>[.<name>]`` in
README.md, docs/*.md and serve/README.md is a module of the library (and the name one it defines),
and every ``platform/resulic/...`` path is there. Static (``ast``): nothing is imported."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLATFORM = REPO / "platform"
DOCS = sorted([REPO / "README.md", REPO / "serve" / "README.md", *(REPO / "docs").glob("*.md")])
DOTTED = re.compile(r"(?<![\w.\-/])resulic(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"(?<![\w.\-/])(?:platform/)?resulic/[\w./\-]*")


def module_file(name: str) -> Path | None:
    base = PLATFORM.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@cache
def top_level_names(path: Path) -> set[str]:
    """What a module defines or imports at its top level, and the names a package loads on
    first use (the string keys of its ``_EXPORTS``)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
            if isinstance(node.value, ast.Dict):
                names |= {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


@cache
def library_strings() -> set[str]:
    """``resulic.``-prefixed strings the library itself uses (MLflow tag keys such as
    ``resulic.run_name``): a doc naming one names a tag, not a module."""
    found = set()
    for path in (PLATFORM / "resulic").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.fullmatch(node.value):
                found.add(node.value)
    return found


def problem(name: str) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        path = module_file(".".join(parts[:end]))
        if path is None:
            continue
        if end == len(parts):
            return None
        if parts[end] in top_level_names(path) or module_file(".".join(parts[: end + 1])):
            return None
        if name in library_strings():
            return None
        return f"{'.'.join(parts[:end])} defines no {parts[end]!r}"
    return "no such module"


def test_the_checks_catch_a_stale_name():
    assert problem("resulic.codec.store.load_codec") is None
    assert problem("resulic.codec.DecodeLimits") is None  # loaded on first use
    assert problem("resulic.serving") is None  # a package
    assert problem("resulic.registry") is not None  # moved to resulic.services.registry
    assert problem("resulic.nosuch.module") == "resulic defines no 'nosuch'"
    assert "defines no" in problem("resulic.codec.store.resolve_codec")  # moved to resulic.codec.resolve


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_docs_name_existing_modules(doc):
    wrong = []
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        for match in DOTTED.finditer(line):
            why = problem(match.group(0))
            if why:
                wrong.append(f"{doc.relative_to(REPO)}:{number}: {match.group(0)}: {why}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_docs_name_existing_paths(doc):
    wrong = []
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        for match in PATH.finditer(line):
            path = match.group(0).rstrip(".,;:-")
            rel = path if path.startswith("platform/") else "platform/" + path
            if not (REPO / rel).exists():
                wrong.append(f"{doc.relative_to(REPO)}:{number}: {path}: no such file or folder")
    assert not wrong, "\n".join(wrong)
