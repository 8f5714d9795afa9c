"""Importers of the common box formats into COCO JSON: Pascal VOC XML, YOLO text labels, CSV.

Each reads every record first and collects every problem — a malformed file or line, an unknown
class, a box outside its image or without area, an image that is missing or unreadable — into one
:class:`~hybridvision.errors.DataError` (the count, then one line each: the file, the record, the
fix), and writes the COCO file atomically, never over one of its inputs nor over an existing file
unless ``exist_ok`` (:func:`~hybridvision.fileio.check_output_path`). COCO boxes are
``[x, y, w, h]`` in pixels with continuous coordinates (the image spans ``[0, W] × [0, H]``).

* **VOC** (Everingham et al., IJCV 2010): one ``.xml`` per image; ``<object>`` with ``<name>``,
  ``<difficult>`` and ``<bndbox>`` ``xmin ymin xmax ymax`` as 1-based pixel indices, inclusive.
  Converted as Detectron2 reads VOC: ``x = xmin − 1``, ``y = ymin − 1``, ``w = xmax − xmin + 1``,
  ``h = ymax − ymin + 1``. Difficult objects become ``iscrowd: 1``: neither missed nor matched by
  the COCO evaluation — close to VOC's rule but not equal, as COCO also ignores any detection
  lying mostly inside a crowd box, where VOC ignores only those overlapping the difficult box by
  IoU ≥ 0.5; ``--drop-difficult`` leaves them out. Image sizes from ``<size>`` (checked against
  the image file when both are there). ``<filename>`` names the image: the file of exactly that
  name wins (``X.tif`` beside ``X.png``); without one, the one file sharing its stem.
* **YOLO** (Ultralytics): ``labels/…/<stem>.txt`` beside ``images/…/<stem>.<ext>``, one line
  ``class cx cy w h`` per object, normalised to [0, 1]; class names from ``data.yaml``'s
  ``names`` (a list, or a mapping from index to name). An image without a label file has no
  objects (YOLO's background images).
* **CSV**: one row per box, fields ``image, xmin, ymin, xmax, ymax, label`` (pixel corners,
  continuous); a row whose box and label are empty lists an image without objects. With a header,
  each field is found by its common names (:data:`CSV_ALIASES`, e.g. DeepForest's ``image_path``,
  keras-retinanet's ``x1 y1 x2 y2 class_name``, Roboflow's ``filename … class``; case-insensitive;
  other columns ignored); a file whose first row is data (its coordinates are numbers) has no
  header and is read in that order (keras-retinanet's ``path,x1,y1,x2,y2,class_name``);
  ``columns`` (``--columns image=0,…`` or ``label=species``) says where the fields are otherwise.
  A NUL byte (a UTF-16 or binary file) or a field over 128 KiB is refused, naming the line.

Category ids are 1…K in the order of the class names (YOLO: its indices + 1; VOC and CSV: the
names given, or the names found, sorted).
"""

from __future__ import annotations

import csv
import io
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hybridvision.data.validate import MAX_SHOWN
from hybridvision.errors import DataError, UserInputError
from hybridvision.fileio import atomic_write_json, check_output_path
from hybridvision.imageio import IMAGE_EXTENSIONS, read_image_size

__all__ = ["voc_to_coco", "yolo_to_coco", "csv_to_coco", "read_yolo_names", "parse_csv_columns", "parse_class_names",
           "CSV_COLUMNS", "CSV_ALIASES"]


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
                annotations: list[dict], names: Sequence[str], description: str, no_images: str,
                extra_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every collected problem as one :class:`DataError`, or the COCO dict written atomically."""
    _raise_if(errors, what)
    if not images:
        raise DataError(no_images)
    coco = {"info": {"description": description, **(extra_info or {})}, "images": images, "annotations": annotations,
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


def _files_by_name(images_dir: Path, index: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Relative path with extension, and bare file name → image files (a bare name may be in several folders)."""
    out: dict[str, list[Path]] = {}
    for p in (p for ps in index.values() for p in ps):
        out.setdefault(p.relative_to(images_dir).as_posix(), []).append(p)
        if p.parent != images_dir:
            out.setdefault(p.name, []).append(p)
    return out


