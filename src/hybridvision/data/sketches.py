"""Sketch classification data: QuickDraw (ndjson strokes, numpy bitmaps), TU-Berlin, split lists.

Readers for the sketch datasets of thesis B (seed ``001_…``, §3.3) and one torch ``Dataset``,
:class:`SketchClassification`, built from a data spec by :func:`build_sketch_dataset`:

- ``quickdraw:DIR`` — ``DIR/<class>.ndjson`` (QuickDraw *simplified* strokes, Ha & Eck 2017) or
  ``DIR/<class>.npy`` (QuickDraw numpy bitmaps ``[N, 784]``). Google's file prefixes
  ``full_simplified_`` / ``full_numpy_bitmap_`` / ``full_raw_`` are stripped from class names.
  ``per_class`` caps each class (a seeded random subset); train/val is a seeded, per-class
  (stratified) ``1 - val_fraction`` / ``val_fraction`` split, 80/20 by default.
- ``tuberlin:DIR`` — ``DIR/<class name>/<n>.png`` (Eitz et al. 2012; ``DIR/png/…`` as unpacked
  is found too), split 80/20 by seed, or by split lists when ``DIR/train.txt`` exists.
- ``builtin:sketches`` — procedurally drawn QuickDraw ndjson (:mod:`hybridvision.data.builtin.sketches`),
  generated into ``<root>/sketches`` when absent, then read by the QuickDraw reader.

Conventions (one polarity everywhere on disk and in raw samples):

- **Raw sketches are black strokes on white**, uint8 (0 = ink, 255 = paper), as TU-Berlin's PNGs
  and as people see sketches. :func:`rasterize_strokes` draws this way, and QuickDraw numpy bitmaps
  (stored white-on-black, MNIST style) are inverted on read to match. The *model input* convention
  (strokes high, MNIST style) is applied by the transforms in
  :mod:`hybridvision.data.classification_transforms`, which invert before normalising.
- QuickDraw simplified coordinates live on a 256×256 canvas (integers 0–255, x right, y down);
  the rasteriser maps canvas cell ``c`` to output ``padding + (c + 0.5) · (size − 2·padding) / 256``.

Split-list format (TU-Berlin or any image folder): ``DIR/{train,val,test}.txt``, one sample per
line, ``path<TAB>label`` (a space also separates when the line has no tab); ``path`` is relative
to ``DIR`` (or absolute) and ``label`` is an integer index into the class map or a class name.
The class map ``DIR/classes.txt`` is either ``label<TAB>class name`` lines or one class name per
line (line order = label). Blank lines and lines starting with ``#`` are ignored in both.

Symbols: N samples, K classes, P points, S strokes, H×W image.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset
from torchvision import tv_tensors

from hybridvision.data.builtin.sketches import DEFAULT_PER_CLASS, ensure_sketches
from hybridvision.errors import DataError, UserInputError
from hybridvision.imageio import IMAGE_EXTENSIONS, load_gray_uint8
from hybridvision.options import Fraction, NonNegativeInt, PositiveFloat, PositiveInt

__all__ = [
    "QUICKDRAW_CANVAS",
    "IMAGE_EXTENSIONS",
    "rasterize_strokes",
    "parse_ndjson_line",
    "iter_ndjson",
    "read_ndjson",
    "read_npy_bitmaps",
    "bitmap_to_image",
    "load_sketch_image",
    "read_class_map",
    "read_split_list",
    "find_image_folder",
    "class_name_from_file",
    "split_indices",
    "SketchClassification",
    "quickdraw_dataset",
    "tuberlin_dataset",
    "build_sketch_dataset",
]

QUICKDRAW_CANVAS = 256  # simplified strokes are integers in [0, 255] on a 256×256 canvas
_QUICKDRAW_PREFIXES = ("full_simplified_", "full_numpy_bitmap_", "full_raw_")
_BITMAP_SIDE = 28  # QuickDraw numpy bitmaps are 28×28, flattened to 784


# ------------------------------------------------------------------------------- rasterising
def _default_line_width(size: int) -> float:
    # ≈ 3 px at 256 px: close to how QuickDraw's own 28×28 bitmaps look after upscaling.
    return max(1.0, 3.0 * size / QUICKDRAW_CANVAS)


def _rasterize_polylines(
    strokes: Sequence[np.ndarray],
    size: int,
    line_width: float | None,
    padding: int | None,
    supersample: int,
    center: bool,
) -> np.ndarray:
    """Polylines ``[P_s, 2]`` in canvas units → uint8 ``[size, size]``, black ink on white."""
    if size < 1:
        raise UserInputError(f"rasterize size {size}: use a positive image size")
    lw = _default_line_width(size) if line_width is None else float(line_width)
    if lw <= 0:
        raise UserInputError(f"line_width {line_width}: use a positive width in output pixels")
    pad = round(size / 32) if padding is None else int(padding)
    if not 0 <= 2 * pad < size:
        raise UserInputError(f"padding {padding}: use 0 <= padding < size/2 (size {size})")
    k = max(1, int(supersample))
    big = size * k
    scale = (size - 2 * pad) * k / QUICKDRAW_CANVAS  # canvas unit → supersampled pixels
    shift = np.zeros(2, dtype=np.float64)
    if center and len(strokes):
        # Centre the drawing's bounding box on the canvas (QuickDraw aligns it top-left).
        pts = np.concatenate([np.asarray(s, dtype=np.float64) for s in strokes])  # [P, 2]
        lo, hi = pts.min(0), pts.max(0)
        shift = (QUICKDRAW_CANVAS - 1 - (hi - lo)) / 2 - lo
    offset = pad * k + 0.5 * scale  # cell centres: canvas integer c sits at the centre of its cell

    img = Image.new("L", (big, big), 255)
    draw = ImageDraw.Draw(img)
    w = max(1, round(lw * k))
    r = w / 2
    for s in strokes:
        xy = (np.asarray(s, dtype=np.float64) + shift) * scale + offset  # [P, 2] pixels
        if len(xy) == 0:
            continue
        if len(xy) > 1:
            draw.line(xy.ravel().tolist(), fill=0, width=w)
        if w > 2 or len(xy) == 1:
            # Round caps and joins (PIL lines end square): stamp a disc at every vertex.
            for x, y in xy.tolist():
                draw.ellipse((x - r, y - r, x + r, y + r), fill=0)
    if k > 1:
        img = img.reduce(k)  # box filter: the supersampled coverage becomes anti-aliased grey
    return np.array(img, dtype=np.uint8)  # a writable copy (torch.from_numpy wants one)


def _strokes_to_arrays(drawing: Sequence, where: str = "drawing") -> list[np.ndarray]:
    """QuickDraw ``[[xs], [ys](, [ts])]`` strokes → float32 ``[P, 2]`` arrays, validated."""
    if not isinstance(drawing, (list, tuple)) or len(drawing) == 0:
        raise ValueError(f"{where} must be a non-empty list of strokes [[x0,x1,...],[y0,y1,...]]")
    out = []
    for j, stroke in enumerate(drawing):
        if not isinstance(stroke, (list, tuple)) or len(stroke) not in (2, 3):
            raise ValueError(f"{where} stroke {j} must be [[xs],[ys]] (or [[xs],[ys],[ts]] for raw data)")
        xs, ys = stroke[0], stroke[1]
        if not isinstance(xs, (list, tuple)) or not isinstance(ys, (list, tuple)):
            raise ValueError(f"{where} stroke {j}: xs and ys must be lists of numbers")
        if len(xs) != len(ys) or len(xs) == 0:
            raise ValueError(f"{where} stroke {j}: xs and ys must be non-empty and of equal length "
                             f"(got {len(xs)} and {len(ys)})")
        try:
            pts = np.array([xs, ys], dtype=np.float32).T  # [P, 2]
        except (TypeError, ValueError):
            raise ValueError(f"{where} stroke {j}: coordinates must be numbers") from None
        if not np.isfinite(pts).all():
            raise ValueError(f"{where} stroke {j}: coordinates must be finite numbers")
        out.append(pts)
    return out


def rasterize_strokes(
    drawing: Sequence,
    size: int = 224,
    line_width: float | None = None,
    padding: int | None = None,
    *,
    supersample: int = 2,
    center: bool = False,
) -> np.ndarray:
    """Draw QuickDraw simplified strokes as a ``size × size`` sketch, black ink on white paper.

    The 256×256 QuickDraw canvas (Ha & Eck, "A Neural Representation of Sketch Drawings",
    ICLR 2018) is scaled into the output inside ``padding`` pixels; strokes are polylines with
    round joins and caps, drawn ``supersample`` × larger and box-filtered down (anti-aliasing).

    Args:
        drawing: list of strokes ``[[x0, x1, …], [y0, y1, …]]`` (a third list of times, as in
            the raw format, is ignored), coordinates in 0–255.
        size: output side in pixels.
        line_width: stroke width in output pixels; default ``3 · size / 256`` (at least 1).
        padding: blank margin in output pixels; default ``round(size / 32)``.
        supersample: drawing scale for anti-aliasing (1 = aliased, hard 0/255 pixels).
        center: centre the drawing's bounding box on the canvas (QuickDraw aligns it top-left).

    Returns:
        uint8 ``[size, size]``: 255 = paper (white), 0 = ink (black).
    """
    try:
        strokes = _strokes_to_arrays(drawing)
    except ValueError as e:
        raise UserInputError(f"rasterize_strokes: {e}") from None
    return _rasterize_polylines(strokes, size, line_width, padding, supersample, center)


# --------------------------------------------------------------------------------- QuickDraw
def parse_ndjson_line(line: str, *, path: str | os.PathLike = "<ndjson>", lineno: int = 0) -> dict[str, Any]:
    """Parse and validate one QuickDraw ndjson record; ``DataError`` names ``path:line`` and the fix.

    The record keeps its keys (``word``, ``countrycode``, ``timestamp``, ``recognized``,
    ``key_id``, ``drawing``); only ``drawing`` is required.
    """
    where = f"{path}: line {lineno}"
    fix = "each line must be one JSON object with a \"drawing\" of strokes [[x0,x1,...],[y0,y1,...]]; fix or delete the line"
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
        rec["_strokes"] = _strokes_to_arrays(rec["drawing"], where="drawing")
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


# --------------------------------------------------------------------------------- splitting
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


# ------------------------------------------------------------------------------------ dataset
@dataclass
class _StrokeStore:
    """Many drawings in three flat arrays (cheap to pickle to DataLoader workers).

    ``points [P, 2]`` float32; drawing d owns strokes ``drawing_ptr[d]:drawing_ptr[d+1]``, and
    stroke s owns points ``stroke_ptr[s]:stroke_ptr[s+1]``.
    """

    points: np.ndarray
    stroke_ptr: np.ndarray
    drawing_ptr: np.ndarray

    @classmethod
    def from_drawings(cls, drawings: Sequence[Sequence[np.ndarray]]) -> "_StrokeStore":
        strokes = [s for d in drawings for s in d]
        lengths = np.fromiter((len(s) for s in strokes), dtype=np.int64, count=len(strokes))
        counts = np.fromiter((len(d) for d in drawings), dtype=np.int64, count=len(drawings))
        points = np.concatenate(strokes).astype(np.float32) if strokes else np.zeros((0, 2), np.float32)
        return cls(points, np.concatenate([[0], np.cumsum(lengths)]), np.concatenate([[0], np.cumsum(counts)]))

    def strokes(self, d: int) -> list[np.ndarray]:
        s0, s1 = self.drawing_ptr[d], self.drawing_ptr[d + 1]
        bounds = self.stroke_ptr[s0 : s1 + 1]
        return [self.points[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


class SketchClassification(Dataset):
    """Sketches with class labels: ``dataset[i] -> (image float32 [C, H, W], label int)``.

    Raw images are uint8 black-ink-on-white ``[1, H, W]`` (a ``tv_tensors.Image``) handed to
    ``transform``; without a transform the sample is that image as float32 in [0, 1].
    Build one with :func:`build_sketch_dataset` (or :func:`quickdraw_dataset`,
    :func:`tuberlin_dataset`).

    Attributes:
        classes: class names; ``label`` indexes this list.
        targets: the label of every sample (no image is read).
        kind: ``"strokes"``, ``"bitmaps"`` or ``"images"``.
    """

    def __init__(
        self,
        classes: Sequence[str],
        targets: Sequence[int],
        locators: Sequence[str],
        *,
        images: Sequence[str] | None = None,
        strokes: _StrokeStore | None = None,
        bitmaps: tuple[list[str], np.ndarray] | None = None,
        transform: Callable | None = None,
        raster_size: int = 256,
        line_width: float | None = None,
        padding: int | None = None,
        supersample: int = 2,
    ):
        given = [x is not None for x in (images, strokes, bitmaps)]
        if sum(given) != 1:
            raise ValueError("SketchClassification needs exactly one of images, strokes, bitmaps")
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [int(t) for t in targets]
        self._locators = list(locators)
        self._images = list(images) if images is not None else None
        self._strokes = strokes
        self._bitmaps = bitmaps  # (.npy paths, [N, 2] int64 (file, row)); memory-mapped on first use
        self._mmaps: dict[int, np.ndarray] = {}
        self.kind = "images" if images is not None else "strokes" if strokes is not None else "bitmaps"
        self.transform = transform
        self.raster = dict(size=raster_size, line_width=line_width, padding=padding, supersample=supersample)
        if len(self.targets) != len(self._locators):
            raise ValueError("targets and locators must have one entry per sample")

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(locator, label)`` per sample: an image path, ``file.ndjson:LINE`` or ``file.npy[ROW]``."""
        return list(zip(self._locators, self.targets))

    def locate(self, index: int) -> str:
        """Where sample ``index`` comes from (image path, ``file.ndjson:LINE`` or ``file.npy[ROW]``)."""
        return self._locators[index]

    def load_raw(self, index: int) -> np.ndarray:
        """Sample ``index`` as uint8 ``[H, W]``, black ink (0) on white (255); no transform."""
        if self._images is not None:
            return load_sketch_image(self._images[index])
        if self._strokes is not None:
            r = self.raster
            return _rasterize_polylines(self._strokes.strokes(index), r["size"], r["line_width"],
                                        r["padding"], r["supersample"], False)
        paths, ref = self._bitmaps  # type: ignore[misc]
        f, row = (int(v) for v in ref[index])
        if f not in self._mmaps:  # opened lazily, per process: workers never receive the arrays
            self._mmaps[f] = read_npy_bitmaps(paths[f])
        return bitmap_to_image(self._mmaps[f][row])

    def __getstate__(self) -> dict[str, Any]:
        # Pickling for DataLoader workers: drop open memory maps (np.memmap pickles its whole file).
        return {**self.__dict__, "_mmaps": {}}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = tv_tensors.Image(torch.from_numpy(self.load_raw(index))[None])  # [1, H, W] uint8
        if self.transform is None:
            out = img.as_subclass(torch.Tensor).float().div_(255.0)  # [1, H, W] in [0, 1]
        else:
            out = self.transform(img)
            if isinstance(out, torch.Tensor):
                out = out.as_subclass(torch.Tensor)
        return out, self.targets[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind}, samples={len(self)}, classes={len(self.classes)})"


