"""The package's layers: every module has a place in :data:`LAYERS` and no import runs upward.

``LAYERS`` lists the layers from the top (the command line) to the bottom (the error types); an
entry names a top-level module (``cli``) or a package, which covers all its submodules (``data``
covers ``data.coco`` and ``data.builtin.amounts``); ``__init__`` is the package's own
``hybridvision/__init__.py``. A module may import any module of a lower layer and any module of
its own package; another package of its own layer only where :data:`SAME_LAYER` says so; a higher
layer never. Every import statement counts, at module level or inside a function (the AST walker
of ``tests/test_imports.py``). ``docs/architecture.md`` draws the same table; a test checks that
it lists the same entries in the same order.

On top of that, the packages themselves form no circle (an import allowed by the layers cannot
make one, but the same-layer exceptions could).
"""

from __future__ import annotations

import re
from pathlib import Path

from test_imports import MODULES, _cycles, _graph, _imports

PACKAGE = "hybridvision"
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

# Top to bottom. A new module goes into the layer of what it is, below everything that uses it.
LAYERS: list[tuple[str, list[str]]] = [
    ("entry points", ["__init__", "__main__"]),
    ("command line", ["cli"]),
    ("workflows", ["studies", "demo", "explain"]),
    ("verbs", ["api", "bench", "export"]),
    ("engine", ["engine"]),
    ("assembly", ["factory", "config", "plots"]),
    ("registration", ["models"]),
    ("models, data and metrics", ["detectors", "retrieval", "evaluation", "data"]),
    ("backbones and necks", ["backbones", "necks"]),
    ("building blocks", ["layers", "ops", "losses"]),
    ("shared structures", ["structures", "options", "drawing", "console", "constants", "tile_overlap",
                           "interrupts"]),
    ("files", ["fileio", "imageio"]),
    ("registry", ["registry"]),
    ("errors", ["errors"]),
]

# Imports between two packages of one layer that are allowed, with the reason.
SAME_LAYER: dict[tuple[str, str], str] = {
    ("retrieval", "evaluation"): "zero-shot retrieval scores with the retrieval metrics (evaluation.retrieval)",
    ("evaluation", "data"): "COCO evaluation reads annotation files through data.validate",
}


def _relative(module: str) -> str:
    """``hybridvision.data.coco`` → ``data.coco``; the package itself → ``__init__``."""
    return "__init__" if module == PACKAGE else module[len(PACKAGE) + 1:]


def place(module: str, layers: list[tuple[str, list[str]]] = LAYERS) -> tuple[int, str] | None:
    """(layer index, table entry) of a module: the longest entry that is it or a package above
    it; None when no entry covers it."""
    rel = _relative(module)
    best = None
    for i, (_, entries) in enumerate(layers):
        for entry in entries:
            if (rel == entry or rel.startswith(entry + ".")) and (best is None or len(entry) > len(best[1])):
                best = (i, entry)
    return best


def unplaced(modules: list[str], layers: list[tuple[str, list[str]]] = LAYERS) -> list[str]:
    return sorted(m for m in modules if place(m, layers) is None)


def layer_violations(graph: dict[str, set[str]], layers: list[tuple[str, list[str]]] = LAYERS,
                     same_layer: dict[tuple[str, str], str] = SAME_LAYER) -> list[str]:
    """Every edge that runs to a higher layer, or across packages of one layer without leave."""
    bad = []
    for src in sorted(graph):
        for dst in sorted(graph[src]):
            a, b = place(src, layers), place(dst, layers)
            if a is None or b is None or a[1] == b[1]:
                continue  # unplaced modules are reported apart; inside one entry anything goes
            if b[0] < a[0]:
                bad.append(f"{_relative(src)} -> {_relative(dst)} (layer '{layers[a[0]][0]}' imports "
                           f"the higher layer '{layers[b[0]][0]}')")
            elif b[0] == a[0] and (a[1], b[1]) not in same_layer:
                bad.append(f"{_relative(src)} -> {_relative(dst)} (same layer '{layers[a[0]][0]}', "
                           "not listed in SAME_LAYER)")
    return bad


