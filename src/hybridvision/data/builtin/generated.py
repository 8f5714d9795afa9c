"""One rule for every generated dataset (``amounts``, ``sketches``, ``bimodal``): what the
generator wrote is its own, everything else in the folder is the user's.

A generator records in its manifest the SHA-256 of every file it wrote (``sha256``: relative path
→ hex digest; :func:`checksums`). Before a regeneration replaces the folder,
:func:`user_files` lists the files that are the user's — a file the generator did not write
(added), or one whose bytes no longer hash to what it wrote (edited, or replaced by another
image of the same name) — and :func:`refuse_user_files` stops with one line naming the first of
them and the fix; the folder is then never touched. A generated file that is gone is not the
user's: nothing of theirs would be lost. A manifest from before every file was hashed checks the
files it did hash (``amounts``: its JSON and label files) and its listing of the others.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hybridvision.errors import UserInputError
from hybridvision.fileio import files_not_in

__all__ = ["MANIFEST", "file_sha256", "checksums", "user_files", "refuse_user_files"]

MANIFEST = "manifest.json"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checksums(root: str | os.PathLike) -> dict[str, str]:
    """``{relative path: SHA-256}`` of every file under ``root`` but the manifest: what a
    generator wrote, recorded in its manifest before the manifest itself is written."""
    root = Path(root)
    return {rel: file_sha256(root / rel) for rel in files_not_in(root, {MANIFEST})}


def _safe(rel: str) -> bool:
    return not Path(rel).is_absolute() and ".." not in Path(rel).parts


def user_files(root: str | os.PathLike, listed: Iterable[str], sums: Any) -> list[str] | None:
    """The user's files under ``root`` (relative paths: the edited ones, then the added ones):
    a file not in ``listed`` (what the generator wrote) nor in ``sums``, or one whose SHA-256
    differs from ``sums``. None when ``sums`` is not a checksum map a generator writes (the
    manifest is not ours: nothing in the folder is known to be the generator's)."""
    root = Path(root)
    if sums is None:
        sums = {}
    if not (isinstance(sums, Mapping) and all(isinstance(k, str) and isinstance(v, str) and _safe(k)
                                              for k, v in sums.items())):
        return None
    edited = []
    for rel, digest in sums.items():
        path = root / rel
        if not (path.exists() or path.is_symlink()):
            continue  # gone: nothing of the user's would be lost
        try:
            same = path.is_file() and not path.is_symlink() and file_sha256(path) == digest
        except OSError:  # unreadable: not what was generated
            same = False
        if not same:
            edited.append(rel)
    added = files_not_in(root, {MANIFEST, *map(str, listed), *sums})
    return edited + added


def refuse_user_files(root: str | os.PathLike, what: str, listed: Iterable[str], sums: Any, fix: str) -> None:
    """Raise one :class:`UserInputError` if ``root`` (a ``what`` dataset a generator made) holds
    files of the user's (:func:`user_files`), naming the first of them, why it is the user's and
    ``fix`` (how to regenerate elsewhere); no-op if everything there is the generator's."""
    root = Path(root)
    found = user_files(root, listed, sums)
    if found is None:
        raise UserInputError(f"{root}: is not a {what} dataset made by hybridvision (its {MANIFEST} is not "
                             f"the generator's); regenerating would delete its files — {fix}")
    if not found:
        return
    first = found[0]
    why = ("was not written by the generator (added)" if first not in (sums or {})
           else f"changed since the dataset was generated (its SHA-256 differs from {MANIFEST})")
    more = f" and {len(found) - 1} more file(s)" if len(found) > 1 else ""
    raise UserInputError(f"{root}: {first} {why}{more}; it is yours and regenerating the {what} data would "
                         f"replace or delete it — {fix}")