def _check_split(split: str) -> None:
    if split not in ("train", "val", "test", "all"):
        raise UserInputError(f"split {split!r}: use train, val, test or all")


def _select_classes(found: dict[str, Any], wanted: Sequence[str] | None, where: Path, what: str) -> list[str]:
    if wanted is None:
        return sorted(found)
    missing = [c for c in wanted if c not in found]
    if missing:
        raise DataError(f"{where}: class(es) {', '.join(map(repr, missing[:5]))} not found (no {what}); "
                        f"choose from the {len(found)} classes present or add the files")
    return list(wanted)


def quickdraw_dataset(
    root: str | os.PathLike,
    split: str = "train",
    transform: Callable | None = None,
    *,
    per_class: PositiveInt | None = None,
    val_fraction: Fraction = 0.2,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    fmt: Literal["auto", "ndjson", "npy"] = "auto",
    recognized_only: bool = False,
    raster_size: PositiveInt = 256,
    line_width: PositiveFloat | None = None,
    padding: NonNegativeInt | None = None,
    supersample: PositiveInt = 2,
) -> SketchClassification:
    """QuickDraw folder (``<class>.ndjson`` simplified strokes or ``<class>.npy`` bitmaps) → dataset.

    Args:
        root: folder with one file per class.
        split: ``train`` / ``val`` (seeded per-class split) or ``all``.
        per_class: keep at most this many drawings per class (a seeded random subset).
        val_fraction: fraction of each class in ``val``.
        seed: drives the per-class subset and the split.
        classes: use these classes, in this order (default: all, sorted by name).
        fmt: ``auto`` (ndjson if any ``.ndjson`` file exists, else npy), ``ndjson`` or ``npy``.
        recognized_only: drop ndjson drawings with ``"recognized": false``.
        raster_size, line_width, padding, supersample: rasteriser options for ndjson strokes.
    """
    _check_split(split)
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"{r}: directory not found; pass quickdraw:DIR with DIR/<class>.ndjson or DIR/<class>.npy files")
    if split == "test":
        raise UserInputError("quickdraw data has train/val splits only; use split='val' (or 'all')")
    files = {ext: sorted(f for f in r.iterdir() if f.suffix == ext and f.is_file()) for ext in (".ndjson", ".npy")}
    if fmt == "auto":
        fmt = "ndjson" if files[".ndjson"] else "npy"
    if fmt not in ("ndjson", "npy"):
        raise UserInputError(f"fmt {fmt!r}: use auto, ndjson or npy")
    found = {class_name_from_file(f): f for f in files["." + fmt]}
    if not found:
        raise DataError(f"{r}: no .ndjson or .npy files; put one QuickDraw file per class in it "
                        "(e.g. cat.ndjson from quickdraw_dataset/full/simplified)")
    names = _select_classes(found, classes, r, f".{fmt} file")
    locators: list[str] = []
    targets: list[int] = []
    if fmt == "ndjson":
        drawings: list[list[np.ndarray]] = []
        for label, name in enumerate(names):
            path = found[name]
            recs = read_ndjson(path, max_items=per_class, seed=seed, recognized_only=recognized_only)
            if not recs:
                raise DataError(f"{path}: no drawings{' marked recognized' if recognized_only else ''}; "
                                "add drawings to the class file or remove it")
            keep = split_indices(len(recs), split, key=name, seed=seed, val_fraction=val_fraction)
            for i in keep.tolist():
                lineno, rec = recs[i]
                drawings.append(rec["_strokes"])
                locators.append(f"{path}:{lineno}")
                targets.append(label)
        store = _StrokeStore.from_drawings(drawings)
        ds = SketchClassification(names, targets, locators, strokes=store, transform=transform,
                                  raster_size=raster_size, line_width=line_width, padding=padding,
                                  supersample=supersample)
    else:
        arrays, refs = [], []
        for label, name in enumerate(names):
            path = found[name]
            arr = read_npy_bitmaps(path)
            if len(arr) == 0:
                raise DataError(f"{path}: no bitmaps (shape {tuple(arr.shape)}); add drawings or remove the file")
            rows = np.arange(len(arr))
            if per_class is not None and per_class < len(arr):
                rng = np.random.default_rng([seed, zlib.crc32(path.name.encode())])
                rows = np.sort(rng.choice(len(arr), per_class, replace=False))
            rows = rows[split_indices(len(rows), split, key=name, seed=seed, val_fraction=val_fraction)]
            f = len(arrays)
            arrays.append(str(path))
            refs.extend((f, int(row)) for row in rows)
            locators.extend(f"{path}[{int(row)}]" for row in rows)
            targets.extend([label] * len(rows))
        ref = np.asarray(refs, dtype=np.int64).reshape(-1, 2)  # [N, 2] (file, row)
        ds = SketchClassification(names, targets, locators, bitmaps=(arrays, ref), transform=transform)
    if len(ds) == 0:
        raise DataError(f"{r}: split {split!r} is empty (val_fraction={val_fraction}, per_class={per_class}); "
                        "use more drawings per class or a val_fraction in (0, 1)")
    return ds


