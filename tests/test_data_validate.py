"""check_coco: every malformed case gives exactly one finding naming the right record, with a fix;
CocoDetection turns findings into one DataError."""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from hybridvision.data import CocoDetection, check_coco
from hybridvision.data.validate import BOX_TOLERANCE, Finding, format_findings
from hybridvision.errors import DataError, UserInputError


def _valid() -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 32, "height": 24},
            {"id": 2, "file_name": "b.png", "width": 20, "height": 20},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12], "area": 120, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [20, 4, 12, 20], "area": 240, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}],
    }


@pytest.fixture()
def root(tmp_path) -> Path:
    (tmp_path / "img").mkdir()
    rng = np.random.default_rng(0)
    for name, (w, h) in (("a.png", (32, 24)), ("b.png", (20, 20))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "img" / name)
    return tmp_path


def _write(root: Path, coco) -> Path:
    p = root / "ann.json"
    p.write_text(coco if isinstance(coco, str) else json.dumps(coco))
    return p


def test_valid_dataset_has_no_findings(root):
    assert check_coco(_write(root, _valid()), root / "img") == []
    # Tolerance: a box may overshoot its image by up to BOX_TOLERANCE px per side.
    coco = _valid()
    coco["annotations"][0]["bbox"] = [-BOX_TOLERANCE, -0.5, 32 + BOX_TOLERANCE, 24]
    assert check_coco(_write(root, coco), root / "img") == []
    assert len(CocoDetection(root / "ann.json", root / "img")) == 2


def _ann(i: int, **kw) -> Callable[[dict], None]:
    def f(c: dict) -> None:
        c["annotations"][i].update(kw)

    return f


def _delete(section: str, i: int, key: str) -> Callable[[dict], None]:
    def f(c: dict) -> None:
        del c[section][i][key]

    return f


def _drop_top(key: str) -> Callable[[dict], None]:
    return lambda c: c.pop(key)


def _dup(section: str, i: int) -> Callable[[dict], None]:
    def f(c: dict) -> None:
        c[section].append(dict(c[section][i]))

    return f


def _file(name: str, data: bytes | None) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        p = root / "img" / name
        if data is None:
            p.unlink()
        else:
            p.write_bytes(data)

    return f


def _truncate(name: str) -> Callable[[Path], None]:
    def f(root: Path) -> None:
        p = root / "img" / name
        p.write_bytes(p.read_bytes()[:-40])

    return f


# (case id, JSON mutation, file mutation, expected record, expected words in the problem, finding
# names the image file rather than the annotation file)
CASES = [
    ("missing-images", _drop_top("images"), None, "file", "'images'", False),
    ("missing-annotations", _drop_top("annotations"), None, "file", "'annotations'", False),
    ("missing-categories", _drop_top("categories"), None, "file", "'categories'", False),
    ("ann-missing-bbox", _delete("annotations", 1, "bbox"), None, "annotation id=2", "bbox", False),
    ("ann-missing-category", _delete("annotations", 0, "category_id"), None, "annotation id=1", "category_id", False),
    ("image-missing-file_name", _delete("images", 1, "file_name"), None, "image id=2", "file_name", False),
    ("category-missing-name", _delete("categories", 0, "name"), None, "category id=1", "name", False),
    ("bbox-3-numbers", _ann(0, bbox=[1, 2, 3]), None, "annotation id=1", "not 4 finite numbers", False),
    ("bbox-string", _ann(1, bbox=[1, "2", 3, 4]), None, "annotation id=2", "not 4 finite numbers", False),
    ("bbox-nan", _ann(1, bbox=[1, 2, float("nan"), 4]), None, "annotation id=2", "not 4 finite numbers", False),
    ("bbox-inf", _ann(0, bbox=[1, 2, 3, float("inf")]), None, "annotation id=1", "not 4 finite numbers", False),
    ("bbox-null", _ann(0, bbox=None), None, "annotation id=1", "not 4 finite numbers", False),
    ("annotation-id-not-int", _ann(0, id=[1]), None, "annotation #0 (no id)", "not an integer", False),
    ("zero-width", _ann(0, bbox=[1, 2, 0, 5]), None, "annotation id=1", "zero or negative", False),
    ("negative-height", _ann(1, bbox=[1, 2, 3, -5]), None, "annotation id=2", "zero or negative", False),
    ("outside-right", _ann(0, bbox=[25, 2, 8.5, 5]), None, "annotation id=1", "outside", False),
    ("outside-top", _ann(1, bbox=[2, -1.5, 3, 5]), None, "annotation id=2", "outside", False),
    ("outside-bottom", _ann(2, bbox=[0, 0, 20, 21.5]), None, "annotation id=3", "outside", False),
    ("unknown-category", _ann(1, category_id=9), None, "annotation id=2", "unknown category_id 9", False),
    ("unknown-image", _ann(0, image_id=77), None, "annotation id=1", "image_id 77", False),
    ("duplicate-image-id", _dup("images", 0), None, "image id=1", "duplicate image id", False),
    ("duplicate-annotation-id", _dup("annotations", 2), None, "annotation id=3", "duplicate annotation id", False),
    ("duplicate-category-id", _dup("categories", 1), None, "category id=2", "duplicate category id", False),
    ("image-file-missing", None, _file("b.png", None), "image id=2", "not found", True),
    ("image-not-an-image", None, _file("a.png", b"this is not a png"), "image id=1", "cannot be decoded", True),
    ("image-truncated", None, _truncate("b.png"), "image id=2", "cannot be decoded", True),
    ("image-size-mismatch", lambda c: c["images"][1].update(height=22), None, "image id=2", "20x20", True),
    # before: accepted by data check and eval (the AP silently changed)
    ("negative-area", _ann(0, area=-5), None, "annotation id=1", "area -5", False),
    ("iscrowd-string", _ann(1, iscrowd="no"), None, "annotation id=2", "iscrowd 'no'", False),
    ("no-images", lambda c: c.update(images=[], annotations=[]), None, "file", "no images", False),
]


