"""Cut a COCO dataset of large images into overlapping square tiles for training.

The idea is SAHI's ``slice_coco`` (Akyon et al., "Slicing Aided Hyper Inference and Fine-tuning for
Small Object Detection", ICIP 2022): a detector trained at a few hundred pixels sees small objects of
a large image at full resolution when it is trained on tiles of it, and ``predict --tile`` then
predicts on the same kind of windows. The code here is this project's own.

The rules (also in ``hybridvision data slice --help`` and the README):

- **Tiles.** Along each side of length L, tiles of side S start every ``step = S - round(overlap · S)``
  pixels (``overlap`` in [0, 0.9], the cap ``predict --tile-overlap`` has too:
  :mod:`hybridvision.tile_overlap`), and the last tile is moved back to end flush with the image's
  right / bottom edge, so the tiles cover the image exactly (no tile reaches past it). An image side
  shorter than S gives one tile of that side's length: such tiles are **not padded** (training
  resizes every image anyway).
- **Boxes.** Each box is clipped to each tile it overlaps and kept in that tile when the clipped
  box keeps at least ``min_visible`` of the box's area (default 0.5); a box wholly inside a tile
  always comes back unchanged, shifted by the tile's offset. ``area`` becomes the clipped box's
  area and ``segmentation``/keypoints are dropped (they are not clipped); other keys
  (``iscrowd``, ``category_id``, attributes) are kept, with ``source_annotation_id``.
- **Empty tiles** (no box kept) are written with ``keep_empty=True`` (the default: a sliced
  dataset holds every part of every image, background included) and left out otherwise.
- **Records.** Each tile's image record holds ``id`` (1..T), ``file_name``
  (``<source stem>_x<X>_y<Y>.png``, in the source's sub-folder), ``width``, ``height`` and where it
  came from: ``source_image_id``, ``source_file_name``, ``offset_x``, ``offset_y`` (the tile's
  top-left corner in the source image). Tiles are written as PNG (lossless).

Symbols: S tile side, L image side, B boxes of an image.
"""

from __future__ import annotations

import io
import math
import numbers
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from collections.abc import Iterable, Mapping

import numpy as np
import torch

from hybridvision.data.validate import check_annotation_file, check_coco, raise_for_findings
from hybridvision.errors import DataError, UserInputError
from hybridvision.fileio import (atomic_write_bytes, atomic_write_json, check_output_path, make_output_dir,
                                 read_json)
from hybridvision.imageio import load_image_uint8
from hybridvision.tile_overlap import check_tile_overlap

__all__ = ["ANNOTATION_FILE", "IMAGES_FOLDER", "SliceSummary", "check_slice_options", "plan_tiles",
           "slice_box", "slice_coco", "tile_starts", "tile_windows"]

ANNOTATION_FILE = "annotations.json"  # written into the output folder
IMAGES_FOLDER = "images"  # the tiles, under the output folder
MIN_TILE = 32
MAX_TILE = 8192
# Geometry keys of an annotation that no longer hold for a clipped box.
_DROPPED_KEYS = ("segmentation", "keypoints", "num_keypoints", "area", "bbox", "id", "image_id")


@dataclass(frozen=True)
class SliceSummary:
    """What :func:`slice_coco` wrote.

    Attributes:
        annotation_file: ``OUT/annotations.json``.
        images_dir: ``OUT/images``, the folder the tiles' ``file_name`` is relative to.
        source_images: images read.
        tiles: tiles written (image records).
        boxes: boxes written over all tiles (a box in two overlapping tiles counts twice).
        cut_kept: of those, boxes clipped by a tile edge and kept by the visible-area rule.
        cut_dropped: (box, tile) pairs dropped by the rule (the box overlaps the tile too little).
        empty_dropped: empty tiles left out (``keep_empty=False``).
        lost: source boxes kept in no tile (larger than a tile by more than the rule allows).
    """

    annotation_file: Path
    images_dir: Path
    source_images: int
    tiles: int
    boxes: int
    cut_kept: int
    cut_dropped: int
    empty_dropped: int
    lost: int = 0

    def summary(self) -> str:
        """One line for the command line."""
        empty = f", {self.empty_dropped} empty tiles left out" if self.empty_dropped else ""
        if self.lost:
            empty += (f"; warning: {self.lost} boxes are in no tile (too large for --size: use larger "
                      "tiles or a lower --min-visible)")
        images = f"{self.source_images} image{'s' if self.source_images != 1 else ''}"
        return (f"wrote {self.annotation_file}: {self.tiles} tiles of {images}, "
                f"{self.boxes} boxes ({self.cut_kept} clipped at a tile edge; {self.cut_dropped} cut parts "
                f"dropped as too little visible){empty}; train with --data "
                f"coco:{self.annotation_file},{self.images_dir}")


