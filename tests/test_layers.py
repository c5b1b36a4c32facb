"""The import contract in layers.toml: every import, function-local ones included, points down
(or sideways within a layer), and no import cycle exists anywhere in embres."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "embres"


def module_names() -> dict[str, Path]:
    """``embres.x.y`` -> file, for every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported embres module, line) for every import statement in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from embres import data" imports the module embres.data, not embres itself.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        for target in targets:
            while target and target not in modules:  # "embres.data.cached.X" -> the module
                target = target.rpartition(".")[0]
            if target.startswith("embres") and target != name:
                found.append((target, node.lineno))
    return found


def layer_of(name: str, layers: list[list[str]]) -> int | None:
    """Index of the layer whose longest entry matches ``name`` (0 = top), None if unlisted."""
    best, best_len = None, -1
    for index, entries in enumerate(layers):
        for entry in entries:
            if (name == entry or name.startswith(entry + ".")) and len(entry) > best_len:
                best, best_len = index, len(entry)
    return best


def contract() -> list[list[str]]:
    return tomllib.loads((REPO / "layers.toml").read_text())["layers"]


def violations(modules: dict[str, Path], layers: list[list[str]]) -> list[str]:
    """Upward imports, as ``"a (layer i) imports b (layer j) at file:line"``."""
    bad = []
    for name, path in sorted(modules.items()):
        if name == "embres":
            continue  # the public API may import anything
        mine = layer_of(name, layers)
        for target, line in imports_of(name, path, modules):
            # The package itself is the public API: it loads the top layer on demand.
            theirs = 0 if target == "embres" else layer_of(target, layers)
            if theirs is not None and mine is not None and theirs < mine:
                rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                bad.append(
                    f"{name} (layer {mine}) imports {target} (layer {theirs}) at {rel}:{line}"
                )
    return bad


def cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {n: sorted({t for t, _ in imports_of(n, p, modules)}) for n, p in modules.items()}
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    layers = contract()
    unlisted = [n for n in module_names() if n != "embres" and layer_of(n, layers) is None]
    assert not unlisted, f"modules missing from layers.toml: {unlisted}"


def test_imports_point_down():
    assert violations(module_names(), contract()) == []


def test_no_import_cycles():
    assert cycles(module_names()) == []


def test_contract_catches_an_upward_local_import(tmp_path):
    """The checks can fail: a function-local upward import and a cycle are both reported."""
    modules = module_names()
    fake = tmp_path / "tokenize.py"
    fake.write_text(
        modules["embres.tokenize"].read_text()
        + "\n\ndef _late():\n    from embres.train import train_and_evaluate\n"
        "    return train_and_evaluate\n"
    )
    modules["embres.tokenize"] = fake
    found = violations(modules, contract())
    assert any(v.startswith("embres.tokenize") and "embres.train" in v for v in found), found
    assert any("embres.tokenize" in c and "embres.train" in c for c in cycles(modules))


@pytest.mark.parametrize("relative", ["from . import pooling", "from .models import hf"])
def test_relative_imports_resolve(tmp_path, relative):
    modules = module_names()
    fake = tmp_path / "extract.py"
    fake.write_text(relative + "\n")
    modules["embres.extract"] = fake
    targets = [t for t, _ in imports_of("embres.extract", fake, modules)]
    assert targets and all(t.startswith("embres.") for t in targets)