def _top(module: str) -> str:
    """The top-level unit a module belongs to: ``data.builtin.amounts`` → ``data``."""
    return _relative(module).split(".")[0]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between top-level modules and packages."""
    out: dict[str, set[str]] = {_top(m): set() for m in graph}
    for src, dsts in graph.items():
        out[_top(src)] |= {_top(d) for d in dsts if _top(d) != _top(src)}
    return out


# --------------------------------------------------------------------------- the package


def test_every_module_has_a_layer() -> None:
    missing = unplaced(list(MODULES))
    assert not missing, "modules missing from LAYERS in tests/test_layers.py (and docs/architecture.md): " + ", ".join(
        _relative(m) for m in missing)


def test_table_entries_exist() -> None:
    """A stale entry (a module renamed or removed) would silently cover nothing."""
    rels = {_relative(m) for m in MODULES}
    stale = [e for _, entries in LAYERS for e in entries
             if not any(r == e or r.startswith(e + ".") for r in rels)]
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_no_import_runs_upward() -> None:
    bad = layer_violations(_graph())
    assert not bad, "imports against the layers:\n  " + "\n  ".join(bad)


def test_no_cycle_between_packages() -> None:
    cycles = _cycles(package_graph(_graph()))
    assert not cycles, "package cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_architecture_doc_draws_the_same_layers() -> None:
    """The table of docs/architecture.md: one row per layer, top first, its entries in backticks."""
    rows = [line for line in DOC.read_text(encoding="utf-8").splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    doc = [(cells[2].strip(), re.findall(r"`([^`]+)`", cells[3]))
           for cells in (row.split("|") for row in rows)]
    assert doc == LAYERS
    allowed = re.findall(r"^- `(\w+)` → `(\w+)`", DOC.read_text(encoding="utf-8"), flags=re.M)
    assert sorted(allowed) == sorted(SAME_LAYER)


# ------------------------------------------------------------------ controls: the checker bites


def test_control_upward_edge_is_reported() -> None:
    """A synthetic graph with one upward edge (data → detectors, the fault this test was written
    for) and one allowed downward edge: exactly the upward one is reported."""
    graph = {"hybridvision.data.coco": {"hybridvision.detectors.base", "hybridvision.errors"},
             "hybridvision.detectors.base": {"hybridvision.structures"}, "hybridvision.errors": set(),
             "hybridvision.structures": set()}
    assert layer_violations(graph, same_layer={}) == [
        "data.coco -> detectors.base (same layer 'models, data and metrics', not listed in SAME_LAYER)"]
    graph = {"hybridvision.backbones.hybrid": {"hybridvision.evaluation.cost"},
             "hybridvision.evaluation.cost": set()}
    (msg,) = layer_violations(graph)
    assert msg.startswith("backbones.hybrid -> evaluation.cost (layer 'backbones and necks' imports the higher")


def test_control_unplaced_module_and_package_cycle() -> None:
    assert unplaced(["hybridvision.newthing", "hybridvision.data.new", "hybridvision"]) == ["hybridvision.newthing"]
    graph = {"hybridvision.evaluation.compare": {"hybridvision.factory"},
             "hybridvision.factory": {"hybridvision.engine.tasks"},
             "hybridvision.engine.tasks": {"hybridvision.evaluation.coco"}, "hybridvision.evaluation.coco": set()}
    assert _cycles(package_graph(graph)) == [["engine", "evaluation", "factory"]]


def test_control_function_level_import_is_an_edge(tmp_path: Path) -> None:
    """The AST walker sees an import inside a function, so a deferred upward import is caught."""
    path = tmp_path / "hybrid.py"
    path.write_text("def count():\n    from hybridvision.evaluation.cost import count_macs\n    return count_macs\n")
    targets = {t for t, _, _ in _imports("hybridvision.backbones.hybrid", path)}
    assert targets == {"hybridvision.evaluation.cost"}
    assert layer_violations({"hybridvision.backbones.hybrid": targets})
