"""Convert other annotation formats to COCO JSON: ``montos`` text labels and ModaNet.

``montos`` (thesis A, seed ``000_…`` §3.1.3, "Código 3.1"): one text file per image, same stem as
the image, one line per object::

    <class>: <x>, <y>, <w>, <h>

``class`` is a non-negative integer index (0–9 for digits), ``x, y`` the top-left corner and
``w, h`` the size in pixels (integers or decimals). Blank lines are ignored; an empty file is an
image without objects. COCO category ids are ``class + 1`` (COCO reserves 0), named by
``class_names`` (default ``"0"``…``"9"``) — the same ids and names the built-in ``amounts``
dataset writes, so a montos folder and ``amounts`` are interchangeable.

The thesis suspected its low montos AP came from "a bad conversion to COCO"; this converter
therefore refuses anything ambiguous: a malformed line, an unknown class, a non-positive size, a
missing, undecodable or ambiguous image each raise :class:`DataError` naming the file and line
(all problems are collected first and reported together). Image sizes come from the image files.
The JSON is written atomically (temporary file, then rename), never over one of the label files
or images it reads.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hybridvision.data.validate import MAX_SHOWN
from hybridvision.errors import DataError
from hybridvision.fileio import atomic_write_json, check_output_path, read_json
from hybridvision.imageio import IMAGE_EXTENSIONS, read_image_size

__all__ = ["IMAGE_EXTENSIONS", "montos_to_coco", "parse_montos_file", "write_json_atomic", "modanet_to_coco",
           "MODANET_CATEGORIES"]
_NUM = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
_LINE = re.compile(rf"^\s*(\d+)\s*:\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,?\s*$")
_FIX = "write '<class>: <x>, <y>, <w>, <h>' (x, y top-left, in pixels), e.g. '4: 83, 8, 43, 53'"


def _num(s: str) -> int | float:
    v = float(s)
    return int(v) if v.is_integer() and re.fullmatch(r"[-+]?\d+", s) else v


def parse_montos_file(path: str | os.PathLike, num_classes: int,
                      image_size: tuple[int, int] | None = None) -> tuple[list[tuple[int, list]], list[str]]:
    """Parse one montos label file.

    Args:
        image_size: ``(width, height)`` of the image; when given, a box reaching outside it is an
            error (the COCO file would otherwise hold boxes no detector can match).

    Returns:
        objects: ``(class, [x, y, w, h])`` per valid line.
        errors: one ``"file:line: problem; fix: ..."`` message per bad line.
    """
    objects: list[tuple[int, list]] = []
    errors: list[str] = []
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # tolerate a BOM from Windows editors
    except (OSError, UnicodeDecodeError) as e:
        return [], [f"{path}: cannot read ({e.__class__.__name__}: {e}); fix: save it as UTF-8 text"]
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            errors.append(f"{path}:{lineno}: malformed line {line.strip()!r}; fix: {_FIX}")
            continue
        cls = int(m.group(1))
        x, y, w, h = (_num(g) for g in m.groups()[1:])
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            errors.append(f"{path}:{lineno}: {line.strip()!r} holds a number too large to be a pixel "
                          f"coordinate; fix: {_FIX}")
        elif cls >= num_classes:
            errors.append(
                f"{path}:{lineno}: class {cls} is not in 0..{num_classes - 1}; "
                "fix: correct the class or pass class_names listing every class"
            )
        elif w <= 0 or h <= 0:
            errors.append(f"{path}:{lineno}: box width/height {w}, {h} must be positive; fix: {_FIX}")
        elif image_size is not None and (x < 0 or y < 0 or x + w > image_size[0] or y + h > image_size[1]):
            errors.append(f"{path}:{lineno}: box {x}, {y}, {w}, {h} reaches outside its "
                          f"{image_size[0]}×{image_size[1]} image; fix: clip it to the image")
        else:
            objects.append((cls, [x, y, w, h]))
    return objects, errors


def _index_images(images_dir: Path) -> dict[str, list[Path]]:
    """stem -> image files with that stem (any case of a known extension)."""
    found: dict[str, list[Path]] = {}
    for p in sorted(images_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            found.setdefault(p.stem, []).append(p)
    return found


def write_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically (:func:`hybridvision.fileio.atomic_write_json`)."""
    atomic_write_json(path, obj)