def _voc_image(name: str, index: dict[str, list[Path]], files_by_name: dict[str, list[Path]]) -> list[Path]:
    """The image files a VOC ``<filename>`` may mean: the file of exactly that name (relative path, or
    bare name) wins; only without one, the files sharing its stem (``X.jpg`` written for ``X.png``)."""
    exact = files_by_name.get(name) or files_by_name.get(Path(name).name)
    if exact:
        return exact
    return index.get(Path(name).with_suffix("").as_posix()) or index.get(Path(name).stem) or []


def voc_to_coco(annotations_dir: str | os.PathLike, images_dir: str | os.PathLike, out_json: str | os.PathLike,
                *, class_names: Sequence[str] | None = None, drop_difficult: bool = False,
                exist_ok: bool = False) -> dict[str, Any]:
    """A folder of VOC ``.xml`` files (``Annotations/``) and their images (``JPEGImages/``) →
    one COCO file (module docstring for the conventions). Returns the COCO dict written."""
    ann_dir, img_dir = Path(annotations_dir), Path(images_dir)
    if not ann_dir.is_dir():
        raise DataError(f"{ann_dir}: annotations folder not found; pass the folder of VOC .xml files")
    files = sorted(p for p in ann_dir.iterdir() if p.is_file() and p.suffix.lower() == ".xml")
    if not files:
        raise DataError(f"{ann_dir}: no .xml files; pass the folder of VOC annotations (Annotations/)")
    index = _image_index(img_dir)
    check_output_path(out_json, inputs=[*files, *(p for ps in index.values() for p in ps)], kind="file",
                      exist_ok=exist_ok)
    files_by_name = _files_by_name(img_dir, index)
    named_by: dict[Path, Path] = {}  # image → the .xml naming it
    errors: list[str] = []
    records: list[tuple[Path, str, int, int, list[tuple[str, float, float, float, float, int]]]] = []
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except (ET.ParseError, OSError) as e:
            errors.append(f"{f}: not readable XML ({e}); fix or remove the file")
            continue
        name = (_text(root, "filename") or f.stem).replace("\\", "/")
        stem = Path(name).with_suffix("").as_posix()
        matches = _voc_image(name, index, files_by_name)
        if len(matches) != 1:
            several = f"matches several files ({', '.join(p.name for p in matches[:4])})"
            errors.append(f"{f}: image {name!r} {'not found' if not matches else several} in "
                          f"{img_dir}; fix <filename> or the images folder")
            continue
        if matches[0] in named_by:
            errors.append(f"{f}: image {matches[0].name!r} is already named by {named_by[matches[0]].name}; "
                          "keep one annotation file per image")
            continue
        named_by[matches[0]] = f
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
            except (ValueError, OverflowError):
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
                errors.append(f"{ann_dir}: class {o[0]!r} is not among --classes ({', '.join(names)}); add it")
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
        data = yaml.safe_load(path.read_bytes().decode("utf-8-sig"))
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); pass the dataset's data.yaml") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save data.yaml as UTF-8") from None
    except (yaml.YAMLError, RecursionError) as e:
        first = str(e).splitlines()[0] if str(e) else "nested too deeply"
        raise DataError(f"{path}: not valid YAML ({first}); fix the file") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            keys = []
        if keys != list(range(len(names))):
            raise DataError(f"{path}: 'names' maps {sorted(names)}; give indices 0…{len(names) - 1}")
        names = [names[k] if k in names else names[str(k)] for k in keys]
    if not isinstance(names, list) or not names or not all(
            isinstance(n, (str, int)) and not isinstance(n, bool) and str(n).strip() for n in names):
        raise DataError(f"{path}: no 'names' list of class names (e.g. names: [tree, car]); add it")
    doubled = sorted({str(n) for n in names if [str(m) for m in names].count(str(n)) > 1})
    if doubled:
        raise DataError(f"{path}: 'names' lists {', '.join(map(repr, doubled))} more than once; give each class once")
    return [str(n) for n in names]


