"""Importers of the common box formats into COCO JSON: Pascal VOC XML, YOLO text labels, CSV.

Each reads every record first and collects every problem — a malformed file or line, an unknown
class, a box outside its image or without area, an image that is missing or unreadable — into one
:class:`~hybridvision.errors.DataError` (the count, then one line each: the file, the record, the
fix), and writes the COCO file atomically, never over one of its inputs
(:func:`~hybridvision.fileio.check_output_path`). COCO boxes are ``[x, y, w, h]`` in pixels with
continuous coordinates (the image spans ``[0, W] × [0, H]``).

* **VOC** (Everingham et al., IJCV 2010): one ``.xml`` per image; ``<object>`` with ``<name>``,
  ``<difficult>`` and ``<bndbox>`` ``xmin ymin xmax ymax`` as 1-based pixel indices, inclusive.
  Converted as Detectron2 reads VOC: ``x = xmin − 1``, ``y = ymin − 1``, ``w = xmax − xmin + 1``,
  ``h = ymax − ymin + 1``. Difficult objects become ``iscrowd: 1``: neither missed nor matched by
  the COCO evaluation — close to VOC's rule but not equal, as COCO also ignores any detection
  lying mostly inside a crowd box, where VOC ignores only those overlapping the difficult box by
  IoU ≥ 0.5; ``--drop-difficult`` leaves them out. Image sizes from ``<size>`` (checked against
  the image file when both are there).
* **YOLO** (Ultralytics): ``labels/…/<stem>.txt`` beside ``images/…/<stem>.<ext>``, one line
  ``class cx cy w h`` per object, normalised to [0, 1]; class names from ``data.yaml``'s
  ``names`` (a list, or a mapping from index to name). An image without a label file has no
  objects (YOLO's background images).
* **CSV**: a header ``image,xmin,ymin,xmax,ymax,label`` (pixel corners, continuous), one row per
  box; a row with only ``image`` lists an image without objects.

Category ids are 1…K in the order of the class names (YOLO: its indices + 1; VOC and CSV: the
names given, or the names found, sorted).
"""

from __future__ import annotations

import csv
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hybridvision.data.validate import MAX_SHOWN
from hybridvision.errors import DataError
from hybridvision.fileio import atomic_write_json, check_output_path
from hybridvision.imageio import IMAGE_EXTENSIONS, read_image_size

__all__ = ["voc_to_coco", "yolo_to_coco", "csv_to_coco", "read_yolo_names"]


def _raise_if(errors: list[str], what: str) -> None:
    if errors:
        shown = errors[:MAX_SHOWN]
        head = f"{what}: {len(errors)} problem{'s' if len(errors) != 1 else ''} found"
        head += f" (first {len(shown)} shown)" if len(errors) > len(shown) else ""
        raise DataError("\n".join([head] + [f"  - {e}" for e in shown]), findings=errors)


