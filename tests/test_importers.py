"""VOC, YOLO and CSV → COCO: each round-trips a small dataset written here in its format (boxes
equal to 1e-6) and refuses malformed files in one message naming the file and record."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hybridvision.data.importers import csv_to_coco, voc_to_coco, yolo_to_coco
from hybridvision.errors import DataError, UserInputError

NAMES = ["car", "tree"]


def _truth(seed=0):
    """Three images (one without objects) with random boxes: {file: (W, H, [(label, x0, y0, x1, y1)])}."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, (w, h) in enumerate([(64, 48), (80, 80), (50, 70)]):
        boxes = []
        for _ in range(0 if i == 2 else 3):
            x0, y0 = rng.uniform(0, w - 12), rng.uniform(0, h - 12)
            x1, y1 = x0 + rng.uniform(4, w - x0), y0 + rng.uniform(4, h - y0)
            boxes.append((NAMES[int(rng.integers(2))], x0, y0, x1, y1))
        out[f"img{i}.png"] = (w, h, boxes)
    return out


def _images(folder, truth):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (w, h, _) in truth.items():
        Image.new("RGB", (w, h), (90, 90, 90)).save(folder / name)


def _check(coco, truth, integer_corners=False):
    by_file = {im["file_name"]: im for im in coco["images"]}
    assert set(by_file) == set(truth)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for name, (w, h, boxes) in truth.items():
        im = by_file[name]
        assert (im["width"], im["height"]) == (w, h)
        got = sorted((names[a["category_id"]], *a["bbox"]) for a in coco["annotations"] if a["image_id"] == im["id"])
        want = sorted((lab, x0, y0, x1 - x0, y1 - y0) for lab, x0, y0, x1, y1 in boxes)
        assert len(got) == len(want)
        for g, t in zip(got, want):
            assert g[0] == t[0] and np.allclose(g[1:], t[1:], atol=1e-6), (g, t)