def yolo_to_coco(labels_dir: str | os.PathLike, images_dir: str | os.PathLike, data_yaml: str | os.PathLike,
                 out_json: str | os.PathLike, *, exist_ok: bool = False) -> dict[str, Any]:
    """YOLO text labels (module docstring) → one COCO file; every image under ``images_dir`` is
    listed, with the boxes of its ``<stem>.txt`` (same relative path under ``labels_dir``)."""
    lab_dir, img_dir = Path(labels_dir), Path(images_dir)
    if not lab_dir.is_dir():
        raise DataError(f"{lab_dir}: labels folder not found; pass the folder of YOLO .txt files")
    names = read_yolo_names(data_yaml)
    index = _image_index(img_dir)
    labels = {p.relative_to(lab_dir).with_suffix("").as_posix(): p for p in sorted(lab_dir.rglob("*.txt"))}
    check_output_path(out_json, inputs=[*labels.values(), *(p for ps in index.values() for p in ps),
                                        Path(data_yaml)], kind="file", exist_ok=exist_ok)
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
        except UnicodeDecodeError as e:
            errors.append(f"{labels[stem]}: not UTF-8 text (byte {e.start}); save the label file as UTF-8")
            continue
        except OSError as e:
            errors.append(f"{labels[stem]}: cannot read ({e.strerror}); fix the file")
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
# The header names other tools write for each field (compared lower-cased, spaces and dashes as "_"):
# DeepForest ``image_path``, Roboflow's TensorFlow CSV ``filename``/``class``, keras-retinanet ``x1``…
CSV_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "image_path", "imagepath", "image_name", "image_file", "img", "img_path", "img_name",
              "path", "filename", "file_name", "file"),
    "xmin": ("xmin", "x_min", "min_x", "x1", "x0", "left"),
    "ymin": ("ymin", "y_min", "min_y", "y1", "y0", "top"),
    "xmax": ("xmax", "x_max", "max_x", "x2", "right"),
    "ymax": ("ymax", "y_max", "max_y", "y2", "bottom"),
    "label": ("label", "class", "class_name", "classname", "category", "category_name", "cls", "name"),
}
_EXAMPLE = "image=0,xmin=1,ymin=2,xmax=3,ymax=4,label=5"


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def parse_class_names(classes: str | None) -> list[str] | None:
    """``--classes a,b,c`` → the class names in id order; None when not given. The names must be
    distinct and non-empty."""
    names = [c.strip() for c in classes.split(",")] if classes else None
    if names is not None and (not all(names) or len(set(names)) != len(names)):
        raise UserInputError(f"--classes {classes}: give distinct, non-empty names separated by commas")
    return names


def parse_csv_columns(spec: str) -> dict[str, int | str]:
    """``--columns`` (``image=0,xmin=1,…`` or ``image=photo,label=species``) → {field: position or header
    name}; :class:`UserInputError` naming the option for an unknown field, a field or column given twice."""
    out: dict[str, int | str] = {}
    for item in spec.split(","):
        field, eq, ref = (t.strip() for t in item.partition("="))
        field = field.lower()
        if not eq or not ref or field not in CSV_COLUMNS:
            raise UserInputError(f"--columns {spec}: {item.strip()!r} is not FIELD=COLUMN with FIELD one of "
                                 f"{', '.join(CSV_COLUMNS)}; e.g. --columns {_EXAMPLE}")
        if field in out:
            raise UserInputError(f"--columns {spec}: {field} is given twice; give each field once")
        out[field] = int(ref) if ref.isascii() and ref.isdigit() else ref
    refs = [_norm(v) if isinstance(v, str) else v for v in out.values()]
    if len(set(refs)) != len(refs):
        raise UserInputError(f"--columns {spec}: two fields read the same column; give each field its own")
    return out


