"""Readers of the sketch datasets of thesis B (§3.3): QuickDraw files and TU-Berlin image folders.

- QuickDraw ndjson: one JSON object per line, its ``drawing`` the *simplified* strokes (Ha & Eck
  2017); Google's file prefixes ``full_simplified_`` / ``full_numpy_bitmap_`` / ``full_raw_`` are
  stripped from class names (:func:`class_name_from_file`).
- QuickDraw numpy bitmaps: uint8 ``[N, 784]`` (28×28, stored white-on-black, MNIST style),
  inverted on read (:func:`bitmap_to_image`) to the one polarity of raw sketches: **black strokes
  on white**, uint8 (0 = ink, 255 = paper), as :func:`~hybridvision.data.sketch_raster.rasterize_strokes`
  draws and as TU-Berlin's PNGs are.
- TU-Berlin (Eitz et al. 2012): ``DIR/<class name>/<n>.png`` (``DIR/png/…`` as unpacked is found
  too), listed by :func:`find_image_folder`; split lists are :mod:`hybridvision.data.sketch_splits`.

Every reader raises one-line :class:`~hybridvision.errors.DataError` naming the file (and line) and
the fix. The dataset built on these readers is :mod:`hybridvision.data.sketches`.

Symbols: N samples, P points.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybridvision.data.sketch_raster import strokes_to_arrays
from hybridvision.errors import DataError
from hybridvision.imageio import IMAGE_EXTENSIONS, load_gray_uint8

__all__ = [
    "IMAGE_EXTENSIONS",
    "parse_ndjson_line",
    "iter_ndjson",
    "read_ndjson",
    "read_npy_bitmaps",
    "bitmap_to_image",
    "class_name_from_file",
    "load_sketch_image",
    "find_image_folder",
]

_QUICKDRAW_PREFIXES = ("full_simplified_", "full_numpy_bitmap_", "full_raw_")
_BITMAP_SIDE = 28  # QuickDraw numpy bitmaps are 28×28, flattened to 784

# --------------------------------------------------------------------------------- QuickDraw
def parse_ndjson_line(line: str, *, path: str | os.PathLike = "<ndjson>", lineno: int = 0) -> dict[str, Any]:
    """Parse and validate one QuickDraw ndjson record; ``DataError`` names ``path:line`` and the fix.

    The record keeps its keys (``word``, ``countrycode``, ``timestamp``, ``recognized``,
    ``key_id``, ``drawing``); only ``drawing`` is required.
    """
    where = f"{path}: line {lineno}"
    fix = ("each line must be one JSON object with a \"drawing\" of strokes [[x0,x1,...],[y0,y1,...]]; "
           "fix or delete the line")
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); {fix}") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply; {fix}") from None
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}; {fix}")
    if "drawing" not in rec:
        raise DataError(f"{where}: no \"drawing\" key (keys: {', '.join(sorted(rec)) or 'none'}); {fix}")
    try:
        rec["_strokes"] = strokes_to_arrays(rec["drawing"], where="drawing")
    except ValueError as e:
        raise DataError(f"{where}: {e}; {fix}") from None
    return rec


def iter_ndjson(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number from 1, text)`` for the non-blank lines of an ndjson file (not parsed)."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8-sig") as f:  # a BOM from a Windows editor is not data
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield lineno, line
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror}); check the path and permissions") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text ({e.reason}); pass QuickDraw .ndjson files") from None


def read_ndjson(
    path: str | os.PathLike,
    *,
    max_items: int | None = None,
    seed: int = 0,
    recognized_only: bool = False,
) -> list[tuple[int, dict[str, Any]]]:
    """Read a QuickDraw ndjson file → ``[(line number, record)]`` in file order.

    With ``max_items``, a seeded random subset of that many records is parsed (a full QuickDraw
    class file holds 100k+ drawings; only the chosen lines are decoded). Each record gains a
    ``"_strokes"`` entry: a list of float32 ``[P, 2]`` arrays.
    """
    lines = list(iter_ndjson(path))
    order: Sequence[int] = range(len(lines))
    if max_items is not None and max_items < len(lines):
        order = np.random.default_rng([seed, zlib.crc32(Path(path).name.encode())]).permutation(len(lines))
    out: list[tuple[int, dict[str, Any]]] = []
    for i in order:
        if max_items is not None and len(out) >= max_items:
            break
        lineno, text = lines[i]
        rec = parse_ndjson_line(text, path=path, lineno=lineno)
        if recognized_only and rec.get("recognized") is False:
            continue
        out.append((lineno, rec))
    out.sort(key=lambda t: t[0])
    return out


def read_npy_bitmaps(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a QuickDraw numpy-bitmap file → uint8 ``[N, 784]`` (raw: white ink on black).

    ``[N, 28, 28]`` files are accepted and viewed as ``[N, 784]``. Use :func:`bitmap_to_image`
    for one sketch in this module's polarity.
    """
    p = Path(path)
    fix = "pass QuickDraw numpy bitmaps: a uint8 .npy array of shape [N, 784] (28×28 per drawing)"
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{p}: file not found; {fix}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: not a readable .npy array ({e}); {fix}") from None
    if arr.ndim == 3 and arr.shape[1:] == (_BITMAP_SIDE, _BITMAP_SIDE):
        arr = arr.reshape(len(arr), _BITMAP_SIDE * _BITMAP_SIDE)
    if arr.ndim != 2 or arr.shape[1] != _BITMAP_SIDE * _BITMAP_SIDE:
        raise DataError(f"{p}: shape {tuple(arr.shape)} is not [N, 784]; {fix}")
    if arr.dtype != np.uint8:
        raise DataError(f"{p}: dtype {arr.dtype} is not uint8; {fix}")
    return arr