def tuberlin_dataset(
    root: str | os.PathLike,
    split: str = "train",
    transform: Callable | None = None,
    *,
    val_fraction: Fraction = 0.2,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    per_class: PositiveInt | None = None,
) -> SketchClassification:
    """TU-Berlin (Eitz, Hays & Alexa, "How Do Humans Sketch Objects?", SIGGRAPH 2012) → dataset.

    ``root/<class name>/<n>.png``, split per class 80/20 by ``seed`` (thesis B), unless split lists
    exist: then ``root/{split}.txt`` with ``root/classes.txt`` decide (see the module docstring).
    ``per_class`` caps each class (first files by number) before the seeded split.
    """
    _check_split(split)
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"{r}: directory not found; pass tuberlin:DIR with DIR/<class name>/<n>.png")
    if (r / "train.txt").is_file():
        cmap = r / "classes.txt"
        names = read_class_map(cmap) if cmap.is_file() else None
        lists = [r / f"{s}.txt" for s in (("train", "val", "test") if split == "all" else (split,))]
        if split != "all" and not lists[0].is_file():
            raise DataError(f"{lists[0]}: split list not found (train.txt exists); write {split}.txt "
                            "with 'path<TAB>label' lines or remove train.txt to split by seed")
        if names is None:
            # Name labels only: the classes are the names used in all the lists (so every split
            # gets the same label numbering), sorted.
            every = [r / f"{s}.txt" for s in ("train", "val", "test")]
            names = sorted({c for lst in every if lst.is_file() for c in read_split_list(lst, None, root=r)[1]})
        samples = [s for lst in lists if lst.is_file() for s in read_split_list(lst, names, root=r)[0]]
        if classes is not None:
            keep = _select_classes({c: None for c in names}, classes, r / "classes.txt", "samples")
            remap = {names.index(c): i for i, c in enumerate(keep)}
            samples = [(p, remap[y]) for p, y in samples if y in remap]
            names = list(keep)
    else:
        all_samples, found = find_image_folder(r)
        names = _select_classes({c: None for c in found}, classes, r, "folder")
        by_class: dict[str, list[str]] = {c: [] for c in found}
        for p, y in all_samples:
            by_class[found[y]].append(p)
        samples = []
        for label, name in enumerate(names):
            paths = by_class[name][:per_class] if per_class is not None else by_class[name]
            keep_idx = split_indices(len(paths), split, key=name, seed=seed, val_fraction=val_fraction)
            samples.extend((paths[i], label) for i in keep_idx.tolist())
    if not samples:
        raise DataError(f"{r}: split {split!r} is empty; add sketches or use a val_fraction in (0, 1)")
    return SketchClassification(names, [y for _, y in samples], [p for p, _ in samples],
                                images=[p for p, _ in samples], transform=transform)