def _read_csv(src: Path) -> list[tuple[int, list[str]]]:
    """``(line number, cells)`` of each row of a UTF-8 CSV (a BOM is accepted); one-line
    :class:`DataError` for a file that cannot be read, is not UTF-8 text, holds a NUL byte or a
    field over the csv module's limit (128 KiB)."""
    try:
        text = src.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{src}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8") from None
    except OSError as e:
        raise DataError(f"{src}: cannot read ({e.strerror}); pass a CSV file of boxes") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(f"{src} line {line}: holds a NUL byte, so it is not a text CSV (a UTF-16 or binary "
                        "file?); save it as UTF-8 CSV")
    rows: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    try:
        for row in reader:
            rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as e:
        too_long = "field limit" in str(e)
        raise DataError(f"{src} line {start}: " + (
            f"a field is longer than {csv.field_size_limit()} characters (an unclosed quote, or not a CSV of "
            "boxes?); fix the line" if too_long else f"not valid CSV ({e}); fix the line")) from None
    return rows


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _first_row_is_data(row: list[str], pos: dict[str, int]) -> bool:
    """A first row whose xmin…ymax are numbers, or that lists an image file alone, is data, not a header."""
    cells = [row[pos[f]].strip() if pos[f] < len(row) else "" for f in CSV_COLUMNS]
    if all(_is_number(c) for c in cells[1:5]):
        return True
    return not any(cells[1:]) and Path(cells[0]).suffix.lower() in IMAGE_EXTENSIONS


def _header_positions(src: Path, header: list[str], columns: dict[str, int | str]) -> dict[str, int]:
    """{field: position} from a header row: ``columns`` first (a name or a position), then the aliases."""
    names = [_norm(h) for h in header]
    pos: dict[str, int] = {}
    for field in CSV_COLUMNS:
        ref = columns.get(field)
        if isinstance(ref, int):
            if ref >= len(header):
                raise DataError(f"{src}: --columns {field}={ref} but line 1 has {len(header)} columns "
                                f"(0…{len(header) - 1}); fix the position")
            pos[field] = ref
            continue
        wanted = (_norm(ref),) if ref is not None else CSV_ALIASES[field]
        found = [i for i, n in enumerate(names) if n in wanted]
        if len(found) > 1:
            raise DataError(f"{src}: the header has several columns for {field} "
                            f"({', '.join(header[i].strip() for i in found)}); pick one with --columns {field}=NAME")
        if not found:
            what = f"no column {ref!r}" if ref is not None else (
                f"no {field} column (one of {', '.join(CSV_ALIASES[field][:6])}, …)")
            raise DataError(f"{src}: line 1 {','.join(header)[:80]!r} is read as a header and has {what}; name "
                            f"the columns in the header, or pass --columns (all six positions for a file without "
                            f"a header, e.g. {_EXAMPLE})")
        pos[field] = found[0]
    return pos


def _csv_layout(src: Path, first: list[str], columns: dict[str, int | str] | None
                ) -> tuple[dict[str, int], bool, str]:
    """Where each field is: ``({field: position}, has a header, "image=…, xmin=…, …" as read)``."""
    columns = dict(columns or {})
    given = [v for v in columns.values() if isinstance(v, int)]
    complete = len(given) == len(CSV_COLUMNS)
    pos = {f: int(columns[f]) for f in CSV_COLUMNS} if complete else dict(zip(CSV_COLUMNS, range(6)))
    if (complete or not columns) and _first_row_is_data(first, pos):
        return pos, False, ", ".join(f"{f}={pos[f]}" for f in CSV_COLUMNS) + " (no header; 0 = first column)"
    if columns and not complete and all(isinstance(v, int) for v in columns.values()) and _first_row_is_data(
            first, {**pos, **columns}):
        missing = [f for f in CSV_COLUMNS if f not in columns]
        raise DataError(f"{src}: line 1 is data, not a header, so --columns needs all six positions (missing "
                        f"{', '.join(missing)}); e.g. --columns {_EXAMPLE}")
    pos = _header_positions(src, first, columns)
    if len(set(pos.values())) != len(pos):
        read = ", ".join(f"{f}={first[i].strip()}" for f, i in pos.items())
        raise DataError(f"{src}: two fields read the same column ({read}); give each field its own with --columns")
    return pos, True, ", ".join(f"{f}={first[pos[f]].strip()}" for f in CSV_COLUMNS)