def bitmap_to_image(row: np.ndarray) -> np.ndarray:
    """One QuickDraw bitmap row ``[784]`` (white on black) → uint8 ``[28, 28]`` black ink on white."""
    return 255 - np.asarray(row, dtype=np.uint8).reshape(_BITMAP_SIDE, _BITMAP_SIDE)


def class_name_from_file(path: str | os.PathLike) -> str:
    """``full_simplified_The Eiffel Tower.ndjson`` → ``The Eiffel Tower``."""
    stem = Path(path).stem
    for prefix in _QUICKDRAW_PREFIXES:
        if stem.startswith(prefix) and len(stem) > len(prefix):
            return stem[len(prefix):]
    return stem


# ------------------------------------------------------------------------------ image folders
def load_sketch_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a uint8 ``[H, W]`` grayscale sketch; transparency becomes white paper
    (:func:`hybridvision.imageio.load_gray_uint8`: one-line :class:`DataError`, no bombs)."""
    return load_gray_uint8(path)


def find_image_folder(root: str | os.PathLike) -> tuple[list[tuple[str, int]], list[str]]:
    """``root/<class name>/<image>`` → ``(samples [(path, label)], classes)``, classes sorted by name.

    TU-Berlin unpacks as ``png/<class>/<n>.png``; a ``root`` holding only ``png/`` is descended into.
    """
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"{r}: directory not found; pass tuberlin:DIR with DIR/<class name>/<n>.png")
    dirs = sorted(d for d in r.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(dirs) == 1 and dirs[0].name == "png" and not _has_images(dirs[0]):
        r, dirs = dirs[0], sorted(d for d in dirs[0].iterdir() if d.is_dir() and not d.name.startswith("."))
    if not dirs:
        raise DataError(f"{r}: no class folders; expected DIR/<class name>/<n>.png (one folder per class)")
    classes = [d.name for d in dirs]
    samples: list[tuple[str, int]] = []
    for label, d in enumerate(dirs):
        files = sorted((f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
                        and not f.name.startswith(".")), key=_natural_key)
        if not files:
            raise DataError(f"{d}: class folder has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            "add its sketches or delete the folder")
        samples.extend((str(f), label) for f in files)
    return samples, classes


def _has_images(d: Path) -> bool:
    return any(f.suffix.lower() in IMAGE_EXTENSIONS for f in d.iterdir())


def _natural_key(p: Path) -> tuple:
    # "2.png" before "10.png": TU-Berlin names files by number.
    stem = p.stem
    return (0, int(stem), p.name) if stem.isdigit() else (1, 0, p.name)

