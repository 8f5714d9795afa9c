"""Validate a COCO-format detection dataset before anything trains on it.

:func:`check_coco` reads an annotation file and (optionally) the images it names and returns a
list of :class:`Finding` — one per problem, each naming the file, the record, the problem and the
fix — instead of raising on the first one, so a user fixes everything in one pass. An empty list
means the dataset is usable. :func:`raise_for_findings` turns findings into one
:class:`~hybridvision.errors.DataError` (a count, then one line per finding).

Checks (COCO format: https://cocodataset.org/#format-data):

* the file exists and is JSON; the top level is an object with ``images``, ``annotations`` and
  ``categories`` lists (and at least one category);
* every record has its required keys (image: ``id``, ``file_name``, ``width``, ``height``;
  annotation: ``id``, ``image_id``, ``category_id``, ``bbox``; category: ``id``, ``name``);
  ``area`` and ``iscrowd`` are optional here (``iscrowd`` defaults to 0; the evaluator fills a
  missing ``area`` with ``w·h``), but when present ``area`` is a non-negative number and
  ``iscrowd`` is 0 or 1;
* ``images`` is not empty;
* ids are integers and unique within images, annotations and categories;
* image ``width``/``height`` are positive integers;
* ``bbox`` is 4 finite numbers ``[x, y, w, h]`` with ``w > 0`` and ``h > 0``, inside its image
  up to ``BOX_TOLERANCE`` = 1 px on each side (annotators and converters that use inclusive pixel
  corners, or round, overshoot by up to one pixel; more than that is a wrong box or a wrong
  image size);
* ``category_id`` and ``image_id`` refer to existing records;
* with ``check_images``: each image file exists, its header decodes and declares no more than
  PIL's ``MAX_IMAGE_PIXELS`` (:func:`hybridvision.imageio.read_image_size`: no decompression
  bombs), PIL ``verify`` passes (PNG chunk CRCs), and its size equals the record's
  ``width``/``height``; ``full_decode=True`` also decodes every pixel with the one image reader
  (slower, catches truncated data).

The annotation file is read by :func:`hybridvision.fileio.read_json` (a UTF-8 BOM is accepted).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterable

from hybridvision.errors import DataError, UserInputError
from hybridvision.fileio import read_json
from hybridvision.imageio import load_image_uint8, read_image_size, verify_image

__all__ = ["BOX_TOLERANCE", "Finding", "check_annotation_file", "check_coco", "format_findings", "raise_for_findings"]

BOX_TOLERANCE = 1.0  # px a box may overshoot its image on each side
MAX_SHOWN = 5  # findings listed in a DataError message

_REQUIRED = {
    "image": ("id", "file_name", "width", "height"),
    "annotation": ("id", "image_id", "category_id", "bbox"),
    "category": ("id", "name"),
}
_TOP = ("images", "annotations", "categories")


@dataclass(frozen=True)
class Finding:
    """One problem in a dataset.

    Attributes:
        file: the file the problem is in (annotation file or image file).
        record: which record, e.g. ``"annotation id=17"``, ``"image id=3"``, ``"file"``.
        problem: what is wrong.
        fix: how to fix it.
    """

    file: str
    record: str
    problem: str
    fix: str

    def __str__(self) -> str:  # always one line
        return " ".join(f"{self.file}: {self.record}: {self.problem}; fix: {self.fix}".split())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rec(kind: str, r: Any, pos: int) -> str:
    """How to name a record: by its id when it has a usable one, else by its list position."""
    if isinstance(r, dict) and isinstance(r.get("id"), (int, str)) and not isinstance(r.get("id"), bool):
        return f"{kind} id={r['id']}"
    return f"{kind} #{pos} (no id)"


def check_annotation_file(ann: Path) -> None:
    """Refuse, in one line, an annotation path that is a folder or does not exist."""
    if not ann.is_file():
        raise UserInputError(f"{ann}: {'is a folder, not' if ann.is_dir() else 'not found; pass'} a COCO "
                             "annotation JSON file")


def check_coco(
    ann_file: str | os.PathLike,
    images_dir: str | os.PathLike | None,
    *,
    check_images: bool = True,
    full_decode: bool = False,
    unreadable: str = "finding",
) -> list[Finding]:
    """Check a COCO detection annotation file and its images.

    Args:
        ann_file: path of the COCO JSON file.
        images_dir: folder that ``file_name`` is relative to (ignored when ``check_images`` is False).
        check_images: also check that each image exists, decodes and has the recorded size.
        full_decode: decode all pixels, not only the header.
        unreadable: a file that is not JSON (not UTF-8, a syntax error): ``"finding"`` reports it
            as one, ``"raise"`` raises its one-line :class:`UserInputError` (``data check``).

    Returns:
        The findings, in file order; empty when the dataset is usable.
    """
    path = str(ann_file)
    out: list[Finding] = []

    def add(record: str, problem: str, fix: str, file: str = path) -> None:
        out.append(Finding(file, record, problem, fix))

    if not Path(ann_file).exists():
        add("file", "annotation file not found", "check the path (a COCO JSON file is expected)")
        return out
    try:
        data = read_json(ann_file, what="COCO annotation")  # BOM-tolerant; line/column on errors
    except UserInputError as e:
        if unreadable == "raise":
            raise
        problem = str(e).removeprefix(f"{Path(ann_file)}: ").partition("; ")[0]
        add("file", problem.replace("COCO annotation file ", ""),
            "write the file as COCO JSON (images, annotations, categories)")
        return out
    if not isinstance(data, dict):
        add("file", f"top level is a {type(data).__name__}, not an object",
            "make the top level an object with images, annotations and categories")
        return out
    lists: dict[str, list] = {}
    for key in _TOP:
        if key not in data:
            add("file", f"missing top-level key '{key}'", f"add a '{key}' list (COCO format)")
        elif not isinstance(data[key], list):
            add("file", f"top-level '{key}' is a {type(data[key]).__name__}, not a list", f"make '{key}' a list")
        else:
            lists[key] = data[key]
    if "categories" in lists and not lists["categories"]:
        add("file", "no categories", "list the classes in 'categories' as {id, name} records")
    if "images" in lists and not lists["images"]:
        add("file", "no images", "list the images in 'images' as {id, file_name, width, height} records")

    # --- categories (a record that lacks other keys still defines its id, so that references
    # to it do not produce a second, misleading finding)
    cat_ids: set = set()
    for pos, c in enumerate(lists.get("categories", [])):
        name = _rec("category", c, pos)
        if not _record_ok(c, "category", name, add) and not (isinstance(c, dict) and "id" in c):
            continue
        if not _is_int(c["id"]):
            add(name, f"id {c['id']!r} is not an integer", "use integer category ids")
        elif c["id"] in cat_ids:
            add(name, "duplicate category id", "give every category a unique id")
        else:
            cat_ids.add(c["id"])

    # --- images
    images: dict[Any, dict] = {}
    for pos, im in enumerate(lists.get("images", [])):
        name = _rec("image", im, pos)
        if not _record_ok(im, "image", name, add):
            if not (isinstance(im, dict) and "id" in im):
                continue
            im = {"file_name": None, "width": None, "height": None, **im}
            if None in (im["width"], im["height"]):
                im["width"] = im["height"] = None
        if not _is_int(im["id"]):
            add(name, f"id {im['id']!r} is not an integer", "use integer image ids")
            continue
        if im["id"] in images:
            add(name, "duplicate image id", "give every image a unique id")
            continue
        w, h = im["width"], im["height"]
        if w is not None and not (_is_int(w) and _is_int(h) and w > 0 and h > 0):
            add(name, f"width/height {w!r}x{h!r} are not positive integers", "write the image size in pixels")
            im = {**im, "width": None, "height": None}
        fn = im["file_name"]
        if fn is not None and (not isinstance(fn, str) or not fn):
            add(name, f"file_name {fn!r} is not a file name", "write the image's path relative to the images folder")
            im = {**im, "file_name": None}
        images[im["id"]] = im

    # --- annotations
    ann_ids: set = set()
    for pos, a in enumerate(lists.get("annotations", [])):
        name = _rec("annotation", a, pos)
        if not _record_ok(a, "annotation", name, add):
            continue
        if not _is_int(a["id"]):
            add(name, f"id {a['id']!r} is not an integer", "use integer annotation ids")
        elif a["id"] in ann_ids:
            add(name, "duplicate annotation id", "give every annotation a unique id")
        else:
            ann_ids.add(a["id"])
        im = images.get(a["image_id"]) if _is_int(a["image_id"]) else None
        if im is None and "images" in lists:
            add(name, f"image_id {a['image_id']!r} is not an image in 'images'",
                "point image_id to an existing image record or remove the annotation")
        if "categories" in lists and not (_is_int(a["category_id"]) and a["category_id"] in cat_ids):
            add(name, f"unknown category_id {a['category_id']!r} (known: {_short(sorted(cat_ids, key=str))})",
                "use one of the ids in 'categories' or add the category")
        if "area" in a and not (_is_num(a["area"]) and math.isfinite(a["area"]) and a["area"] >= 0):
            add(name, f"area {a['area']!r} is not a non-negative number",
                "write the object's area in pixels, or leave 'area' out (the evaluator uses w·h)")
        if "iscrowd" in a and a["iscrowd"] not in (0, 1) or isinstance(a.get("iscrowd"), bool):
            add(name, f"iscrowd {a['iscrowd']!r} is not 0 or 1", "write iscrowd as 0 (an object) or 1 (a crowd)")
        box = a["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_num(v) and math.isfinite(v) for v in box)):
            add(name, f"bbox {box!r} is not 4 finite numbers", "write bbox as [x, y, width, height] in pixels")
            continue
        x, y, w, h = box
        if w <= 0 or h <= 0:
            add(name, f"bbox {box} has zero or negative width/height", "fix the box size or remove the annotation")
            continue
        if im is not None and im["width"] is not None:
            W, H, t = im["width"], im["height"], BOX_TOLERANCE
            if x < -t or y < -t or x + w > W + t or y + h > H + t:
                add(name, f"bbox {box} ([x, y, w, h]) lies outside its {W}x{H} image (image id={im['id']})",
                    "check the box (x, y is the top-left corner) or the image's width/height")

    # --- image files
    if check_images and images_dir is not None:
        for im in images.values():
            if im["file_name"] is not None:
                _check_image_file(Path(images_dir) / im["file_name"], im, full_decode, add)
    return out


def _record_ok(r: Any, kind: str, name: str, add) -> bool:
    if not isinstance(r, dict):
        add(name, f"{kind} record is a {type(r).__name__}, not an object", f"write each {kind} as a JSON object")
        return False
    missing = [k for k in _REQUIRED[kind] if k not in r]
    if missing:
        add(name, f"missing key(s) {', '.join(missing)}", f"add {', '.join(missing)} to every {kind} record")
        return False
    return True


def _short(items: list, n: int = 12) -> str:
    s = ", ".join(map(str, items[:n]))
    return s + (", ..." if len(items) > n else "")


def _check_image_file(p: Path, im: dict, full_decode: bool, add) -> None:
    name = f"image id={im['id']}"
    if not p.is_file():
        add(name, f"image file not found: {p}", "put the image there or fix file_name / the images folder",
            file=str(p))
        return
    try:
        size = read_image_size(p)  # the one reader's header checks (incl. the pixel limit)
    except DataError as e:
        reason = str(e).removeprefix(f"{p}: ").partition("; ")[0]
        add(name, f"image file cannot be decoded ({reason})", "replace the file with a valid image (PNG/JPEG)",
            file=str(p))
        return
    try:
        verify_image(p)  # header + PNG chunk CRCs, no pixel decode
        if full_decode:
            load_image_uint8(p)
    except Exception as e:  # PIL raises many types (UnidentifiedImageError, SyntaxError, OSError, ...)
        reason = str(e).removeprefix(f"{p}: ").partition("; ")[0] if isinstance(e, DataError) else \
            f"{e.__class__.__name__}: {e}"
        add(name, f"image file cannot be decoded ({reason})",
            "replace the file with a valid image (PNG/JPEG)", file=str(p))
        return
    if im["width"] is not None and size != (im["width"], im["height"]):
        add(name, f"image is {size[0]}x{size[1]} but the record says {im['width']}x{im['height']}",
            "write the real width/height into the image record", file=str(p))


def format_findings(findings: Iterable[Finding], *, what: str, limit: int = MAX_SHOWN) -> str:
    """One header line with the count, then one line per finding (the first ``limit``)."""
    fs = list(findings)
    shown = fs[:limit]
    head = f"{what}: {len(fs)} problem{'s' if len(fs) != 1 else ''} found"
    head += f" (first {len(shown)} shown)" if len(fs) > len(shown) else ""
    return "\n".join([head] + [f"  - {f}" for f in shown])


def raise_for_findings(findings: list[Finding], *, what: str) -> None:
    """Raise one :class:`DataError` listing ``findings`` (all kept in ``err.findings``); no-op if empty."""
    if findings:
        raise DataError(format_findings(findings, what=what), findings=[str(f) for f in findings])