# ------------------------------------------------------------------------------- options
def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_fraction(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def tile_step(size: int, overlap: float) -> int:
    """Pixels between the starts of neighbouring tiles: ``size - round(overlap * size)``."""
    return int(size) - int(round(float(overlap) * int(size)))


def check_slice_options(size: Any, overlap: Any, min_visible: Any) -> None:
    """One-line :class:`UserInputError` for a tile side outside [32, 8192], an overlap outside
    [0, :data:`~hybridvision.tile_overlap.MAX_TILE_OVERLAP`] (the cap ``predict --tile-overlap``
    has too), or a ``min_visible`` outside (0, 1]."""
    if not _is_int(size) or not MIN_TILE <= int(size) <= MAX_TILE:
        raise UserInputError(f"--size {size!r}: use a tile side in [{MIN_TILE}, {MAX_TILE}] pixels, e.g. --size 640")
    check_tile_overlap(overlap, "--overlap", unit="tile")  # at the cap a 32 px tile still steps 3 px
    if not _is_fraction(min_visible) or not 0.0 < float(min_visible) <= 1.0:
        raise UserInputError(f"--min-visible {min_visible!r}: use a fraction of a box's area in (0, 1], "
                             "e.g. --min-visible 0.5")


# ------------------------------------------------------------------------------- geometry
def tile_starts(length: int, size: int, step: int) -> list[int]:
    """Start offsets of the tiles along one side of ``length`` pixels: 0, step, 2·step, … while a
    tile ends inside, then one flush with the end (``length - size``); ``[0]`` when
    ``length <= size`` (one tile, the whole side)."""
    if length <= size:
        return [0]
    return list(range(0, length - size, step)) + [length - size]


def tile_windows(width: int, height: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """The tiles of a ``width`` × ``height`` image as ``(x, y, w, h)``, row by row; ``w = min(size,
    width)``, ``h = min(size, height)``. Their union is the image (see the module's rules)."""
    step = tile_step(size, overlap)
    tw, th = min(size, width), min(size, height)
    return [(x, y, tw, th) for y in tile_starts(height, size, step) for x in tile_starts(width, size, step)]


def slice_box(bbox: list[float], tile: tuple[int, int, int, int]) -> tuple[list[float] | None, float]:
    """A COCO box ``[x, y, w, h]`` (image pixels) in ``tile`` ``(x, y, w, h)``.

    Returns ``(box, visible)``: the box clipped to the tile, in the tile's pixels (None when they do
    not overlap), and the clipped area over the box's area (1.0 for a box wholly inside, which
    comes back as ``[x - tile_x, y - tile_y, w, h]`` exactly)."""
    x, y, w, h = (float(v) for v in bbox)
    tx, ty, tw, th = tile
    if x >= tx and y >= ty and x + w <= tx + tw and y + h <= ty + th:  # inside: no rounding at all
        return [x - tx, y - ty, w, h], 1.0
    x1, y1 = max(x, tx), max(y, ty)
    x2, y2 = min(x + w, tx + tw), min(y + h, ty + th)
    if x2 <= x1 or y2 <= y1:
        return None, 0.0
    visible = (x2 - x1) * (y2 - y1) / (w * h) if w * h > 0 else 0.0
    return [x1 - tx, y1 - ty, x2 - x1, y2 - y1], visible


# --------------------------------------------------------------------------------- planning
def _safe_parts(file_name: str) -> list[str]:
    """``file_name``'s folders and name with no way out of the output folder (no root, ``..``)."""
    parts = PurePosixPath(str(file_name).replace("\\", "/")).parts
    return [p for p in parts if p not in ("", ".", "..", "/") and not p.endswith(":")]


def _tile_bases(images: list[Mapping[str, Any]]) -> dict[int, str]:
    """Image id → the stem its tiles are named after: its relative path without the extension,
    or with the extension too (``a.jpg`` → ``a_jpg``) when two images would share a stem."""
    def stem(im: Mapping[str, Any], with_ext: bool) -> str:
        parts = _safe_parts(im["file_name"]) or [f"image{im['id']}"]
        p = PurePosixPath(*parts)
        name = f"{p.stem}_{p.suffix.lstrip('.')}" if with_ext and p.suffix else p.stem
        return str(p.with_name(name))

    plain = [stem(im, False) for im in images]
    counts = Counter(plain)
    return {int(im["id"]): stem(im, counts[s] > 1) for im, s in zip(images, plain)}


def _tile_annotation(ann: Mapping[str, Any], box: list[float]) -> dict[str, Any]:
    kept = {k: v for k, v in ann.items() if k not in _DROPPED_KEYS}
    return {**kept, "bbox": box, "area": box[2] * box[3], "source_annotation_id": ann["id"]}


def plan_tiles(coco: Mapping[str, Any], *, size: int, overlap: float = 0.2, min_visible: float = 0.5,
               keep_empty: bool = True) -> tuple[dict[str, Any], list[tuple[int, tuple[int, int, int, int]]], dict]:
    """The sliced COCO content of a checked COCO dataset, without touching pixels.

    Returns ``(coco_out, crops, counts)``: ``coco_out`` the tiles' COCO dict (every other
    top-level key of ``coco`` kept), ``crops[i] = (source image id, (x, y, w, h))`` of
    ``coco_out["images"][i]``, and ``counts`` with ``boxes``, ``cut_kept``, ``cut_dropped``,
    ``empty_dropped`` and ``lost`` (see :class:`SliceSummary`).
    """
    check_slice_options(size, overlap, min_visible)
    per_image: dict[int, list[Mapping[str, Any]]] = {}
    for ann in coco["annotations"]:
        per_image.setdefault(int(ann["image_id"]), []).append(ann)
    bases = _tile_bases(coco["images"])
    images, annotations, crops = [], [], []
    counts = dict(boxes=0, cut_kept=0, cut_dropped=0, empty_dropped=0, lost=0)
    names: set[str] = set()
    placed: set[int] = set()  # positions in coco["annotations"] of the boxes kept in some tile
    position = {id(ann): i for i, ann in enumerate(coco["annotations"])}
    for im in coco["images"]:
        for tile in tile_windows(int(im["width"]), int(im["height"]), size, overlap):
            kept = []
            for ann in per_image.get(int(im["id"]), []):
                box, visible = slice_box(ann["bbox"], tile)
                if box is None:
                    continue
                if visible + 1e-9 < min_visible:  # the tolerance keeps an exact 0.5 at 0.5
                    counts["cut_dropped"] += 1
                    continue
                counts["cut_kept"] += visible < 1.0
                kept.append(_tile_annotation(ann, box))
                placed.add(position[id(ann)])
            if not kept and not keep_empty:
                counts["empty_dropped"] += 1
                continue
            x, y, w, h = tile
            name = f"{bases[int(im['id'])]}_x{x}_y{y}.png"
            if name in names:
                raise DataError(f"{im['file_name']}: its tile {name} has the name of another image's tile; "
                                "rename one of the two images")
            names.add(name)
            tile_id = len(images) + 1
            images.append({"id": tile_id, "file_name": name, "width": w, "height": h,
                           "source_image_id": im["id"], "source_file_name": im["file_name"],
                           "offset_x": x, "offset_y": y})
            for ann in kept:
                annotations.append({**ann, "id": len(annotations) + 1, "image_id": tile_id})
            crops.append((int(im["id"]), tile))
    counts["boxes"] = len(annotations)
    counts["lost"] = len(coco["annotations"]) - len(placed)
    rest = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    return {**rest, "images": images, "annotations": annotations}, crops, counts


# ---------------------------------------------------------------------------------- writing
def _png_bytes(tile: torch.Tensor) -> bytes:
    """PNG file content of a uint8 ``[3, h, w]`` tile."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tile.permute(1, 2, 0).numpy())).save(buf, format="PNG")
    return buf.getvalue()


def _write_tiles(crops: Iterable[tuple[int, tuple[int, int, int, int]]], names: list[str],
                 sources: dict[int, Path], images_out: Path) -> None:
    """Crop each tile from its source image (decoded once per image) and write it as PNG."""
    current: tuple[int, torch.Tensor] | None = None
    for (image_id, (x, y, w, h)), name in zip(crops, names):
        if current is None or current[0] != image_id:
            current = (image_id, load_image_uint8(sources[image_id]))  # [3, H, W] uint8
        atomic_write_bytes(images_out / name, _png_bytes(current[1][:, y:y + h, x:x + w]))


def slice_coco(ann_file: str | os.PathLike, images_dir: str | os.PathLike, out: str | os.PathLike, *,
               size: int, overlap: float = 0.2, min_visible: float = 0.5, keep_empty: bool = True,
               exist_ok: bool = False) -> SliceSummary:
    """Cut every image of a COCO dataset into overlapping ``size`` × ``size`` tiles (the module's
    rules) and write them with their COCO annotation file into the folder ``out``.

    Args:
        ann_file: the COCO annotation JSON; checked as ``hybridvision data check`` checks it
            (image files included: each must exist, decode and have its recorded size).
        images_dir: the folder the images' ``file_name`` is relative to.
        out: the output folder: new, empty or made by hybridvision (``exist_ok`` allows another
            non-empty folder); it gets ``annotations.json`` and ``images/``.
        size: the tile side in pixels, in [32, 8192].
        overlap: the fraction of a tile shared with its neighbour, in [0, 0.9].
        min_visible: a clipped box is kept when it keeps at least this fraction of its area, in (0, 1].
        keep_empty: also write tiles without boxes.

    Returns:
        A :class:`SliceSummary`.

    Raises:
        UserInputError: a bad option or output folder, an unreadable annotation file.
        DataError: a malformed dataset or image (every problem found, one line each).
    """
    check_slice_options(size, overlap, min_visible)
    ann_file, images_dir, out = Path(ann_file), Path(images_dir), Path(out)
    check_annotation_file(ann_file)
    if not images_dir.is_dir():
        raise UserInputError(f"--images {images_dir}: image folder not found; pass the folder the images' "
                             "file_name is relative to")
    check_output_path(out, inputs=[ann_file, images_dir], kind="dir", exist_ok=exist_ok)
    raise_for_findings(check_coco(ann_file, images_dir, check_images=True), what=str(ann_file))
    coco = read_json(ann_file, what="COCO annotation")
    coco_out, crops, counts = plan_tiles(coco, size=size, overlap=overlap, min_visible=min_visible,
                                         keep_empty=keep_empty)
    sources = {int(im["id"]): images_dir / im["file_name"] for im in coco["images"]}
    make_output_dir(out)
    # An earlier slicing's annotation file goes first: a run stopped half-way must not leave it
    # describing tiles this run has begun to replace.
    (out / ANNOTATION_FILE).unlink(missing_ok=True)
    _write_tiles(crops, [im["file_name"] for im in coco_out["images"]], sources, out / IMAGES_FOLDER)
    # The annotation file last: a run stopped half-way leaves no annotation file for partial tiles.
    atomic_write_json(out / ANNOTATION_FILE, coco_out, indent=1)
    return SliceSummary(annotation_file=out / ANNOTATION_FILE, images_dir=out / IMAGES_FOLDER,
                        source_images=len(coco["images"]), tiles=len(coco_out["images"]), **counts)
