"""Annotation files as other tools write them (issue 24), through `hybridvision data convert`:
a Pascal VOC XML naming ``X.tif`` beside ``X.png``; the CSV layouts of DeepForest
(``image_path,…,label``), keras-retinanet (no header, ``path,x1,y1,x2,y2,class_name``) and Roboflow
(``filename,width,height,class,…``); and the bad inputs of the importers (NUL bytes, a field over
128 KiB, files that are not UTF-8, NaN and infinity), each one line and exit 2, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hybridvision.data.importers import csv_to_coco, parse_csv_columns, voc_to_coco
from hybridvision.data.sbir import read_bimodal
from hybridvision.errors import DataError, UserInputError

SIZES = {"tile_a.png": (64, 48), "tile_b.png": (80, 70), "empty.png": (40, 30)}


def _truth(seed: int, integer: bool = False) -> dict[str, tuple[int, int, list[tuple[str, float, ...]]]]:
    """{file: (W, H, [(label, x0, y0, x1, y1)])}; the last image has no objects."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (w, h) in SIZES.items():
        boxes = []
        for _ in range(0 if name == "empty.png" else 4):
            x0, y0 = rng.uniform(0, w - 12), rng.uniform(0, h - 12)
            x1, y1 = x0 + rng.uniform(3, w - x0), y0 + rng.uniform(3, h - y0)
            if integer:
                x0, y0, x1, y1 = (float(round(v)) for v in (x0, y0, x1, y1))
            boxes.append((["Tree", "Snag"][int(rng.integers(2))], x0, y0, x1, y1))
        out[name] = (w, h, boxes)
    return out


def _images(folder, truth):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (w, h, _) in truth.items():
        Image.new("RGB", (w, h), (90, 120, 60)).save(folder / name)


def _check(coco, truth):
    """Every image of ``truth`` with its size and its boxes (to 1e-6); nothing else."""
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


# ---------------------------------------------------------------------------------------- VOC
def _voc_xml(filename: str, w: int, h: int, boxes) -> str:
    """An XML as labelImg / DeepForest write it (folder, path, source, pose, truncated …)."""
    objs = "".join(
        f"<object><name>{lab}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{int(x0) + 1}</xmin><ymin>{int(y0) + 1}</ymin><xmax>{int(x1)}</xmax><ymax>{int(y1)}</ymax>"
        f"</bndbox></object>" for lab, x0, y0, x1, y1 in boxes)
    return (f"<annotation><folder>images</folder><filename>{filename}</filename><path>/data/{filename}</path>"
            f"<source><database>Unknown</database></source><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size><segmented>0</segmented>{objs}</annotation>")


def test_voc_exact_file_name_wins_over_a_shared_stem(cli, tmp_path):
    truth = _truth(0, integer=True)
    tif = {"X.tif": truth["tile_a.png"]}  # the annotated image is X.tif; X.png (another size) shares its stem
    _images(tmp_path / "images", tif)
    Image.new("RGB", (20, 20)).save(tmp_path / "images" / "X.png")
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "X.xml").write_text(_voc_xml("X.tif", *tif["X.tif"]))
    code, out, err = cli("data", "convert", "voc", tmp_path / "ann", "--images", tmp_path / "images",
                         "--out", tmp_path / "coco.json")
    assert code == 0, err
    assert f"wrote {tmp_path / 'coco.json'}: 1 images, 4 boxes" in out
    _check(json.loads((tmp_path / "coco.json").read_text()), tif)
    # no exact name: the stem decides, and two files sharing it stay an error naming both
    (tmp_path / "ann" / "X.xml").write_text(_voc_xml("X.jpg", *tif["X.tif"]))
    code, _, err = cli("data", "convert", "voc", tmp_path / "ann", "--images", tmp_path / "images",
                       "--out", tmp_path / "coco2.json")
    assert code == 2 and "'X.jpg' matches several files (X.png, X.tif)" in err and "Traceback" not in err
    assert not (tmp_path / "coco2.json").exists()
    (tmp_path / "images" / "X.png").unlink()
    assert voc_to_coco(tmp_path / "ann", tmp_path / "images", tmp_path / "coco3.json")["images"][0][
        "file_name"] == "X.tif"