def _image_index(images_dir: Path) -> dict[str, list[Path]]:
    """Relative path without extension → image files (any depth; YOLO nests splits)."""
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: images folder not found; check the path")
    found: dict[str, list[Path]] = {}
    for p in sorted(images_dir.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            found.setdefault(p.relative_to(images_dir).with_suffix("").as_posix(), []).append(p)
    return found


def _write_coco(out_json: str | os.PathLike, errors: list[str], what: str, images: list[dict],
                annotations: list[dict], names: Sequence[str], description: str, no_images: str) -> dict[str, Any]:
    """Every collected problem as one :class:`DataError`, or the COCO dict written atomically."""
    _raise_if(errors, what)
    if not images:
        raise DataError(no_images)
    coco = {"info": {"description": description}, "images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(names)]}
    atomic_write_json(out_json, coco)
    return coco


def _check_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int, where: str,
               errors: list[str], tol: float = 0.5) -> bool:
    """A box inside its image (``tol`` pixels of slack, then clipped) with positive area."""
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        errors.append(f"{where}: coordinates must be finite numbers")
        return False
    if x1 <= x0 or y1 <= y0:
        errors.append(f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has no area; fix or remove it")
        return False
    if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
        errors.append(f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {width}×{height} image; "
                      "fix the coordinates")
        return False
    return True


def _annotation(ann_id: int, image_id: int, cat: int, x0: float, y0: float, x1: float, y1: float,
                width: int, height: int, crowd: int = 0) -> dict[str, Any]:
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": (x1 - x0) * (y1 - y0), "iscrowd": crowd}


# ---------------------------------------------------------------------------------------- VOC
def _text(node: ET.Element | None, tag: str) -> str | None:
    child = None if node is None else node.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def voc_to_coco(annotations_dir: str | os.PathLike, images_dir: str | os.PathLike, out_json: str | os.PathLike,
                *, class_names: Sequence[str] | None = None, drop_difficult: bool = False) -> dict[str, Any]:
    """A folder of VOC ``.xml`` files (``Annotations/``) and their images (``JPEGImages/``) →
    one COCO file (module docstring for the conventions). Returns the COCO dict written."""
    ann_dir, img_dir = Path(annotations_dir), Path(images_dir)
    if not ann_dir.is_dir():
        raise DataError(f"{ann_dir}: annotations folder not found; pass the folder of VOC .xml files")
    files = sorted(p for p in ann_dir.iterdir() if p.is_file() and p.suffix.lower() == ".xml")
    if not files:
        raise DataError(f"{ann_dir}: no .xml files; pass the folder of VOC annotations (Annotations/)")
    index = _image_index(img_dir)
    check_output_path(out_json, inputs=[*files, *(p for ps in index.values() for p in ps)], kind="file")
    errors: list[str] = []
    records: list[tuple[Path, str, int, int, list[tuple[str, float, float, float, float, int]]]] = []
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except (ET.ParseError, OSError) as e:
            errors.append(f"{f}: not readable XML ({e}); fix or remove the file")
            continue
        name = _text(root, "filename") or f.stem
        stem = Path(name).with_suffix("").as_posix()
        matches = index.get(stem) or index.get(Path(name).stem) or []
        if len(matches) != 1:
            errors.append(f"{f}: image {name!r} {'not found' if not matches else 'matches several files'} in "
                          f"{img_dir}; fix <filename> or the images folder")
            continue
        try:
            width, height = read_image_size(matches[0])
        except DataError as e:
            errors.append(f"{str(e).partition('; ')[0]}; replace the image")
            continue
        size = root.find("size")
        w_xml, h_xml = _text(size, "width"), _text(size, "height")
        if w_xml and h_xml and (w_xml, h_xml) != ("0", "0"):
            try:
                if (int(float(w_xml)), int(float(h_xml))) != (width, height):
                    errors.append(f"{f}: <size> {w_xml}×{h_xml} but {matches[0].name} is {width}×{height}; "
                                  "fix <size>")
                    continue
            except ValueError:
                errors.append(f"{f}: <size> width/height {w_xml!r}, {h_xml!r} are not numbers")
                continue
        objects = []
        for k, obj in enumerate(root.findall("object")):
            where = f"{f} object {k + 1}"
            label = _text(obj, "name")
            box = obj.find("bndbox")
            try:
                values = [_text(box, t) for t in ("xmin", "ymin", "xmax", "ymax")]
                xmin, ymin, xmax, ymax = (float(v) for v in values)  # a missing one is None: TypeError
            except (TypeError, ValueError):
                errors.append(f"{where}: <bndbox> needs numeric xmin, ymin, xmax, ymax")
                continue
            if not label:
                errors.append(f"{where}: no <name>; add the class name")
                continue
            flag = (_text(obj, "difficult") or "0").lower()
            if flag not in ("0", "1", "0.0", "1.0", "false", "true"):
                errors.append(f"{where}: <difficult> is {flag!r}; use 0 or 1")
                continue
            difficult = int(flag in ("1", "1.0", "true"))
            x0, y0, x1, y1 = xmin - 1, ymin - 1, xmax, ymax  # 1-based inclusive indices → pixel corners
            if _check_box(x0, y0, x1, y1, width, height, where, errors):
                objects.append((label, x0, y0, x1, y1, difficult))
        records.append((matches[0], stem, width, height, objects))
    names = list(class_names) if class_names else sorted({o[0] for r in records for o in r[4]})
    cat = {n: i + 1 for i, n in enumerate(names)}
    for _, _, _, _, objects in records:
        for o in objects:
            if o[0] not in cat:
                errors.append(f"class {o[0]!r} is not among --classes ({', '.join(names)}); add it")
    _raise_if(list(dict.fromkeys(errors)), f"VOC {ann_dir}")
    images, annotations = [], []
    for image_id, (path, _, width, height, objects) in enumerate(records, 1):
        images.append({"id": image_id, "file_name": path.relative_to(img_dir).as_posix(), "width": width,
                       "height": height})
        for label, x0, y0, x1, y1, difficult in objects:
            if difficult and drop_difficult:
                continue
            annotations.append(_annotation(len(annotations) + 1, image_id, cat[label], x0, y0, x1, y1,
                                           width, height, crowd=int(bool(difficult))))
    return _write_coco(out_json, [], f"VOC {ann_dir}", images, annotations, names,
                       f"converted from VOC annotations in {ann_dir}", f"{ann_dir}: no annotated images")


# --------------------------------------------------------------------------------------- YOLO
def read_yolo_names(data_yaml: str | os.PathLike) -> list[str]:
    """Class names from a YOLO ``data.yaml`` (``names:`` a list, or ``{index: name}`` for 0…K−1)."""
    path = Path(data_yaml)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); pass the dataset's data.yaml") from None
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix the file") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            keys = []
        if keys != list(range(len(names))):
            raise DataError(f"{path}: 'names' maps {sorted(names)}; give indices 0…{len(names) - 1}")
        names = [names[k] if k in names else names[str(k)] for k in keys]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) for n in names):
        raise DataError(f"{path}: no 'names' list of class names (e.g. names: [tree, car]); add it")
    return [str(n) for n in names]


