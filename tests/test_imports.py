"""The package's import graph: no circle and no import of another module's private name.

Every ``import`` statement counts, at module level or inside a function (a function-level import
that only hides a circle still makes one). Edges are the modules named by the statements:
``from hybridvision.a import b`` points at ``hybridvision.a.b`` when that is a module, else at
``hybridvision.a``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hybridvision

PACKAGE_ROOT = Path(hybridvision.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(target module, imported name or None, line) for every import of a package module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("hybridvision"):
                    out.append((a.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            if not base.startswith("hybridvision"):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (base, a.name, node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, _, _ in _imports(name, path):
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle() -> None:
    """Negative control: the checker sees a circle through a function-level import."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    src = "def f():\n    from hybridvision.registry import _MODELS\n"
    tree = ast.parse(src)
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))


def test_no_import_cycle() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_names_imported_across_modules() -> None:
    bad = []
    for name, path in MODULES.items():
        for target, imported, line in _imports(name, path):
            if imported and imported.startswith("_") and not imported.startswith("__") and target != name:
                bad.append(f"{path.relative_to(PACKAGE_ROOT.parent)}:{line} imports {target}.{imported}")
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("leaf", ["hybridvision.registry", "hybridvision.layers.registry",
                                  "hybridvision.errors"])
def test_registries_are_leaves(leaf: str) -> None:
    deps = {t for t, _, _ in _imports(leaf, MODULES[leaf]) if t in MODULES} - {"hybridvision.errors"}
    assert not deps, f"{leaf} imports {sorted(deps)}"


def test_package_modules_are_imported_at_module_level() -> None:
    """An import of a package module inside a function hides a dependency (and, before, circles)."""
    inside = []
    for path in MODULES.values():
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    mod = (node.module if isinstance(node, ast.ImportFrom)
                           else node.names[0].name if isinstance(node, ast.Import) else None)
                    if mod and mod.startswith("hybridvision"):
                        inside.append(f"{path.relative_to(PACKAGE_ROOT.parent)}:{node.lineno} {mod}")
    assert not inside, "; ".join(inside)
