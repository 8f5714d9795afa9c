"""How sketch samples are split: split-list files with their class map, and the seeded per-class split.

Split-list format (TU-Berlin or any image folder): ``DIR/{train,val,test}.txt``, one sample per
line, ``path<TAB>label`` (a space also separates when the line has no tab); ``path`` is relative
to ``DIR`` (or absolute) and ``label`` is an integer index into the class map or a class name.
The class map ``DIR/classes.txt`` is either ``label<TAB>class name`` lines or one class name per
line (line order = label). Blank lines and lines starting with ``#`` are ignored in both.

Without split lists, :func:`split_indices` splits each class by seed (80/20 by default, thesis B).

Symbols: N samples, K classes.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from hybridvision.errors import DataError, UserInputError

__all__ = ["read_class_map", "read_split_list", "split_indices"]


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); check the path and permissions") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason}); write it as UTF-8") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s and not s.startswith("#"):
            yield lineno, line.rstrip("\r\n")


def read_class_map(path: str | os.PathLike) -> list[str]:
    """Read a class map → class names indexed by label.

    Two forms: ``label<TAB>class name`` lines (labels 0..K-1, any order, each once), or one class
    name per line (the line order is the label). The first form is used when every line has a tab.
    """
    p = Path(path)
    lines = list(_text_lines(p))
    if not lines:
        raise DataError(f"{p}: empty class map; write one class name per line (or label<TAB>name)")
    if all("\t" in line for _, line in lines):
        names: dict[int, str] = {}
        for lineno, line in lines:
            a, _, b = line.partition("\t")
            try:
                label = int(a.strip())
            except ValueError:
                raise DataError(f"{p}: line {lineno}: label {a.strip()!r} is not an integer; "
                                "write label<TAB>class name lines") from None
            if label in names:
                raise DataError(f"{p}: line {lineno}: label {label} given twice; give each label once")
            names[label] = b.strip()
        if sorted(names) != list(range(len(names))):
            missing = sorted(set(range(len(names))) - set(names))[:5]
            raise DataError(f"{p}: labels must be 0..{len(names) - 1} without gaps (missing {missing}); "
                            "renumber the class map")
        classes = [names[i] for i in range(len(names))]
    else:
        classes = [line.strip() for _, line in lines]
    seen: set[str] = set()
    for c in classes:
        if not c:
            raise DataError(f"{p}: empty class name; give every label a name")
        if c in seen:
            raise DataError(f"{p}: class {c!r} listed twice; list each class once")
        seen.add(c)
    return classes


def read_split_list(
    path: str | os.PathLike,
    classes: Sequence[str] | None = None,
    *,
    root: str | os.PathLike | None = None,
) -> tuple[list[tuple[str, int]], list[str]]:
    """Read a ``path<TAB>label`` split list → ``(samples [(absolute path, label)], classes)``.

    ``label`` is an integer index into ``classes`` or a class name. Without ``classes``, labels
    must be names and the classes are their sorted set. Relative paths are resolved against
    ``root`` (default: the list's folder). Files are not opened here.
    """
    p = Path(path)
    base = Path(root) if root is not None else p.parent
    index = {c: i for i, c in enumerate(classes)} if classes is not None else None
    raw: list[tuple[int, str, str]] = []
    for lineno, line in _text_lines(p):
        parts = line.rsplit("\t", 1) if "\t" in line else line.rsplit(None, 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise DataError(f"{p}: line {lineno}: expected 'path<TAB>label', got {line.strip()!r}; "
                            "write one image path and its label per line")
        raw.append((lineno, parts[0].strip(), parts[1].strip()))
    if not raw:
        raise DataError(f"{p}: empty split list; write one 'path<TAB>label' line per sample")
    if index is None:
        numeric = [lab for _, _, lab in raw if lab.lstrip("-").isdigit()]
        if numeric:
            raise DataError(f"{p}: integer labels (e.g. {numeric[0]}) need a class map; "
                            f"write {base / 'classes.txt'} with one class name per line")
        classes = sorted({lab for _, _, lab in raw})
        index = {c: i for i, c in enumerate(classes)}
    assert classes is not None
    samples: list[tuple[str, int]] = []
    for lineno, rel, lab in raw:
        if lab.lstrip("-").isdigit():
            label = int(lab)
            if not 0 <= label < len(classes):
                raise DataError(f"{p}: line {lineno}: label {label} outside 0..{len(classes) - 1}; "
                                "use a label from the class map")
        elif lab in index:
            label = index[lab]
        else:
            raise DataError(f"{p}: line {lineno}: unknown class {lab!r}; use a label or name from the class map")
        fp = Path(rel)
        samples.append((str(fp if fp.is_absolute() else base / fp), label))
    return samples, list(classes)


def split_indices(n: int, split: str, *, key: str, seed: int = 0, val_fraction: float = 0.2) -> np.ndarray:
    """Seeded train/val split of ``range(n)`` for one class → sorted indices of ``split``.

    The permutation depends on ``(seed, crc32(key))`` only, so adding or removing other classes
    leaves a class's split unchanged. ``round(n · val_fraction)`` items go to val.
    """
    if split == "all":
        return np.arange(n)
    if split not in ("train", "val"):
        raise UserInputError(f"split {split!r}: a seeded split has train and val only (or all)")
    n_val = int(round(n * val_fraction))
    perm = np.random.default_rng([seed, zlib.crc32(key.encode())]).permutation(n)
    chosen = perm[:n_val] if split == "val" else perm[n_val:]
    return np.sort(chosen)