def yolo_to_coco(labels_dir: str | os.PathLike, images_dir: str | os.PathLike, data_yaml: str | os.PathLike,
                 out_json: str | os.PathLike) -> dict[str, Any]:
    """YOLO text labels (module docstring) → one COCO file; every image under ``images_dir`` is
    listed, with the boxes of its ``<stem>.txt`` (same relative path under ``labels_dir``)."""
    lab_dir, img_dir = Path(labels_dir), Path(images_dir)
    if not lab_dir.is_dir():
        raise DataError(f"{lab_dir}: labels folder not found; pass the folder of YOLO .txt files")
    names = read_yolo_names(data_yaml)
    index = _image_index(img_dir)
    labels = {p.relative_to(lab_dir).with_suffix("").as_posix(): p for p in sorted(lab_dir.rglob("*.txt"))}
    check_output_path(out_json, inputs=[*labels.values(), *(p for ps in index.values() for p in ps),
                                        Path(data_yaml)], kind="file")
    errors: list[str] = []
    for stem in sorted(set(labels) - set(index)):
        errors.append(f"{labels[stem]}: no image {stem}.<ext> under {img_dir}; add it or remove the label file")
    images, annotations = [], []
    for stem, paths in sorted(index.items()):
        if len(paths) > 1:
            errors.append(f"{img_dir}: several images named {stem} ({', '.join(p.name for p in paths)}); keep one")
            continue
        try:
            width, height = read_image_size(paths[0])
        except DataError as e:
            errors.append(f"{str(e).partition('; ')[0]}; replace the image")
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": paths[0].relative_to(img_dir).as_posix(), "width": width,
                       "height": height})
        if stem not in labels:
            continue
        try:
            lines = labels[stem].read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            errors.append(f"{labels[stem]}: cannot read ({e}); fix the file")
            continue
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{labels[stem]} line {n}"
            parts = line.split()
            try:
                cls = int(parts[0])
                cx, cy, w, h = (float(v) for v in parts[1:5])
                if len(parts) != 5:
                    raise ValueError
            except (ValueError, IndexError):
                errors.append(f"{where}: expected 'class cx cy w h' (5 numbers, box normalised to [0, 1]), "
                              f"got {line.strip()[:60]!r}")
                continue
            if not 0 <= cls < len(names):
                errors.append(f"{where}: class {cls} is not in {data_yaml} (0…{len(names) - 1}); fix the index")
                continue
            x0, y0 = (cx - w / 2) * width, (cy - h / 2) * height
            x1, y1 = (cx + w / 2) * width, (cy + h / 2) * height
            if _check_box(x0, y0, x1, y1, width, height, where, errors):
                annotations.append(_annotation(len(annotations) + 1, image_id, cls + 1, x0, y0, x1, y1,
                                               width, height))
    return _write_coco(out_json, errors, f"YOLO {lab_dir}", images, annotations, names,
                       f"converted from YOLO labels in {lab_dir}",
                       f"{img_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}); pass the images folder")