def build_sketch_dataset(
    spec: str,
    split: str = "train",
    transform: Callable | None = None,
    *,
    root: str | os.PathLike = "data",
    seed: int = 0,
    per_class: PositiveInt | None = None,
    val_fraction: Fraction = 0.2,
    classes: Sequence[str] | None = None,
    **kwargs: Any,
) -> SketchClassification:
    """Data spec → :class:`SketchClassification`.

    Args:
        spec: ``"quickdraw:DIR"``, ``"tuberlin:DIR"`` or ``"builtin:sketches"``.
        split: ``train``, ``val``, ``all`` (and ``test`` for split lists).
        transform: e.g. :func:`hybridvision.data.classification_transforms.build_classification_transforms`.
        root: where built-in data is generated (``root/sketches``).
        seed: split (and subset) seed.
        per_class: cap per class; for ``builtin:sketches`` also how many drawings are generated
            (default 200).
        val_fraction: fraction of each class held out as ``val``.
        classes: restrict to / order by these class names.
        **kwargs: passed to :func:`quickdraw_dataset` / :func:`tuberlin_dataset`
            (``fmt``, ``recognized_only``, ``raster_size``, ``line_width``, …); for the builtin,
            ``builtin_seed`` (default 0) picks the generated drawings.
    """
    kind, sep, rest = spec.partition(":")
    common = dict(seed=seed, per_class=per_class, val_fraction=val_fraction, classes=classes)
    if sep and kind in ("quickdraw", "tuberlin") and rest:
        _check_options(spec, kwargs, _QUICKDRAW_OPTIONS if kind == "quickdraw" else ())
        fn = quickdraw_dataset if kind == "quickdraw" else tuberlin_dataset
        return fn(Path(rest).expanduser(), split, transform, **common, **kwargs)
    if sep and kind == "builtin" and rest == "sketches":
        builtin_seed = int(kwargs.pop("builtin_seed", 0))
        _check_options(spec, kwargs, tuple(o for o in _QUICKDRAW_OPTIONS if o != "fmt"))
        n = per_class if per_class is not None else DEFAULT_PER_CLASS
        out = Path(root) / "sketches"
        ensure_sketches(out, per_class=n, seed=builtin_seed)
        return quickdraw_dataset(out, split, transform, **common, fmt="ndjson", **kwargs)
    raise UserInputError(f"--data {spec}: unknown sketch data spec; use builtin:sketches, quickdraw:DIR or tuberlin:DIR")


_QUICKDRAW_OPTIONS = ("fmt", "recognized_only", "raster_size", "line_width", "padding", "supersample")


def _check_options(spec: str, kwargs: dict[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        valid = ["per_class", "val_fraction", "classes", *allowed] + (["builtin_seed"] if spec.startswith("builtin") else [])
        raise UserInputError(f"--data {spec}: unknown data option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
