"""Sketch classification data: the :class:`SketchClassification` dataset and the data specs that build it.

One torch ``Dataset`` for the sketch datasets of thesis B (§3.3), built from a data spec by
:func:`build_sketch_dataset`:

- ``quickdraw:DIR`` — ``DIR/<class>.ndjson`` (QuickDraw *simplified* strokes, Ha & Eck 2017) or
  ``DIR/<class>.npy`` (QuickDraw numpy bitmaps ``[N, 784]``). Google's file prefixes
  ``full_simplified_`` / ``full_numpy_bitmap_`` / ``full_raw_`` are stripped from class names.
  ``per_class`` caps each class (a seeded random subset); train/val is a seeded, per-class
  (stratified) ``1 - val_fraction`` / ``val_fraction`` split, 80/20 by default.
- ``tuberlin:DIR`` — ``DIR/<class name>/<n>.png`` (Eitz et al. 2012; ``DIR/png/…`` as unpacked
  is found too), split 80/20 by seed, or by split lists when ``DIR/train.txt`` exists.
- ``builtin:sketches`` — procedurally drawn QuickDraw ndjson (:mod:`hybridvision.data.builtin.sketches`),
  generated into ``<root>/sketches`` when absent, then read by the QuickDraw reader.

The pieces it is built from live apart, one concern each: the stroke rasteriser
(:mod:`hybridvision.data.sketch_raster`), the QuickDraw and image-folder readers
(:mod:`hybridvision.data.sketch_readers`) and the split lists and seeded split
(:mod:`hybridvision.data.sketch_splits`, where the split-list format is described).

Raw samples are black strokes on white, uint8 (0 = ink, 255 = paper); the transforms of
:mod:`hybridvision.data.classification_transforms` invert them for the model.

Symbols: N samples, K classes, P points, S strokes, H×W image.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from hybridvision.data.builtin.sketches import DEFAULT_PER_CLASS, ensure_sketches
from hybridvision.data.sketch_raster import rasterize_polylines
from hybridvision.data.sketch_readers import (bitmap_to_image, class_name_from_file, find_image_folder,
                                              load_sketch_image, read_ndjson, read_npy_bitmaps)
from hybridvision.data.sketch_splits import read_class_map, read_split_list, split_indices
from hybridvision.errors import DataError, UserInputError
from hybridvision.options import Fraction, NonNegativeInt, PositiveFloat, PositiveInt

__all__ = [
    "SketchClassification",
    "quickdraw_dataset",
    "tuberlin_dataset",
    "build_sketch_dataset",
]


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
    def from_drawings(cls, drawings: Sequence[Sequence[np.ndarray]]) -> _StrokeStore:
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
            return rasterize_polylines(self._strokes.strokes(index), r["size"], r["line_width"],
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
        raise DataError(f"{r}: directory not found; pass quickdraw:DIR with DIR/<class>.ndjson or "
                        "DIR/<class>.npy files")
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
    raise UserInputError(f"--data {spec}: unknown sketch data spec; use builtin:sketches, quickdraw:DIR or "
                         "tuberlin:DIR")


_QUICKDRAW_OPTIONS = ("fmt", "recognized_only", "raster_size", "line_width", "padding", "supersample")


def _check_options(spec: str, kwargs: dict[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        builtin = ["builtin_seed"] if spec.startswith("builtin") else []
        valid = ["per_class", "val_fraction", "classes", *allowed, *builtin]
        raise UserInputError(f"--data {spec}: unknown data option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
