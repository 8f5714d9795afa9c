"""`hybridvision data convert modanet`: ModaNet's instance file (COCO-like, with polygons) → COCO
boxes, on a file written here in ModaNet's layout."""

from __future__ import annotations

import json

from hybridvision.data.converters import MODANET_CATEGORIES


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
