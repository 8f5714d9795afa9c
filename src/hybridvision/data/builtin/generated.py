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

Each generator describes its manifest once, as a :class:`GeneratedSet` (how its manifest is
recognised, which files it lists), and the set does the rest the same way for all three:
reading the manifest (:meth:`GeneratedSet.read_manifest`), telling a folder it may replace
(:meth:`~GeneratedSet.is_ours`, handed to :func:`~hybridvision.fileio.atomic_replace_dir`),
refusing one it may not (:meth:`~GeneratedSet.check_replaceable`), deciding whether an earlier
generation can be reused (:meth:`~GeneratedSet.reusable`: its settings match and every file it
wrote is still there) and writing the manifest last (:func:`write_manifest`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridvision.errors import UserInputError
from hybridvision.fileio import files_not_in

__all__ = ["MANIFEST", "GeneratedSet", "file_sha256", "checksums", "user_files", "refuse_user_files",
           "write_manifest"]

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


def _a(what: str) -> str:
    """``"an amounts"``, ``"a sketches"``: the name with its article, for messages."""
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


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
        raise UserInputError(f"{root}: is not {_a(what)} dataset made by hybridvision (its {MANIFEST} is not "
                             f"the generator's); regenerating would delete its files — {fix}")
    if not found:
        return
    first = found[0]
    why = ("was not written by the generator (added)" if first not in (sums or {})
           else f"changed since the dataset was generated (its SHA-256 differs from {MANIFEST})")
    more = f" and {len(found) - 1} more file(s)" if len(found) > 1 else ""
    raise UserInputError(f"{root}: {first} {why}{more}; it is yours and regenerating the {what} data would "
                         f"replace or delete it — {fix}")


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Record the SHA-256 of every file in ``folder`` in ``manifest["sha256"]`` (what is the
    generator's) and write the manifest there — last, since a folder with a manifest is complete."""
    folder = Path(folder)
    manifest["sha256"] = checksums(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


_MALFORMED = (KeyError, TypeError, ValueError, AttributeError)  # a manifest of another shape


@dataclass(frozen=True)
class GeneratedSet:
    """The manifest rule of one generated dataset, the same for every set.

    Attributes:
        name: the dataset's name in messages (``"amounts"``, ``"sketches"``, ``"bimodal"``).
        owns: whether a manifest (a JSON object) is this generator's: its ``name`` or ``format``.
        files: the relative paths that a generation described by a manifest wrote; it may raise
            ``KeyError`` / ``TypeError`` / ``ValueError`` / ``AttributeError`` on a malformed manifest.
        legacy: whether a folder without a manifest is still a generation of ours (an old
            version's, whose files are known by name); None: such a folder never is.
    """

    name: str
    owns: Callable[[dict[str, Any]], bool]
    files: Callable[[dict[str, Any]], Iterable[str]]
    legacy: Callable[[Path], bool] | None = None

    def read_manifest(self, root: str | os.PathLike) -> dict[str, Any] | None:
        """The manifest of a complete generation of this set at ``root``; None when it is absent,
        unreadable, not a JSON object or another generator's (= not ours, or incomplete)."""
        try:
            man = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        try:
            return man if isinstance(man, dict) and self.owns(man) else None
        except _MALFORMED:
            return None

    def listed(self, manifest: dict[str, Any] | None) -> list[str] | None:
        """The files (relative paths) the generation described by ``manifest`` wrote; None when
        there is no manifest or it does not list them the generator's way."""
        if manifest is None:
            return None
        try:
            return [str(f) for f in self.files(manifest)]
        except _MALFORMED:
            return None

    def is_ours(self, root: str | os.PathLike) -> bool:
        """``root`` is a generation of this set holding nothing of the user's (every file listed
        in its manifest and unedited: :func:`user_files`), so a regeneration may replace it."""
        root = Path(root)
        man = self.read_manifest(root)
        if man is None:
            return self.legacy is not None and self.legacy(root)
        listed = self.listed(man)
        return listed is not None and user_files(root, listed, man.get("sha256")) == []

    def check_replaceable(self, out: str | os.PathLike, fix: str) -> None:
        """Before a generation into ``out``: pass if it is absent, empty or :meth:`is_ours`; else
        raise one :class:`UserInputError` naming the folder (not ours) or the user's first file,
        and ``fix``. Nothing is touched."""
        out = Path(out)
        if not out.is_dir() or not any(out.iterdir()) or self.is_ours(out):
            return
        man = self.read_manifest(out)
        listed = self.listed(man)
        if man is None or listed is None:
            raise UserInputError(f"{out}: is not {_a(self.name)} dataset made by hybridvision; regenerating "
                                 f"would delete its files — {fix}")
        refuse_user_files(out, self.name, listed, man.get("sha256"), fix=fix)

    def reusable(self, root: str | os.PathLike, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The manifest at ``root`` when that generation can be used as it is: ``matches`` it (the
        settings asked for) and every file it wrote is still there; None: generate (again)."""
        root = Path(root)
        man = self.read_manifest(root)
        try:
            if man is None or not matches(man):
                return None
        except _MALFORMED:
            return None
        listed = self.listed(man)
        if listed is None or not all((root / rel).is_file() for rel in listed):
            return None
        return man
