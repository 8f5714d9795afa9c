"""One of each: one atomic writer, one image reader, one image-extension list, one ImageNet
mean/std, one GroupNorm rule. An AST walk of the package finds any second one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hybridvision

PACKAGE = Path(hybridvision.__file__).parent
FILES = sorted(PACKAGE.rglob("*.py"))


def _calls(path: Path) -> list[tuple[str, int]]:
    """Dotted names of every call in a file, e.g. ``("os.replace", 12)``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            out.append((".".join(reversed(parts)), node.lineno))
    return out


def _assigned(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _where(predicate) -> set[str]:
    return {str(p.relative_to(PACKAGE)) for p in FILES if predicate(p)}


@pytest.mark.parametrize(
    "what, calls, home",
    [
        ("atomic writer", {"tempfile.mkstemp", "os.replace", "os.rename"}, {"fileio.py"}),
        ("image decoder", {"Image.open", "decode_image", "read_image", "torchvision.io.decode_image"},
         {"imageio.py"}),
        ("GroupNorm rule", {"nn.GroupNorm", "torch.nn.GroupNorm"}, {"layers/blocks.py"}),
    ],
)
def test_one_function_does_it(what: str, calls: set[str], home: set[str]) -> None:
    found = _where(lambda p: any(name in calls for name, _ in _calls(p)))
    assert found == home, f"the {what} lives in {home}, but {sorted(found - home)} do it too"


@pytest.mark.parametrize(
    "names, home",
    [
        ({"IMAGE_EXTENSIONS"}, {"imageio.py"}),
        ({"IMAGENET_MEAN", "IMAGENET_STD"}, {"constants.py"}),
    ],
)
def test_one_definition(names: set[str], home: set[str]) -> None:
    assert _where(lambda p: bool(_assigned(p) & names)) == home


def test_the_checks_can_fail(tmp_path) -> None:
    """Negative control: a second writer or definition in a file is seen."""
    f = tmp_path / "second.py"
    f.write_text("import os\nIMAGE_EXTENSIONS = ()\ndef w(a, b):\n    os.replace(a, b)\n")
    assert ("os.replace", 4) in _calls(f) and "IMAGE_EXTENSIONS" in _assigned(f)