def test_voc_refuses_two_files_for_one_image_and_an_infinite_size(tmp_path):
    truth = _truth(1, integer=True)
    _images(tmp_path / "images", truth)
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.xml").write_text(_voc_xml("tile_a.png", *truth["tile_a.png"]))
    (tmp_path / "ann" / "b.xml").write_text(_voc_xml("tile_a.png", *truth["tile_a.png"]))
    with pytest.raises(DataError, match=r"b.xml: image 'tile_a.png' is already named by a.xml"):
        voc_to_coco(tmp_path / "ann", tmp_path / "images", tmp_path / "c.json")
    xml = _voc_xml("tile_b.png", 1, 1, []).replace("<width>1</width>", "<width>inf</width>")
    (tmp_path / "ann" / "b.xml").write_text(xml)
    with pytest.raises(DataError, match=r"b.xml: <size> width/height 'inf', '1' are not numbers"):
        voc_to_coco(tmp_path / "ann", tmp_path / "images", tmp_path / "c.json")


# ---------------------------------------------------------------------------------------- CSV
def _rows(truth, fmt, empty):
    rows = []
    for name, (w, h, boxes) in truth.items():
        rows += [fmt(name, w, h, lab, x0, y0, x1, y1) for lab, x0, y0, x1, y1 in boxes] or [empty(name, w, h)]
    return rows


def test_csv_deepforest_header_through_the_cli(cli, tmp_path):
    truth = _truth(2)
    _images(tmp_path / "img", truth)
    rows = ["image_path,xmin,ymin,xmax,ymax,label"] + _rows(
        truth, lambda n, w, h, lab, a, b, c, d: f"{n},{a!r},{b!r},{c!r},{d!r},{lab}", lambda n, w, h: n)
    (tmp_path / "trees.csv").write_text("\n".join(rows) + "\n")
    code, out, err = cli("data", "convert", "csv", tmp_path / "trees.csv", "--images", tmp_path / "img",
                         "--out", tmp_path / "coco.json")
    assert code == 0, err
    assert "columns: image=image_path, xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax, label=label" in out
    _check(json.loads((tmp_path / "coco.json").read_text()), truth)


def test_csv_keras_retinanet_without_a_header_through_the_cli(cli, tmp_path):
    truth = _truth(3)
    _images(tmp_path / "img", truth)
    rows = _rows(truth, lambda n, w, h, lab, a, b, c, d: f"{n},{a!r},{b!r},{c!r},{d!r},{lab}",
                 lambda n, w, h: f"{n},,,,,")  # keras-retinanet's negative image: path,,,,,
    (tmp_path / "annotations.csv").write_text("\r\n".join(rows) + "\r\n")  # as Windows tools write it
    code, out, err = cli("data", "convert", "csv", tmp_path / "annotations.csv", "--images", tmp_path / "img",
                         "--out", tmp_path / "coco.json")
    assert code == 0, err
    assert "columns: image=0, xmin=1, ymin=2, xmax=3, ymax=4, label=5 (no header" in out
    _check(json.loads((tmp_path / "coco.json").read_text()), truth)
    # another order, by position
    rows = _rows(truth, lambda n, w, h, lab, a, b, c, d: f"{lab},{n},{a!r},{b!r},{c!r},{d!r}", lambda n, w, h: f",{n}")
    (tmp_path / "reordered.csv").write_text("\n".join(rows) + "\n")
    code, out, err = cli("data", "convert", "csv", tmp_path / "reordered.csv", "--images", tmp_path / "img",
                         "--out", tmp_path / "coco2.json", "--columns", "label=0,image=1,xmin=2,ymin=3,xmax=4,ymax=5")
    assert code == 0, err
    assert "columns: image=1, xmin=2, ymin=3, xmax=4, ymax=5, label=0 (no header" in out
    _check(json.loads((tmp_path / "coco2.json").read_text()), truth)


