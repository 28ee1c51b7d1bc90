"""The library's folders are layers (platform/resulic/__init__.py, docs/architecture.md): no module
imports itself in a circle, each folder imports only the folders it may, the method imports
neither Ray nor MLflow, and every folder's ``__init__`` says what it is and what it may import.

Static: the imports are read with ``ast`` (those inside functions too: a lazy import is still a
dependency), nothing is imported, so this runs in a second.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "resulic"

GROUND = {"config", "errors", "images"}  # modules beside the folders, importable by every layer
METHOD = {"entropy", "models", "diffusion", "semantics", "codec"}  # the codec itself: no Ray, no MLflow
PLATFORM = {"metrics", "services", "data", "evaluation", "train", "tune", "serving"}
# What each layer may import besides itself and the ground.
ALLOWED = {
    "ground": set(),
    "entropy": set(),
    "models": {"entropy"},
    "diffusion": set(),
    "semantics": {"models"},
    "codec": {"entropy", "models", "diffusion", "semantics"},
    "metrics": set(),
    "data": set(),
    "services": METHOD,
    "evaluation": METHOD | {"metrics", "services"},
    "train": METHOD | {"metrics", "services", "data", "evaluation"},
    "tune": METHOD | {"metrics", "services", "data", "evaluation", "train"},
    "serving": METHOD | {"services"},
    "cli": METHOD | PLATFORM,
    "pyfunc": {"services"},  # the alias kept for registered versions (resulic/pyfunc.py)
    "resulic": set(),  # the package's own __init__
}
NO_RAY_OR_MLFLOW = METHOD | {"ground", "metrics"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = modules()


def imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(the library modules ``name`` imports, the top-level names of the other packages it imports)."""
    inside, outside = set(), set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] != "resulic":
                outside.add(target.split(".")[0])
                continue
            while target not in MODULES:  # resulic.codec.store.load_codec -> resulic.codec.store
                target = target.rpartition(".")[0]
            if target != name:
                inside.add(target)
    return inside, outside


GRAPH = {name: imports(name, path) for name, path in MODULES.items()}


def layer(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 1:
        return "resulic"
    return "ground" if parts[1] in GROUND else parts[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_in_a_circle():
    circles = cycles({name: inside for name, (inside, _) in GRAPH.items()})
    assert not circles, "import circles (move what both need below both): " + "; ".join(" <-> ".join(c) for c in circles)


def test_every_module_belongs_to_a_known_layer():
    assert {layer(name) for name in MODULES} <= set(ALLOWED), sorted({layer(n) for n in MODULES} - set(ALLOWED))


def test_each_layer_imports_only_the_layers_below_it():
    wrong = [f"{name} imports {target} ({layer(name)} may import {sorted(ALLOWED[layer(name)] | {'ground'})})"
             for name, (inside, _) in sorted(GRAPH.items()) for target in sorted(inside)
             if layer(target) not in ALLOWED[layer(name)] | {layer(name), "ground"}]
    assert not wrong, "\n".join(wrong)


def test_the_method_imports_neither_ray_nor_mlflow():
    # With the layering above, also what it imports imports neither.
    wrong = [f"{name} imports {package}" for name, (_, outside) in sorted(GRAPH.items())
             if layer(name) in NO_RAY_OR_MLFLOW for package in sorted(outside & {"ray", "mlflow"})]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in PACKAGE.rglob("__init__.py")))
def test_each_folder_says_what_it_is_and_what_it_may_import(folder):
    path = PACKAGE / "__init__.py" if folder == "resulic" else next(PACKAGE.rglob(f"{folder}/__init__.py"))
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert doc, f"{path.relative_to(PACKAGE.parent)}: no docstring"
    summary = doc.split("\n\n")[0] if folder != "resulic" else doc
    assert "import" in summary, f"{path.relative_to(PACKAGE.parent)}: its first paragraph does not say what it may import"


def test_the_pyfunc_alias_forwards_to_the_services_module():
    # Versions registered before the move name loader_module: resulic.pyfunc in their MLmodel.
    aliased, _ = GRAPH["resulic.pyfunc"]
    assert aliased == {"resulic.services.pyfunc"}
    tree = ast.parse(MODULES["resulic.pyfunc"].read_text())
    names = {a.name for node in tree.body if isinstance(node, ast.ImportFrom) for a in node.names}
    assert "_load_pyfunc" in names  # what MLflow calls on the loader module