def montos_to_coco(
    labels_dir: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_json: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
    exist_ok: bool = False,
) -> dict[str, Any]:
    """Convert a folder of montos ``.txt`` files (one per image) to one COCO JSON file.

    Images are numbered 1..N in the sorted order of the label files' stems; annotations 1..M in
    file then line order; ``area = w·h``; ``iscrowd = 0``.

    Args:
        labels_dir: folder of ``<stem>.txt`` files.
        images_dir: folder holding ``<stem>.<ext>`` for each label file (ext: ``IMAGE_EXTENSIONS``).
        out_json: output path (written atomically; its folder is created).
        class_names: name of each class index; default ``"0"``…``"9"``.
        exist_ok: replace an existing ``out_json`` (otherwise refused before any work).

    Returns:
        The COCO dict that was written.

    Raises:
        DataError: with every problem found (count, then the first few, one line each).
    """
    labels_dir, images_dir = Path(labels_dir), Path(images_dir)
    names = [str(n) for n in (class_names if class_names is not None else range(10))]
    if not names:
        raise DataError("montos: class_names is empty; pass the name of every class (or none for digits 0-9)")
    for d, what in ((labels_dir, "labels"), (images_dir, "images")):
        if not d.is_dir():
            raise DataError(f"{d}: {what} folder not found; check the path")
    label_files = sorted(p for p in labels_dir.iterdir() if p.is_file() and p.suffix.lower() == ".txt")
    if not label_files:
        raise DataError(f"{labels_dir}: no .txt label files; point to the folder of montos annotations")
    index = _index_images(images_dir)
    inputs = [*label_files, *(p for ps in index.values() for p in ps)]
    check_output_path(out_json, inputs=inputs, kind="file", exist_ok=exist_ok)
    errors: list[str] = []
    images: list[dict] = []
    annotations: list[dict] = []
    for lf in label_files:
        candidates = index.get(lf.stem, [])
        if not candidates:
            errors += parse_montos_file(lf, len(names))[1]
            errors.append(
                f"{lf}: no image named {lf.stem}.<{'|'.join(e[1:] for e in IMAGE_EXTENSIONS)}> in {images_dir}; "
                "fix: add the image or remove the label file"
            )
            continue
        if len(candidates) > 1:
            errors += parse_montos_file(lf, len(names))[1]
            errors.append(
                f"{lf}: several images match ({', '.join(p.name for p in candidates)}); "
                "fix: keep one image per stem"
            )
            continue
        img_path = candidates[0]
        try:
            width, height = read_image_size(img_path)  # header only
        except DataError as e:
            errors += parse_montos_file(lf, len(names))[1]
            errors.append(f"{str(e).partition('; ')[0]}; fix: replace the file")
            continue
        objects, errs = parse_montos_file(lf, len(names), (width, height))
        errors += errs
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": img_path.name, "width": width, "height": height})
        for cls, (x, y, w, h) in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    if errors:
        shown = errors[:MAX_SHOWN]
        head = f"montos {labels_dir}: {len(errors)} problem{'s' if len(errors) != 1 else ''} found"
        head += f" (first {len(shown)} shown)" if len(errors) > len(shown) else ""
        raise DataError("\n".join([head] + [f"  - {e}" for e in shown]), findings=errors)
    sup = "digit" if names == [str(d) for d in range(10)] else "object"
    coco = {
        "info": {"description": f"converted from montos labels in {labels_dir}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": sup} for i, n in enumerate(names)],
    }
    write_json_atomic(coco, out_json)
    return coco


# ModaNet (Zheng et al., "ModaNet: A Large-scale Street Fashion Dataset with Polygon
# Annotations", ACM MM 2018): 13 categories, ids 1–13.
MODANET_CATEGORIES = ("bag", "belt", "boots", "footwear", "outer", "dress", "sunglasses", "pants", "top",
                      "shorts", "skirt", "headwear", "scarf & tie")