def test_csv_roboflow_and_named_columns(tmp_path):
    truth = _truth(4)
    _images(tmp_path / "img", truth)
    rows = ["Filename,Width,Height,Class,XMin,YMin,XMax,YMax"] + _rows(  # another order, extra columns, any case
        truth, lambda n, w, h, lab, a, b, c, d: f"{n},{w},{h},{lab},{a!r},{b!r},{c!r},{d!r}",
        lambda n, w, h: f"{n},{w},{h},,,,,")
    (tmp_path / "_annotations.csv").write_text("\n".join(rows) + "\n")
    coco = csv_to_coco(tmp_path / "_annotations.csv", tmp_path / "img", tmp_path / "a.json")
    _check(coco, truth)
    assert coco["info"]["columns"] == "image=Filename, xmin=XMin, ymin=YMin, xmax=XMax, ymax=YMax, label=Class"
    rows = ["photo,left_px,top_px,right_px,bottom_px,species"] + _rows(
        truth, lambda n, w, h, lab, a, b, c, d: f"{n},{a!r},{b!r},{c!r},{d!r},{lab}", lambda n, w, h: n)
    (tmp_path / "own.csv").write_text("\n".join(rows) + "\n")
    spec = "image=photo,xmin=left_px,ymin=top_px,xmax=right_px,ymax=bottom_px,label=species"
    _check(csv_to_coco(tmp_path / "own.csv", tmp_path / "img", tmp_path / "b.json", columns=spec), truth)
    with pytest.raises(DataError, match=r"own.csv: line 1 .* has no column 'kind'"):
        csv_to_coco(tmp_path / "own.csv", tmp_path / "img", tmp_path / "c.json",
                    columns=spec.replace("species", "kind"))
    (tmp_path / "twice.csv").write_text("image,x0,y0,x1,y1,xmin,label\n")
    with pytest.raises(DataError, match=r"several columns for xmin \(x0, x1, xmin\); pick one with --columns"):
        csv_to_coco(tmp_path / "twice.csv", tmp_path / "img", tmp_path / "d.json")


@pytest.mark.parametrize("spec, message", [
    ("img=0", "'img=0' is not FIELD=COLUMN"), ("image=0,image=1", "image is given twice"),
    ("image=0,xmin=0", "two fields read the same column"), ("image", "'image' is not FIELD=COLUMN")])
def test_csv_columns_option_is_checked(spec, message):
    with pytest.raises(UserInputError, match=message):
        parse_csv_columns(spec)


def test_csv_partial_positions_on_a_headerless_file(cli, tmp_path):
    _images(tmp_path / "img", _truth(5))
    (tmp_path / "b.csv").write_text("tile_a.png,1,2,3,4,Tree\n")
    code, _, err = cli("data", "convert", "csv", tmp_path / "b.csv", "--images", tmp_path / "img",
                       "--out", tmp_path / "o.json", "--columns", "image=0,xmin=1")
    assert code == 2 and "line 1 is data, not a header, so --columns needs all six positions (missing ymin" in err


def _refused(cli, tmp_path, src, *extra, names=None):
    """``data convert csv|yolo`` on ``src``: (stderr) after checking exit 2, one line, nothing written."""
    args = (["yolo", tmp_path / "labels", "--names", names] if names else ["csv", src])
    code, out, err = cli("data", "convert", *args, "--images", tmp_path / "img", "--out", tmp_path / "o.json",
                         *extra)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err, (code, err)
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o.json").exists()
    return err


