"""Files in and out: the one atomic writer, the one JSON reader, and output-path safety.

Writing (every file the toolkit writes goes through :func:`atomic_path`):

- :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json` and
  :func:`atomic_save_tensors` (safetensors) write a temp file in the target's folder, fsync it,
  give it the permissions a plain ``open()`` would (``0o666 & ~umask``; ``mkstemp`` alone leaves
  0600) and ``os.replace`` it over the target, so a killed process leaves the old file or the new
  one, never half of one. A full disk, a read-only file system or a permission error becomes one
  :class:`~hybridvision.errors.UserInputError` line naming the path and the fix; the old file
  survives and no temp file is left behind.
- :func:`atomic_replace_dir` builds a whole folder (a generated dataset) in a hidden sibling and
  swaps it in, replacing only a folder this toolkit made.

Reading: :func:`read_json` reads user JSON (annotations, results, checkpoint sidecars) tolerating
a UTF-8 BOM, and turns a syntax error or absurd nesting into one line naming the file, line and
column.

Output safety: :func:`check_output_path` runs before any work starts and refuses an output that
is one of the command's inputs (or, for a folder, contains one or lies inside one), an existing
output file (unless the command's ``--exist-ok`` says to replace it: one rule for every command,
default paths included), a non-empty folder hybridvision did not create (recognised by the
:data:`OWNER_MARKER` file it writes in the folders it creates, or by holding only files it writes),
a folder path that is a file or the reverse, and a location that cannot be written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, TypeVar
from collections.abc import Callable, Iterable, Iterator

from hybridvision.errors import UserInputError

__all__ = [
    "OWNER_MARKER",
    "atomic_path",
    "atomic_replace_dir",
    "atomic_save_tensors",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_path",
    "file_mode",
    "make_output_dir",
    "read_json",
    "write_error",
]

T = TypeVar("T")

OWNER_MARKER = ".hybridvision"  # written into every output folder hybridvision creates

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NOT_ALLOWED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # portable fallback: read by setting, then restore at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~_umask()


def write_error(e: OSError, path: str | os.PathLike) -> UserInputError | None:
    """The one-line error for a failed write of ``path`` (disk full, not allowed), else None."""
    if e.errno in _DISK_FULL:
        where = _nearest_folder(Path(path))
        return UserInputError(f"{path}: no space left on the device while writing ({e.strerror}); "
                              f"free space on the disk holding {where} or write to another disk (--out)")
    if isinstance(e, PermissionError) or e.errno in _NOT_ALLOWED:
        where = "a read-only file system" if e.errno == errno.EROFS else "permission denied"
        return UserInputError(f"{path}: cannot write here ({where}); choose a writable location "
                              "with --out or fix the folder's permissions")
    if isinstance(e, (NotADirectoryError, FileExistsError)) or e.errno in (errno.ENOTDIR, errno.EEXIST):
        return UserInputError(f"{path}: a file stands where a folder is needed on this path; "
                              "choose another --out")
    if isinstance(e, IsADirectoryError):
        return UserInputError(f"{path}: is a folder, not a file; pass a file path")
    return None


def _nearest_folder(path: Path) -> Path:
    """The nearest existing folder at or above ``path``'s folder (where the disk is to be freed)."""
    folder = Path(os.path.abspath(path)).parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def _os_error_of(e: Exception) -> OSError | None:
    """The :class:`OSError` inside a safetensors error: its Rust writer reports an I/O failure
    as ``SafetensorError("... (os error 28)")`` rather than raising ``OSError``."""
    match = re.search(r"os error (\d+)", str(e))
    if match is None:
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code))