def _integer(value: Any, what: str) -> int:
    """A JSON integer (``2``, or ``2.0``); ``ValueError`` naming ``what`` for a string, a bool, NaN or a fraction."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
            value != int(value)):
        raise ValueError(f"{what} {value!r} is not an integer")
    return int(value)


def _real(value: Any, what: str) -> float:
    """A finite JSON number; ``ValueError`` naming ``what`` for a string, a bool, NaN or infinity (not JSON)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} {value!r} is not a finite number")
    return float(value)


def _finite_polygons(seg: Any) -> bool:
    """Polygons ``[[x, y, …], …]`` of finite numbers (an RLE dict is not looked into)."""
    if isinstance(seg, dict):
        return True
    if not isinstance(seg, list):
        return False
    return all(isinstance(poly, list) and all(
        not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in poly) for poly in seg)


def _modanet_image(im: Any) -> dict[str, Any]:
    """One ``images`` record → ``{id, file_name, width, height}``; ``ValueError`` naming the bad field."""
    if not isinstance(im, dict):
        raise ValueError(f"is {type(im).__name__}, not an object with id, file_name, width and height")
    missing = [k for k in ("id", "file_name", "width", "height") if k not in im]
    if missing:
        raise ValueError(f"has no {', '.join(missing)}")
    name = im["file_name"]
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"file_name {name!r} is not an image file name")
    rec = {"id": _integer(im["id"], "id"), "file_name": name, "width": _integer(im["width"], "width"),
           "height": _integer(im["height"], "height")}
    if rec["width"] < 1 or rec["height"] < 1:
        raise ValueError(f"size {rec['width']}×{rec['height']} is not positive")
    return rec


def _modanet_annotation(ann: Any) -> tuple[int | None, int, int, list[float], int]:
    """One ``annotations`` record → ``(id or None, image_id, category_id, [x, y, w, h], iscrowd)``;
    ``ValueError`` naming the bad field (a string id, a NaN coordinate, ``iscrowd`` not 0/1, …)."""
    if not isinstance(ann, dict):
        raise ValueError(f"is {type(ann).__name__}, not an object with image_id, category_id and bbox")
    missing = [k for k in ("image_id", "category_id", "bbox") if k not in ann]
    if missing:
        raise ValueError(f"has no {', '.join(missing)}")
    ann_id = None if ann.get("id") is None else _integer(ann["id"], "id")
    image_id, cat = _integer(ann["image_id"], "image_id"), _integer(ann["category_id"], "category_id")
    box = ann["bbox"]
    if not isinstance(box, list) or len(box) != 4:
        raise ValueError(f"bbox {box!r} is not [x, y, w, h]")
    xywh = [_real(v, "bbox value") for v in box]
    crowd = ann.get("iscrowd", 0)
    crowd = 0 if crowd is None else crowd
    if isinstance(crowd, str) or crowd not in (0, 1):
        raise ValueError(f"iscrowd {crowd!r} is not 0 or 1")
    if "segmentation" in ann and not _finite_polygons(ann["segmentation"]):
        raise ValueError("segmentation is not polygons of finite numbers ([[x, y, x, y, …]])")
    return ann_id, image_id, cat, xywh, int(crowd)


def _modanet_names(categories: Any, errors: list[str]) -> dict[int, str]:
    """The file's own name of each category id (ModaNet's when absent)."""
    if categories is None:
        return {}
    if not isinstance(categories, list):
        errors.append(f"categories: is {type(categories).__name__}, not a list of {{id, name}}; fix or remove it")
        return {}
    names: dict[int, str] = {}
    for i, c in enumerate(categories):
        try:
            if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                raise ValueError("is not an object with an id and a name")
            names[_integer(c.get("id"), "id")] = c["name"]
        except ValueError as e:
            errors.append(f"categories[{i}]: {e}; fix the record")
    return names