def test_csv_bad_inputs_end_in_one_line(cli, tmp_path):
    _images(tmp_path / "img", _truth(6))
    nul = tmp_path / "nul.csv"  # as a UTF-16 export without a BOM reads: every other byte NUL
    nul.write_bytes(b"image,xmin,ymin,xmax,ymax,label\ntile_a.png,1,2,3,4,Tree\n" + "tile_b.png,1,2,3,4,Tree\n"
                    .encode("utf-16-le"))
    assert "nul.csv line 3: holds a NUL byte" in _refused(cli, tmp_path, nul)
    big = tmp_path / "big.csv"
    big.write_text("image,xmin,ymin,xmax,ymax,label\ntile_a.png,1,2,3,4," + "T" * 140_000 + "\n")
    assert "big.csv line 2: a field is longer than 131072 characters" in _refused(cli, tmp_path, big)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("image,xmin,ymin,xmax,ymax,label\ntile_a.png,1,2,3,4,Épicéa\n".encode("latin-1"))
    assert "latin.csv: not UTF-8 text (byte" in _refused(cli, tmp_path, latin)
    nan = tmp_path / "nan.csv"
    nan.write_text("tile_a.png,nan,2,3,4,Tree\n")
    assert "nan.csv line 1: coordinates must be finite numbers" in _refused(cli, tmp_path, nan)
    wide = tmp_path / "wide.csv"
    wide.write_text("tile_a.png,1,2,3,4,Tree\ntile_b.png,1,2,3,4,Tree,extra\n")
    assert "wide.csv line 2: 7 cells, more than the 6 columns" in _refused(cli, tmp_path, wide)
    assert "wide.csv: line 1 'tile_a.png,1,2,3,4,Tree' is read as a header and has no column 'x'" in _refused(
        cli, tmp_path, wide, "--columns", "image=0,xmin=x")
    assert tmp_path.joinpath("nul.csv").read_bytes().startswith(b"image,")  # the inputs untouched


def test_yolo_data_yaml_not_utf8_or_with_doubled_names(cli, tmp_path):
    _images(tmp_path / "img", _truth(7))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "tile_a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_bytes("names: [épicéa, pin]\n".encode("latin-1"))
    err = _refused(cli, tmp_path, None, names=tmp_path / "data.yaml")
    assert "data.yaml: not UTF-8 text (byte 8); save data.yaml as UTF-8" in err
    (tmp_path / "data.yaml").write_text("names: [pin, pin]\n")
    assert "'names' lists 'pin' more than once" in _refused(cli, tmp_path, None, names=tmp_path / "data.yaml")
    (tmp_path / "data.yaml").write_text("names: [épicéa, pin]\n", encoding="utf-8-sig")  # a BOM is fine
    code, out, err = cli("data", "convert", "yolo", tmp_path / "labels", "--names", tmp_path / "data.yaml",
                         "--images", tmp_path / "img", "--out", tmp_path / "o.json")
    assert code == 0 and "épicéa" in out, err
    (tmp_path / "o.json").unlink()
    (tmp_path / "labels" / "tile_b.txt").write_bytes("0 0.5 0.5 0.2 0.2 é\n".encode("latin-1"))
    err = _refused(cli, tmp_path, None, names=tmp_path / "data.yaml")
    assert "tile_b.txt: not UTF-8 text (byte 18); save the label file as UTF-8" in err


def test_sbir_unseen_list_not_utf8(tmp_path):
    for side in ("sk", "ph"):
        for cls in ("owl", "épicéa"):
            (tmp_path / side / cls).mkdir(parents=True)
            Image.new("RGB", (16, 16)).save(tmp_path / side / cls / "0.png")
    (tmp_path / "unseen.txt").write_bytes("épicéa\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"unseen.txt: the zero-shot class list is not UTF-8 text \(byte 0\)"):
        read_bimodal(tmp_path / "sk", tmp_path / "ph", tmp_path / "unseen.txt")
    (tmp_path / "unseen.txt").write_text("épicéa\n")
    assert read_bimodal(tmp_path / "sk", tmp_path / "ph", tmp_path / "unseen.txt").unseen == ["épicéa"]