def test_voc_round_trip_and_difficult(tmp_path):
    truth = _truth()
    # VOC stores 1-based inclusive pixel indices: integer corners x0 = xmin − 1, x1 = xmax
    truth = {k: (w, h, [(lab, round(a), round(b), round(c), round(d)) for lab, a, b, c, d in bs])
             for k, (w, h, bs) in truth.items()}
    _images(tmp_path / "JPEGImages", truth)
    (tmp_path / "Annotations").mkdir()
    for name, (w, h, boxes) in truth.items():
        objs = "".join(f"<object><name>{lab}</name><difficult>{int(j == 0)}</difficult><bndbox><xmin>{x0 + 1}</xmin>"
                       f"<ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
                       for j, (lab, x0, y0, x1, y1) in enumerate(boxes))
        (tmp_path / "Annotations" / f"{name[:-4]}.xml").write_text(
            f"<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")
    coco = voc_to_coco(tmp_path / "Annotations", tmp_path / "JPEGImages", tmp_path / "ann.json")
    _check(coco, truth)
    assert sum(a["iscrowd"] for a in coco["annotations"]) == 2  # the difficult ones, kept as crowd
    dropped = voc_to_coco(tmp_path / "Annotations", tmp_path / "JPEGImages", tmp_path / "ann2.json",
                          drop_difficult=True)
    assert len(dropped["annotations"]) == 4
    (tmp_path / "Annotations" / "img1.xml").write_text("<annotation><filename>img1.png</filename>"
                                                       "<object><name>car</name><bndbox><xmin>5</xmin></bndbox>"
                                                       "</object></annotation>")
    with pytest.raises(DataError, match=r"img1.xml object 1: <bndbox> needs numeric"):
        voc_to_coco(tmp_path / "Annotations", tmp_path / "JPEGImages", tmp_path / "ann3.json")
    (tmp_path / "Annotations" / "img1.xml").write_text(
        "<annotation><filename>img1.png</filename><object><name>car</name><difficult>maybe</difficult>"
        "<bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    with pytest.raises(DataError, match=r"<difficult> is 'maybe'; use 0 or 1"):
        voc_to_coco(tmp_path / "Annotations", tmp_path / "JPEGImages", tmp_path / "ann4.json")
    with pytest.raises(UserInputError):  # never over an input
        voc_to_coco(tmp_path / "Annotations", tmp_path / "JPEGImages", tmp_path / "Annotations" / "img0.xml")


def test_yolo_round_trip_and_errors(tmp_path):
    truth = _truth(1)
    _images(tmp_path / "images" / "train", truth)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    for name, (w, h, boxes) in truth.items():
        if not boxes:
            continue  # a background image: no label file
        lines = [f"{NAMES.index(lab)} {(x0 + x1) / 2 / w:.10f} {(y0 + y1) / 2 / h:.10f} {(x1 - x0) / w:.10f} "
                 f"{(y1 - y0) / h:.10f}" for lab, x0, y0, x1, y1 in boxes]
        (tmp_path / "labels" / "train" / f"{name[:-4]}.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "data.yaml").write_text("names:\n  0: car\n  1: tree\n")
    coco = yolo_to_coco(tmp_path / "labels", tmp_path / "images", tmp_path / "data.yaml", tmp_path / "ann.json")
    truth = {f"train/{k}": v for k, v in truth.items()}
    _check(coco, truth)
    (tmp_path / "labels" / "train" / "img0.txt").write_text("0 0.5 0.5 0.2\n7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DataError, match=r"(?s)2 problems.*img0.txt line 1: expected 'class cx cy w h'.*line 2: cl"):
        yolo_to_coco(tmp_path / "labels", tmp_path / "images", tmp_path / "data.yaml", tmp_path / "b.json")
    (tmp_path / "bad.yaml").write_text("nc: 2\n")
    with pytest.raises(DataError, match="no 'names' list"):
        yolo_to_coco(tmp_path / "labels", tmp_path / "images", tmp_path / "bad.yaml", tmp_path / "c.json")


def test_csv_round_trip_and_errors(tmp_path):
    truth = _truth(2)
    _images(tmp_path / "img", truth)
    rows = ["image,xmin,ymin,xmax,ymax,label"]
    for name, (_, _, boxes) in truth.items():
        rows += [f"{name},{x0!r},{y0!r},{x1!r},{y1!r},{lab}" for lab, x0, y0, x1, y1 in boxes] or [name]
    (tmp_path / "boxes.csv").write_text("\n".join(rows) + "\n")
    coco = csv_to_coco(tmp_path / "boxes.csv", tmp_path / "img", tmp_path / "ann.json")
    _check(coco, truth)
    (tmp_path / "bad.csv").write_text("image,xmin,ymin,xmax,ymax,label\nimg0.png,1,2,0,9,car\nnope.png,1,1,2,2,car\n")
    with pytest.raises(DataError, match=r"(?s)bad.csv line 2: box .* has no area.*nope.png"):
        csv_to_coco(tmp_path / "bad.csv", tmp_path / "img", tmp_path / "b.json")
    (tmp_path / "nohead.csv").write_text("img0.png,1,2,3,4,car\n")  # no header: read in the default order
    got = csv_to_coco(tmp_path / "nohead.csv", tmp_path / "img", tmp_path / "c.json")
    assert got["annotations"][0]["bbox"] == [1, 2, 2, 2]
    assert got["info"]["columns"].endswith("(no header; 0 = first column)")
    (tmp_path / "other.csv").write_text("photo,a,b,c,d,species\nimg0.png,1,2,3,4,car\n")
    with pytest.raises(DataError, match=r"other.csv: line 1 .* is read as a header and has no image column"):
        csv_to_coco(tmp_path / "other.csv", tmp_path / "img", tmp_path / "d.json")


def test_the_cli_converts_and_refuses_in_one_line(cli, tmp_path):
    truth = _truth(3)
    _images(tmp_path / "img", truth)
    rows = ["image,xmin,ymin,xmax,ymax,label"] + [f"{n},{x0},{y0},{x1},{y1},{lab}"
                                                 for n, (_, _, bs) in truth.items() for lab, x0, y0, x1, y1 in bs]
    (tmp_path / "b.csv").write_text("\n".join(rows) + "\n")
    code, out, _ = cli("data", "convert", "csv", tmp_path / "b.csv", "--images", tmp_path / "img",
                       "--out", tmp_path / "ann.json", "--classes", "car,tree")
    assert code == 0 and "6 boxes" in out and "2 classes" in out
    (tmp_path / "bad.csv").write_text("image,xmin,ymin,xmax,ymax,label\nimg0.png,a,2,3,4,car\n")
    code, out, err = cli("data", "convert", "csv", tmp_path / "bad.csv", "--images", tmp_path / "img",
                         "--out", tmp_path / "x.json")
    assert code == 2 and "bad.csv line 2: xmin, ymin, xmax, ymax must be numbers" in err
    assert "Traceback" not in err and not (tmp_path / "x.json").exists()
