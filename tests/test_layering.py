"""The package's import graph keeps its layers (docs/architecture.md, "Layers").

Imports flow one way: ``ops <- attacks <- callbacks <- lightning_modules``; ``nn`` and the
foundation modules (errors, validation, ops, schemas) sit below attacks; ``datamodules`` and
``envs`` may use the foundation, ``nn`` and attacks (a poisoner is an attack applied to a
dataset) but never callbacks or methods; a method folder never imports another method folder;
and no two modules import each other, directly or through a chain. Imports inside functions
count too: a lazy import is still a dependency. The graph is read from the source with ``ast``,
so nothing is imported and optional extras do not matter.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "robust_lightning"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Layer of each top-level part of the package; a module may import its own layer or lower ones,
# as listed in ALLOWED.
LAYER_OF_PART = {
    "_C": "foundation",
    "_checkpoint": "foundation",
    "_extras": "foundation",
    "_lazy": "foundation",
    "_validation": "foundation",
    "errors": "foundation",
    "flow_schema": "foundation",
    "ops": "foundation",
    "protocol": "foundation",
    "shipped_configs": "foundation",
    "nn": "nn",
    "attacks": "attacks",
    "callbacks": "callbacks",
    "datamodules": "data",
    "envs": "data",
    "lightning_modules": "methods",
    "cli": "entry",
    "__main__": "entry",
    "__init__": "entry",
}
ALLOWED = {
    "foundation": {"foundation"},
    "nn": {"foundation", "nn"},
    "attacks": {"foundation", "nn", "attacks"},
    "callbacks": {"foundation", "nn", "attacks", "callbacks"},
    "data": {"foundation", "nn", "attacks", "data"},
    "methods": {"foundation", "nn", "attacks", "callbacks", "data", "methods"},
    "entry": set(LAYER_OF_PART.values()),
}
# Modules of lightning_modules/ that every method may share (not method folders).
SHARED_METHOD_MODULES = {"__init__", "_domains", "_optim", "base", "classifier", "registry"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


# The compiled extension has no source to read but is a module of the foundation layer.
MODULES = {**_all_modules(), f"{PACKAGE}._C": ROOT / "_C.abi3.so"}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py" if name in MODULES else False


def _canonical(name: str) -> str:
    """``a.b`` for module ``a/b.py``; ``a.b.__init__`` for package ``a/b/``."""
    if f"{name}.__init__" in MODULES:
        return f"{name}.__init__"
    return name


def _imported_modules(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every robust_lightning module ``name`` imports, with the line, at any nesting depth."""
    if path.suffix != ".py":
        return
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package_parts = name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield _canonical(alias.name), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                # ``from robust_lightning import ops`` depends on the module ops, not on the
                # package's __init__ (which re-exports everything).
                candidate = f"{source}.{alias.name}"
                if candidate in MODULES or f"{candidate}.__init__" in MODULES:
                    yield _canonical(candidate), node.lineno
                else:
                    yield _canonical(source), node.lineno


def _part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(name: str) -> str:
    part = _part(name)
    if part not in LAYER_OF_PART:
        raise AssertionError(f"{name}: top-level part {part!r} has no layer; add it to LAYER_OF_PART")
    return LAYER_OF_PART[part]


def _method_folder(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) >= 4 and parts[1] == "lightning_modules" and parts[2] not in SHARED_METHOD_MODULES:
        return parts[2]
    return None


GRAPH = {name: sorted(set(_imported_modules(name, path))) for name, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        _layer(name)


def _violations(name: str, targets: list[tuple[str, int]]) -> list[str]:
    layer = _layer(name)
    own = _method_folder(name)
    violations = []
    for target, line in targets:
        if target not in MODULES:
            violations.append(f"line {line}: imports {target}, which does not exist")
            continue
        target_layer = _layer(target)
        if target_layer not in ALLOWED[layer]:
            violations.append(f"line {line}: a {layer} module imports {target} ({target_layer})")
        other = _method_folder(target)
        if other is not None and own is not None and own != other:
            violations.append(f"line {line}: method folder {own!r} imports method folder {other!r} ({target})")
    return violations


@pytest.mark.parametrize("name", sorted(name for name in MODULES if not name.endswith("__init__")))
def test_imports_respect_the_layers(name: str) -> None:
    # Package __init__ files only re-export their own subpackage and are not checked.
    violations = _violations(name, GRAPH[name])
    assert not violations, f"{name}:\n  " + "\n  ".join(violations)


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan; the graph is small enough for recursion
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles() -> None:
    # Package __init__ files re-export; an edge through them is not a dependency of the code.
    graph = {
        name: [target for target, _ in targets if not target.endswith("__init__") and target != name]
        for name, targets in GRAPH.items()
        if not name.endswith("__init__")
    }
    cycles = [component for component in _strongly_connected(graph) if len(component) > 1]
    assert not cycles, "modules that import each other (directly or through a chain): " + "; ".join(
        " <-> ".join(component) for component in cycles
    )


def test_the_checker_reports_violations_and_cycles() -> None:
    """The walk is not vacuous: known-bad edges are reported, real edges are seen."""
    callback = f"{PACKAGE}.callbacks.adversarial_training"
    assert _violations(callback, [(f"{PACKAGE}.lightning_modules.kgat.model", 3)]) == [
        f"line 3: a callbacks module imports {PACKAGE}.lightning_modules.kgat.model (methods)"
    ]
    attack = f"{PACKAGE}.attacks.core"
    assert _violations(attack, [(f"{PACKAGE}.datamodules.digits", 7)])
    kgat = f"{PACKAGE}.lightning_modules.kgat.lightning_module"
    assert _violations(kgat, [(f"{PACKAGE}.lightning_modules.nup.model", 1)])
    assert not _violations(kgat, [(f"{PACKAGE}.lightning_modules.classifier", 1)])
    assert any(target == f"{PACKAGE}.attacks.engine" for target, _ in GRAPH[f"{PACKAGE}.callbacks._common"])
    assert _strongly_connected({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"], ["d"]]