@pytest.mark.parametrize("name, mutate, mutate_files, record, words, on_image", CASES, ids=[c[0] for c in CASES])
def test_each_malformed_case_gives_one_finding(root, name, mutate, mutate_files, record, words, on_image):
    coco = _valid()
    if mutate is not None:
        mutate(coco)
    ann = _write(root, coco)
    if mutate_files is not None:
        mutate_files(root)
    findings = check_coco(ann, root / "img")
    assert len(findings) == 1, [str(f) for f in findings]
    f = findings[0]
    assert isinstance(f, Finding)
    assert f.record == record
    assert words in f.problem
    assert f.fix.strip()
    assert f.file == (str(root / "img" / ("b.png" if "b.png" in str(f.file) else "a.png")) if on_image else str(ann))
    line = str(f)
    assert "\n" not in line and record in line and f.fix in line
    # The dataset refuses to load, with one DataError (count line + the finding), not a traceback.
    with pytest.raises(DataError) as e:
        CocoDetection(ann, root / "img")
    msg = str(e.value).splitlines()
    assert msg[0].startswith(f"{ann}: 1 problem found") and msg[1].strip() == f"- {line}"
    assert isinstance(e.value, UserInputError) and e.value.findings == [line]


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "top level is a list"),
        ('{"images": {}, "annotations": [], "categories": [{"id": 1, "name": "x"}]}', "not a list"),
    ],
    ids=["file-not-found", "not-json", "not-an-object", "images-not-a-list"],
)
def test_file_level_problems(root, content, words):
    ann = root / "ann.json" if content is None else _write(root, content)
    findings = check_coco(ann, root / "img")
    assert len(findings) == 1 and findings[0].record == "file" and words in findings[0].problem
    assert findings[0].fix
    with pytest.raises(DataError, match=words):
        CocoDetection(ann, root / "img")


def test_record_without_id_named_by_position(root):
    coco = _valid()
    del coco["annotations"][1]["id"]
    findings = check_coco(_write(root, coco), root / "img")
    assert [f.record for f in findings] == ["annotation #1 (no id)"]


def test_image_checks_can_be_skipped(root):
    (root / "img" / "a.png").unlink()
    ann = _write(root, _valid())
    assert check_coco(ann, root / "img", check_images=False) == []
    assert len(check_coco(ann, root / "img")) == 1


def test_many_findings_listed_with_count(root):
    coco = _valid()
    for i in range(3):
        coco["annotations"][i]["category_id"] = 50 + i
    coco["images"][0]["width"] = -1
    findings = check_coco(_write(root, coco), root / "img", check_images=False)
    assert len(findings) == 4
    msg = format_findings(findings, what="ann.json", limit=2).splitlines()
    assert msg[0] == "ann.json: 4 problems found (first 2 shown)" and len(msg) == 3
