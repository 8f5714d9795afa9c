"""The README's marked code blocks, for the tests that run them exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(marker: str) -> str:
    """The ```python block that follows ``<!-- MARKER:`` in README.md (the marker appears once)."""
    tag = f"<!-- {marker}:"
    text = README.read_text(encoding="utf-8")
    assert text.count(tag) == 1, f"README.md: the {marker} code block lost its marker"
    block = re.search(r"```python\n(.*?)```", text[text.index(tag):], re.S)
    assert block is not None, f"README.md: no ```python block after the {marker} marker"
    return block.group(1)
