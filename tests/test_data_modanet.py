"""`hybridvision data convert modanet`: ModaNet's instance file (COCO-like, with polygons) → COCO
boxes, on a file written here in ModaNet's layout."""

from __future__ import annotations

import json

import pytest

from hybridvision.data.converters import MODANET_CATEGORIES, modanet_to_coco


def _modanet(path, extra_annotation=None):
    cats = [{"id": k + 1, "name": n, "supercategory": "fashion"} for k, n in enumerate(MODANET_CATEGORIES)]
    images = [{"file_name": "0000002.jpg", "id": 2, "width": 400, "height": 600, "license": 3},
              {"file_name": "0000007.jpg", "id": 7, "width": 400, "height": 600, "license": 3}]
    anns = [
        {"id": 1, "image_id": 2, "category_id": 9, "bbox": [101.5, 140, 160, 200.25], "area": 20000.0,
         "iscrowd": 0, "segmentation": [[101.5, 140, 261.5, 140, 261.5, 340.25]]},
        {"id": 2, "image_id": 2, "category_id": 4, "bbox": [350, 560, 80, 60], "area": 4800, "iscrowd": 0,
         "segmentation": [[350, 560, 430, 620, 350, 620]]},  # reaches outside the image: clipped
        {"id": 3, "image_id": 7, "category_id": 1, "bbox": [410, 20, 30, 30], "area": 900, "iscrowd": 0,
         "segmentation": [[410, 20, 440, 50, 410, 50]]},  # wholly outside: dropped
    ]
    if extra_annotation:
        anns.append(extra_annotation)
    path.write_text(json.dumps({"info": {}, "licenses": [], "year": 2018, "type": "instances",
                                "images": images, "annotations": anns, "categories": cats}))
    return path


def test_convert_modanet_to_coco_boxes(cli, tmp_path):
    src = _modanet(tmp_path / "modanet2018_instances_train.json")
    out = tmp_path / "coco" / "train.json"
    code, stdout, err = cli("data", "convert", "modanet", src, "--out", out)
    assert code == 0, err
    assert "2 images, 2 boxes" in stdout and "1 without area" in stdout
    coco = json.loads(out.read_text())
    assert [c["name"] for c in coco["categories"]] == list(MODANET_CATEGORIES) and len(coco["categories"]) == 13
    a, b = coco["annotations"]
    assert a["bbox"] == [101.5, 140, 160, 200.25] and "segmentation" not in a and a["category_id"] == 9
    assert b["bbox"] == [350, 560, 50, 40] and b["area"] == 2000  # clipped to 400 × 600
    code, _, err = cli("data", "check", out, "--images", tmp_path, "--no-images")
    assert code == 0, err


def test_convert_modanet_refuses_a_foreign_category_and_writes_nothing(cli, tmp_path):
    src = _modanet(tmp_path / "m.json", {"id": 9, "image_id": 2, "category_id": 14, "bbox": [1, 1, 5, 5]})
    code, _, err = cli("data", "convert", "modanet", src, "--out", tmp_path / "out.json")
    assert code == 2 and "category_id 14 is not a ModaNet category" in err and "Traceback" not in err
    assert not (tmp_path / "out.json").exists()
    code, _, err = cli("data", "convert", "modanet", src, "--out", src)  # never over its input
    assert code == 2 and json.loads(src.read_text())["annotations"][-1]["category_id"] == 14


def _edited(path, edit):
    """A ModaNet file written here, then changed by ``edit(data)``; returns its path."""
    _modanet(path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))  # json.dumps writes NaN / Infinity as Python does
    return path


def _set(where, i, key, value):
    return lambda d: d[where][i].__setitem__(key, value)


@pytest.mark.parametrize("edit, message", [
    (_set("annotations", 0, "id", "a1"), "annotations[0]: id 'a1' is not an integer"),
    (_set("annotations", 0, "image_id", "2"), "annotations[0]: image_id '2' is not an integer"),
    (_set("images", 0, "id", "x"), "images[0]: id 'x' is not an integer"),
    (_set("annotations", 0, "iscrowd", "yes"), "annotations[0]: iscrowd 'yes' is not 0 or 1"),
    (_set("annotations", 1, "iscrowd", 2), "annotations[1]: iscrowd 2 is not 0 or 1"),
    (lambda d: d.__setitem__("categories", 5), "categories: is int, not a list of {id, name}"),
    (lambda d: d.__setitem__("categories", {"1": "bag"}), "categories: is dict, not a list"),
    (lambda d: d["categories"].__setitem__(0, {"id": "one", "name": "bag"}), "categories[0]: id 'one' is not"),
    (_set("annotations", 0, "bbox", [float("nan"), 140, 160, 200]), "annotations[0]: bbox value nan is not a fin"),
    (_set("annotations", 0, "bbox", [1, 1, float("inf"), 2]), "annotations[0]: bbox value inf is not a finite"),
    (_set("annotations", 0, "bbox", "1234"), "annotations[0]: bbox '1234' is not [x, y, w, h]"),
    (_set("annotations", 0, "segmentation", [[float("nan"), 1, 2, 3, 4, 5]]), "annotations[0]: segmentation is"),
    (_set("images", 1, "file_name", None), "images[1]: file_name None is not an image file name"),
    (_set("images", 1, "width", float("inf")), "images[1]: width inf is not an integer"),
    (_set("images", 1, "height", 0), "images[1]: size 400×0 is not positive"),
    (_set("images", 1, "id", 2), "images[1]: id 2 is used by another image"),
    (_set("annotations", 1, "id", 1), "annotations[1]: id 1 is used by another annotation"),
    (lambda d: d["annotations"].__setitem__(0, 7), "annotations[0]: is int, not an object"),
])
def test_convert_modanet_refuses_wrong_types_and_non_finite_numbers(cli, tmp_path, edit, message):
    src = _edited(tmp_path / "m.json", edit)
    before = src.read_bytes()
    code, _, err = cli("data", "convert", "modanet", src, "--out", tmp_path / "out.json")
    assert code == 2 and f"error: {src}: {message}" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.json").exists() and src.read_bytes() == before


def test_convert_modanet_writes_strict_json_and_fills_missing_ids(tmp_path):
    def edit(d):
        del d["annotations"][1]["id"]  # gets one after the largest id given
        d["annotations"][0]["iscrowd"] = None  # ModaNet's null: not a crowd
        d["images"][0]["width"] = 400.0  # an integral float is an integer
        del d["categories"]  # ModaNet's own names
    src = _edited(tmp_path / "m.json", edit)
    coco = modanet_to_coco(src, tmp_path / "out.json")
    strict = json.loads((tmp_path / "out.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} written"))
    assert strict == coco and [a["id"] for a in coco["annotations"]] == [1, 2]
    assert coco["annotations"][0]["iscrowd"] == 0 and coco["images"][0]["width"] == 400
    assert isinstance(coco["images"][0]["width"], int) and coco["categories"][0]["name"] == "bag"
