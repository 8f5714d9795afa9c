"""Convert other annotation formats to COCO JSON.

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
from pathlib import Path
from typing import Any, Sequence

from hybridvision.data.validate import MAX_SHOWN
from hybridvision.errors import DataError
from hybridvision.fileio import atomic_write_json, check_output_path
from hybridvision.imageio import IMAGE_EXTENSIONS, read_image_size

__all__ = ["IMAGE_EXTENSIONS", "montos_to_coco", "parse_montos_file", "write_json_atomic"]
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
) -> dict[str, Any]:
    """Convert a folder of montos ``.txt`` files (one per image) to one COCO JSON file.

    Images are numbered 1..N in the sorted order of the label files' stems; annotations 1..M in
    file then line order; ``area = w·h``; ``iscrowd = 0``.

    Args:
        labels_dir: folder of ``<stem>.txt`` files.
        images_dir: folder holding ``<stem>.<ext>`` for each label file (ext: ``IMAGE_EXTENSIONS``).
        out_json: output path (written atomically; its folder is created).
        class_names: name of each class index; default ``"0"``…``"9"``.

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
    check_output_path(out_json, inputs=inputs, kind="file")
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