def modanet_to_coco(modanet_json: str | os.PathLike, out_json: str | os.PathLike, *,
                    exist_ok: bool = False) -> dict[str, Any]:
    """ModaNet's instance file (``modanet2018_instances_{train,val}.json``: COCO-like, with polygons)
    → a COCO box file for detection (thesis A's main dataset).

    Keeps ``images`` (``file_name``, ``id``, ``width``, ``height``) and, per annotation, ``id``,
    ``image_id``, ``category_id``, ``bbox`` (clipped to its image), ``area`` (of the clipped box)
    and ``iscrowd``; drops the polygons. A box with no area left inside its image is dropped and
    counted (ModaNet has a few); a record that is not a ModaNet annotation (missing keys, ids or
    sizes that are not integers, a NaN or infinite coordinate — not valid JSON to write —,
    ``iscrowd`` not 0/1, a ``file_name`` that is not a name, a repeated id, an unknown image or a
    category outside 1–13) is a :class:`DataError` naming it. Categories are ModaNet's 13, with
    the file's own names when it has them (``categories``, a list). An existing ``out_json`` is
    refused unless ``exist_ok``.

    Returns:
        The COCO dict written (with ``info.dropped_boxes``).
    """
    src = Path(modanet_json)
    check_output_path(out_json, inputs=[src], kind="file", exist_ok=exist_ok)
    data = read_json(src, what="ModaNet annotation")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("annotations"), list):
        raise DataError(f"{src}: not a ModaNet instance file (a JSON object with 'images' and 'annotations' "
                        "lists); pass modanet2018_instances_train.json or _val.json")
    errors: list[str] = []
    names = _modanet_names(data.get("categories"), errors)
    images, sizes = [], {}
    for i, im in enumerate(data["images"]):
        try:
            rec = _modanet_image(im)
        except ValueError as e:
            errors.append(f"images[{i}]: {e}; fix the record")
            continue
        if rec["id"] in sizes:
            errors.append(f"images[{i}]: id {rec['id']} is used by another image; give each image its own id")
            continue
        images.append(rec)
        sizes[rec["id"]] = (rec["width"], rec["height"])
    annotations, dropped, used_ids = [], 0, set()
    for i, ann in enumerate(data["annotations"]):
        try:
            ann_id, image_id, cat, (x, y, w, h), crowd = _modanet_annotation(ann)
        except ValueError as e:
            errors.append(f"annotations[{i}]: {e}; fix the record")
            continue
        if ann_id is not None and ann_id in used_ids:
            errors.append(f"annotations[{i}]: id {ann_id} is used by another annotation; give each its own id")
            continue
        used_ids.add(ann_id)
        if image_id not in sizes:
            errors.append(f"annotations[{i}] (id {ann_id}): image_id {image_id} is not among the images")
            continue
        if not 1 <= cat <= len(MODANET_CATEGORIES):
            errors.append(f"annotations[{i}] (id {ann_id}): category_id {cat} is not a ModaNet "
                          f"category (1–{len(MODANET_CATEGORIES)})")
            continue
        width, height = sizes[image_id]
        x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x1 <= x0 or y1 <= y0:
            dropped += 1
            continue
        annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "area": (x1 - x0) * (y1 - y0), "iscrowd": crowd})
    if errors:
        errors = [f"{src}: {e}" for e in errors]  # each names the file: the CLI shows the first alone
        shown = errors[:MAX_SHOWN]
        head = f"ModaNet {src}: {len(errors)} problem{'s' if len(errors) != 1 else ''} found"
        head += f" (first {len(shown)} shown)" if len(errors) > len(shown) else ""
        raise DataError("\n".join([head] + [f"  - {e}" for e in shown]), findings=errors)
    next_id = max((a["id"] for a in annotations if a["id"] is not None), default=0) + 1
    for a in annotations:  # records without an id get fresh ones, after the largest given
        if a["id"] is None:
            a["id"], next_id = next_id, next_id + 1
    coco = {
        "info": {"description": f"boxes converted from ModaNet {src.name}", "dropped_boxes": dropped},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": names.get(k + 1) or n, "supercategory": "fashion"}
                       for k, n in enumerate(MODANET_CATEGORIES)],
    }
    write_json_atomic(coco, out_json)
    return coco