# ---------------------------------------------------------------------------------------- CSV
CSV_COLUMNS = ("image", "xmin", "ymin", "xmax", "ymax", "label")


def csv_to_coco(csv_file: str | os.PathLike, images_dir: str | os.PathLike, out_json: str | os.PathLike,
                *, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """A box CSV (``image,xmin,ymin,xmax,ymax,label``; module docstring) → one COCO file."""
    src, img_dir = Path(csv_file), Path(images_dir)
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: images folder not found; check the path")
    check_output_path(out_json, inputs=[src, img_dir], kind="file")
    try:
        with open(src, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{src}: cannot read ({e}); pass a UTF-8 CSV file") from None
    if not rows or [c.strip().lower() for c in rows[0]] != list(CSV_COLUMNS):
        raise DataError(f"{src}: the first line must be the header {','.join(CSV_COLUMNS)}; add or fix it")
    errors: list[str] = []
    boxes: dict[str, list[tuple[str, float, float, float, float, str]]] = {}
    for n, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        where = f"{src} line {n}"
        cells = [c.strip() for c in row] + [""] * (6 - len(row))
        if len(row) > 6 or not cells[0]:
            errors.append(f"{where}: expected image,xmin,ymin,xmax,ymax,label (or an image alone), got "
                          f"{','.join(row)[:60]!r}")
            continue
        boxes.setdefault(cells[0], [])
        if not any(cells[1:]):  # an image without objects
            continue
        try:
            x0, y0, x1, y1 = (float(v) for v in cells[1:5])
        except ValueError:
            errors.append(f"{where}: xmin, ymin, xmax, ymax must be numbers, got {cells[1:5]}")
            continue
        if not cells[5]:
            errors.append(f"{where}: no label; add the class name")
            continue
        boxes[cells[0]].append((where, x0, y0, x1, y1, cells[5]))
    names = list(class_names) if class_names else sorted({b[5] for bs in boxes.values() for b in bs})
    cat = {name: i + 1 for i, name in enumerate(names)}
    images, annotations = [], []
    for file_name, items in boxes.items():
        path = img_dir / file_name
        try:
            width, height = read_image_size(path)
        except DataError as e:
            errors.append(f"{src}: image {file_name!r}: {str(e).partition('; ')[0]}; fix the path or the image")
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for where, x0, y0, x1, y1, label in items:
            if label not in cat:
                errors.append(f"{where}: class {label!r} is not among --classes ({', '.join(names)}); add it")
                continue
            if _check_box(x0, y0, x1, y1, width, height, where, errors):
                annotations.append(_annotation(len(annotations) + 1, image_id, cat[label], x0, y0, x1, y1,
                                               width, height))
    return _write_coco(out_json, errors, f"CSV {src}", images, annotations, names,
                       f"converted from CSV {src.name}",
                       f"{src}: no rows; add one row per box (image,xmin,ymin,xmax,ymax,label)")