@contextlib.contextmanager
def _translated(path: str | os.PathLike) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        err = write_error(e, path)
        if err is None:
            raise
        raise err from e


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block succeeds, fsync it, give it the umask's
    mode and rename it over ``path``. On any error the temp file is removed and ``path`` is left
    as it was; disk-full and permission errors become one-line :class:`UserInputError`\\ s.
    """
    path = Path(path)
    with _translated(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _translated(path):
            yield tmp
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.fchmod(fd, file_mode())
            finally:
                os.close(fd)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: not every file system lets a folder be fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``obj`` as JSON (UTF-8, no BOM) to ``path`` atomically; returns the path."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=default))


def atomic_save_tensors(path: str | os.PathLike, tensors: dict[str, Any],
                        metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically (independent contiguous CPU copies of the tensors:
    safetensors refuses shared or strided storage); returns the path."""
    from safetensors.torch import save_file

    from safetensors import SafetensorError

    path = Path(path)
    plain = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(plain, str(tmp), metadata=metadata)
        except SafetensorError as e:  # a full disk, as safetensors reports it: the one-line error
            os_error = _os_error_of(e)
            if os_error is None:
                raise
            raise os_error from e
    return path


# ------------------------------------------------------------------------------------ reading
def read_json(path: str | os.PathLike, *, what: str = "JSON") -> Any:
    """Read a user's JSON file (a UTF-8 BOM is accepted); one-line :class:`UserInputError` when
    it is missing, a folder, not UTF-8, not JSON (with line and column) or nested too deeply."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
        return json.loads(text)
    except FileNotFoundError:
        raise UserInputError(f"{p}: {what} file not found; check the path") from None
    except IsADirectoryError:
        raise UserInputError(f"{p}: is a folder, expected a {what} file") from None
    except UnicodeDecodeError as e:
        raise UserInputError(f"{p}: {what} file is not UTF-8 text (byte {e.start}); save it as "
                             "UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise UserInputError(f"{p}: {what} file is not valid JSON at line {e.lineno} column "
                             f"{e.colno} ({e.msg}); fix or re-export the file") from None
    except RecursionError:
        raise UserInputError(f"{p}: {what} file is nested too deeply to read (thousands of levels of "
                             "[ or {); re-export the file") from None
    except OSError as e:
        raise UserInputError(f"{p}: cannot read the {what} file ({e.strerror}); check its "
                             "permissions") from None


# ------------------------------------------------------------------------------- output paths
def _resolve(p: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(p)))).resolve()


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and child.is_relative_to(parent)


def _folder_is_ours(folder: Path, owner_marker: str | Callable[[Path], bool] | None,
                    known_files: Iterable[str]) -> bool:
    if callable(owner_marker):
        if owner_marker(folder):
            return True
    elif owner_marker and (folder / owner_marker).is_file():
        return True
    known = set(known_files)
    if not known:
        return False
    return all(e.name in known or e.name.startswith(".") and e.name.endswith(".tmp")
               for e in folder.iterdir())


def check_output_path(
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    kind: str = "file",
    exist_ok: bool = False,
    owner_marker: str | Callable[[Path], bool] | None = OWNER_MARKER,
    known_files: Iterable[str] = (),
    option: str = "--out",
    default: bool = False,
) -> Path:
    """Refuse, before any work starts, an output that would lose a user's file.

    Args:
        path: the output file or folder.
        inputs: the command's input files and folders.
        kind: ``"file"`` or ``"dir"``.
        exist_ok: the command's ``--exist-ok``. A file: ``False`` refuses an existing file,
            ``True`` lets the command replace it. A folder: ``True`` allows a non-empty folder
            that hybridvision did not create.
        owner_marker: the file that marks a folder as ours (default :data:`OWNER_MARKER`), or a
            predicate on the folder.
        known_files: names of the files this command writes; a folder holding only these is
            ours too (a run's ``eval/`` written before the marker existed).
        option: the option name used in messages.
        default: ``path`` is the command's default, not one the user named with ``option``;
            messages say so (``runs/export/m.onnx (the default --out): …``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        UserInputError: one line naming the path, the clash and the fix.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    out = Path(path)
    head = f"{out} (the default {option})" if default else f"{option} {out}"  # how every message starts
    target = _resolve(out)
    sources = [(raw, _resolve(raw)) for raw in inputs if raw is not None]
    for raw, src in sources:  # the worst clash first: the output is an input
        if _same(target, src):
            raise UserInputError(f"{head}: is also an input of this command ({raw}); writing "
                                 "it would destroy the input — choose another output path")
    for raw, src in sources:
        if kind == "dir" and _inside(src, target):
            raise UserInputError(f"{head}: contains the input {raw}; outputs would mix with "
                                 "(or overwrite) the inputs — choose a separate output folder")
        if _inside(target, src) and src.is_dir():
            raise UserInputError(f"{head}: lies inside the input folder {raw}; choose an "
                                 "output outside the inputs")
    if out.exists() or out.is_symlink():
        if kind == "file" and out.is_dir():
            raise UserInputError(f"{head}: is a folder; pass a file path")
        if kind == "dir" and not out.is_dir():
            raise UserInputError(f"{head}: is a file, not a folder; pass a folder path")
        if kind == "file" and not exist_ok:
            raise UserInputError(f"{head}: the file exists; pass --exist-ok to replace it, or "
                                 f"choose another {option}")
        if kind == "dir" and not exist_ok and any(out.iterdir()) and not _folder_is_ours(
                out, owner_marker, known_files):
            raise UserInputError(f"{head}: a non-empty folder that hybridvision did not "
                                 "create; choose a new or empty folder (its files would be mixed "
                                 "with or replaced by the outputs)")
        where = out if kind == "dir" else out.parent
    else:
        where = out.parent
    # The nearest existing folder above decides whether the output can be created.
    probe = _resolve(where)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserInputError(f"{head}: {probe} is a file, so no folder can be made there; "
                             "choose another output path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserInputError(f"{head}: cannot write in {probe} (permission denied or "
                             "read-only); choose a writable location")
    return out


def files_not_in(root: str | os.PathLike, expected: set[str]) -> list[str]:
    """Sorted paths (relative, ``/``-separated) of the files under ``root`` not in ``expected``:
    what a user added to a folder a generator wrote."""
    root = Path(root)
    found = []
    for dirpath, _, names in os.walk(root):
        for f in names:
            rel = Path(dirpath, f).relative_to(root).as_posix()
            if rel not in expected:
                found.append(rel)
    return sorted(found)


def make_output_dir(path: str | os.PathLike, *, owner_marker: str = OWNER_MARKER) -> Path:
    """Create the output folder ``path`` (and its parents) and mark it as ours; returns it.

    Call :func:`check_output_path` first: this only creates and marks.
    """
    path = Path(path)
    with _translated(path):
        path.mkdir(parents=True, exist_ok=True)
    marker = path / owner_marker
    if not marker.exists():
        atomic_write_text(marker, "created by hybridvision; outputs in this folder may be replaced\n")
    return path


def atomic_replace_dir(
    out: str | os.PathLike,
    fill: Callable[[Path], T],
    *,
    is_ours: Callable[[Path], bool],
    option: str = "--out",
) -> T:
    """Build a folder with ``fill(tmp)`` in a hidden temp sibling, then swap it in at ``out``.

    ``out`` must be absent, an empty folder, or a folder ``is_ours`` recognises (one this
    toolkit generated and nobody added files to); anything else raises :class:`UserInputError`
    before work starts and is never touched. A killed run leaves the old folder (or none), never
    half of the new one; the new folders get the umask's permissions (``mkdtemp`` makes 0700).
    If another process put a folder of ours at ``out`` meanwhile, theirs is kept.

    Returns:
        What ``fill`` returned.
    """
    out = Path(out)
    check_output_path(out, kind="dir", owner_marker=is_ours, option=option)
    with _translated(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        with _translated(out):
            os.chmod(tmp, 0o777 & ~_umask())
            result = fill(tmp)
            if out.exists():
                if not (out.is_dir() and (not any(out.iterdir()) or is_ours(out))):
                    raise UserInputError(f"{option} {out}: changed while the data was generated and "
                                         "is no longer a folder hybridvision made; left as it is")
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.replace(out, old / "d")
                try:
                    os.replace(tmp, out)
                except OSError:
                    os.replace(old / "d", out)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                try:
                    os.replace(tmp, out)
                except OSError:
                    if not (out.is_dir() and is_ours(out)):  # a concurrent run's complete copy
                        raise
                    shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result