def _csv_boxes(src: Path, rows: list[tuple[int, list[str]]], pos: dict[str, int], width: int | None,
               errors: list[str]) -> dict[str, list[tuple[str, float, float, float, float, str]]]:
    """image → its boxes ``(where, x0, y0, x1, y1, label)``, in the order the rows list them."""
    boxes: dict[str, list[tuple[str, float, float, float, float, str]]] = {}
    for n, row in rows:
        if not any(c.strip() for c in row):
            continue
        where = f"{src} line {n}"
        cells = [c.strip() for c in row]
        image, *coords, label = (cells[pos[f]] if pos[f] < len(cells) else "" for f in CSV_COLUMNS)  # short: ""
        if width is not None and any(cells[width:]):
            errors.append(f"{where}: {len(row)} cells, more than the {width} columns of line 1 (a comma in an "
                          f"unquoted file name?), got {','.join(row)[:60]!r}; quote or fix the row")
            continue
        if not image:
            errors.append(f"{where}: no image (column {pos['image']}); give the image's path, got "
                          f"{','.join(row)[:60]!r}")
            continue
        boxes.setdefault(image, [])
        if not any(coords) and not label:  # an image without objects
            continue
        try:
            x0, y0, x1, y1 = (float(v) for v in coords)
        except ValueError:
            errors.append(f"{where}: xmin, ymin, xmax, ymax must be numbers, got {coords}")
            continue
        if not label:
            errors.append(f"{where}: no label (column {pos['label']}); add the class name")
            continue
        boxes[image].append((where, x0, y0, x1, y1, label))
    return boxes


def csv_to_coco(csv_file: str | os.PathLike, images_dir: str | os.PathLike, out_json: str | os.PathLike,
                *, class_names: Sequence[str] | None = None,
                columns: dict[str, int | str] | str | None = None, exist_ok: bool = False) -> dict[str, Any]:
    """A box CSV (module docstring) → one COCO file.

    The columns: ``columns`` (``{field: position or header name}``, or ``--columns``' text), then the
    header's common names (:data:`CSV_ALIASES`); a file whose first row is data (its xmin…ymax are
    numbers) has no header and is read in the order ``image,xmin,ymin,xmax,ymax,label``. The COCO
    dict returned (and written) says which columns were read in ``info.columns``."""
    src, img_dir = Path(csv_file), Path(images_dir)
    if isinstance(columns, str):
        columns = parse_csv_columns(columns)
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: images folder not found; check the path")
    check_output_path(out_json, inputs=[src, img_dir], kind="file", exist_ok=exist_ok)
    rows = [r for r in _read_csv(src) if any(c.strip() for c in r[1])]
    if not rows:
        raise DataError(f"{src}: no rows; add one row per box ({','.join(CSV_COLUMNS)})")
    pos, has_header, read_as = _csv_layout(src, rows[0][1], columns)
    width = len(rows[0][1]) if has_header else (len(CSV_COLUMNS) if not columns else None)
    errors: list[str] = []
    boxes = _csv_boxes(src, rows[1:] if has_header else rows, pos, width, errors)
    names = list(class_names) if class_names else sorted({b[5] for bs in boxes.values() for b in bs})
    cat = {name: i + 1 for i, name in enumerate(names)}
    images, annotations = [], []
    for file_name, items in boxes.items():
        path = img_dir / file_name
        try:
            width_px, height_px = read_image_size(path)
        except DataError as e:
            errors.append(f"{src}: image {file_name!r}: {str(e).partition('; ')[0]}; fix the path or the image")
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "width": width_px, "height": height_px})
        for where, x0, y0, x1, y1, label in items:
            if label not in cat:
                errors.append(f"{where}: class {label!r} is not among --classes ({', '.join(names)}); add it")
                continue
            if _check_box(x0, y0, x1, y1, width_px, height_px, where, errors):
                annotations.append(_annotation(len(annotations) + 1, image_id, cat[label], x0, y0, x1, y1,
                                               width_px, height_px))
    coco = _write_coco(out_json, errors, f"CSV {src}", images, annotations, names,
                       f"converted from CSV {src.name}", f"{src}: no rows; add one row per box "
                       f"({','.join(CSV_COLUMNS)})", extra_info={"columns": read_as})
    return coco
