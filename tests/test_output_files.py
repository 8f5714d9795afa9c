"""An existing output file is never replaced without --exist-ok: one rule for every command.

Before: `data convert montos|modanet|voc|yolo|csv --out ann.json` and `explain --out F.png`
replaced an existing file silently (exit 0), and `export` did so at its default path (beside the
weights, or runs/export/MODEL.onnx) even when `--out` would have been refused. Now each refuses
with one line, exit 2, the file byte-identical, and replaces it with `--exist-ok`. `data slice
--overlap` shares `predict --tile-overlap`'s cap.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

import hybridvision
from hybridvision import export
from hybridvision.engine.checkpoint import save_checkpoint
from hybridvision.factory import create_model
from hybridvision.tile_overlap import MAX_TILE_OVERLAP

MINE = b"a file of the user's\n"


def _refused(out: Path) -> str:
    return f"error: --out {out}: the file exists; pass --exist-ok to replace it, or choose another --out\n"


# ------------------------------------------------------------------------------ the inputs
@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """One 40×30 image and the same box in each converter's input format."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "images").mkdir()
    Image.new("RGB", (40, 30), (90, 90, 90)).save(root / "images" / "a.png")
    (root / "montos").mkdir()
    (root / "montos" / "a.txt").write_text("0: 2, 3, 10, 8\n")
    (root / "modanet.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 8], "area": 80,
                         "iscrowd": 0, "segmentation": [[2, 3, 12, 3, 12, 11]]}],
        "categories": [{"id": 1, "name": "bag"}]}))
    (root / "voc").mkdir()
    (root / "voc" / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>40</width><height>30</height></size>"
        "<object><name>tree</name><difficult>0</difficult>"
        "<bndbox><xmin>3</xmin><ymin>4</ymin><xmax>12</xmax><ymax>11</ymax></bndbox></object></annotation>")
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 0.2 0.25 0.25 0.2\n")
    (root / "data.yaml").write_text("names: [tree]\n")
    (root / "boxes.csv").write_text("image,xmin,ymin,xmax,ymax,label\na.png,2,3,12,11,tree\n")
    return root


CONVERTERS: dict[str, Callable[[Path], list]] = {
    "montos": lambda r: ["montos", r / "montos", "--images", r / "images"],
    "modanet": lambda r: ["modanet", r / "modanet.json"],
    "voc": lambda r: ["voc", r / "voc", "--images", r / "images"],
    "yolo": lambda r: ["yolo", r / "labels", "--images", r / "images", "--names", r / "data.yaml"],
    "csv": lambda r: ["csv", r / "boxes.csv", "--images", r / "images"],
}


@pytest.mark.parametrize("fmt", sorted(CONVERTERS))
def test_a_converter_refuses_an_existing_file_and_replaces_it_with_exist_ok(cli, inputs, tmp_path, fmt):
    out = tmp_path / "ann.json"
    out.write_bytes(MINE)
    argv = ["data", "convert", *CONVERTERS[fmt](inputs), "--out", out]
    code, stdout, err = cli(*argv)
    assert (code, stdout, err) == (2, "", _refused(out))
    assert out.read_bytes() == MINE
    code, stdout, err = cli(*argv, "--exist-ok")
    assert code == 0, err
    assert len(json.loads(out.read_text())["annotations"]) == 1 and f"wrote {out}" in stdout
    code, stdout, _ = cli("data", "convert", fmt, "--help")
    assert "--exist-ok" in stdout and "replace an existing output file" in stdout


def test_the_library_converters_refuse_too(inputs, tmp_path):
    from hybridvision.data.converters import modanet_to_coco
    from hybridvision.errors import UserInputError

    out = tmp_path / "ann.json"
    out.write_bytes(MINE)
    with pytest.raises(UserInputError, match="the file exists; pass --exist-ok"):
        modanet_to_coco(inputs / "modanet.json", out)
    assert out.read_bytes() == MINE
    assert len(modanet_to_coco(inputs / "modanet.json", out, exist_ok=True)["annotations"]) == 1


# ------------------------------------------------------------------------------ explain
@pytest.fixture(scope="module")
def nl_weights(tmp_path_factory) -> Path:
    """An untrained NL-FCOS checkpoint with its sidecar (explain needs an attention block)."""
    torch.manual_seed(0)
    net = create_model("nl_fcos_small", num_classes=2)
    return save_checkpoint(tmp_path_factory.mktemp("w"), "best", net, extra={
        "model": "nl_fcos_small", "num_classes": 2, "class_names": ["a", "b"], "label_to_cat_id": [1, 2],
        "image_size": 64, "task": "detection", "config": {"model": "nl_fcos_small", "image_size": 64}})


def test_explain_refuses_an_existing_png_at_out_and_at_its_default_path(cli, inputs, nl_weights, tmp_path,
                                                                         monkeypatch):
    image = inputs / "images" / "a.png"
    out = tmp_path / "attn.png"
    out.write_bytes(MINE)
    argv = ["explain", "--weights", nl_weights, "--image", image, "--point", "5,5"]
    code, stdout, err = cli(*argv, "--out", out)
    assert (code, stdout, err) == (2, "", _refused(out))
    assert out.read_bytes() == MINE
    code, _, err = cli(*argv, "--out", out, "--exist-ok")
    assert code == 0, err
    assert Image.open(out).size == (40, 30)
    # the default path: an earlier picture is kept unless --exist-ok
    monkeypatch.chdir(tmp_path)
    default = Path("runs/explain/a_attn.png")
    default.parent.mkdir(parents=True)
    default.write_bytes(MINE)
    code, _, err = cli(*argv)
    assert code == 2 and err == (f"error: {default} (the default --out): the file exists; pass --exist-ok to "
                                 "replace it, or choose another --out\n")
    assert default.read_bytes() == MINE
    assert cli(*argv, "--exist-ok")[0] == 0 and default.read_bytes() != MINE


# ------------------------------------------------------------------------------- export
@pytest.fixture
def fast_export(monkeypatch):
    """Skip the real ONNX export (seconds): the file rules, not the graph, are under test here."""
    monkeypatch.setattr(export, "_export_bytes", lambda *a, **k: b"onnx")
    monkeypatch.setattr(export, "_onnx_opset", lambda b: None)


def test_export_refuses_an_earlier_export_before_printing_or_working(cli, nl_weights, tmp_path, fast_export,
                                                                      monkeypatch):
    w = tmp_path / "best.safetensors"
    w.write_bytes(nl_weights.read_bytes())
    w.with_suffix(".json").write_bytes(nl_weights.with_suffix(".json").read_bytes())
    earlier = w.with_suffix(".onnx")  # the default path: beside the weights
    earlier.write_bytes(MINE)
    loads = []
    monkeypatch.setattr("hybridvision.cli.load_trained", lambda *a, **k: loads.append(a) or 1 / 0)
    code, stdout, err = cli("export", "--weights", w, "--no-check")
    assert code == 2 and stdout == "" and loads == []  # no "exporting … →" line, nothing loaded
    assert err == (f"error: {earlier} (the default --out): the file exists; pass --exist-ok to replace it, "
                   "or choose another --out\n")
    assert earlier.read_bytes() == MINE
    # an explicit --out: the same rule, and the .json beside it counts as well
    out = tmp_path / "m.onnx"
    Path(f"{out}.json").write_bytes(MINE)
    code, stdout, err = cli("export", "--weights", w, "--out", out, "--no-check")
    assert (code, stdout, err) == (2, "", _refused(Path(f"{out}.json")))
    assert Path(f"{out}.json").read_bytes() == MINE and not out.exists()


def test_export_replaces_with_exist_ok_at_out_and_default_paths(cli, tmp_path, fast_export, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = Path("runs/export/fcos_demo.onnx")
    default.parent.mkdir(parents=True)
    default.write_bytes(MINE)
    argv = ["export", "--model", "fcos_demo", "--size", "64", "--no-check"]
    code, stdout, err = cli(*argv)
    assert code == 2 and stdout == "" and f"{default} (the default --out): the file exists" in err
    assert default.read_bytes() == MINE
    code, stdout, err = cli(*argv, "--exist-ok")
    assert code == 0, err
    assert default.read_bytes() == b"onnx" and "exporting fcos_demo" in stdout
    assert json.loads(Path(f"{default}.json").read_text())["model"] == "fcos_demo"
    out = tmp_path / "m.onnx"
    out.write_bytes(MINE)
    assert cli(*argv, "--out", out) == (2, "", _refused(out)) and out.read_bytes() == MINE
    assert cli(*argv, "--out", out, "--exist-ok")[0] == 0 and out.read_bytes() == b"onnx"
    assert "replace an existing output file" in cli("export", "--help")[1]


def test_export_of_an_unknown_model_or_missing_weights_names_that_first(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("export", "--model", "no_such_model")
    assert code == 2 and "no_such_model" in err and "the file exists" not in err
    code, _, err = cli("export", "--weights", tmp_path / "missing" / "w.safetensors")
    assert code == 2 and "weights file not found" in err


# -------------------------------------------------------------------------- data slice --overlap
@pytest.mark.parametrize("overlap", ["0.95", "0.999"])
def test_slice_overlap_has_the_tile_overlap_cap(cli, tmp_path, overlap):
    """Before: --overlap up to 1 - 1/size was accepted (at --size 4096, 0.999 cut a tile every 4 px)."""
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    code, _, err = cli("data", "slice", ann, "--images", tmp_path, "--size", "4096", "--overlap", overlap,
                       "--out", tmp_path / "tiles")
    assert code == 2 and err == (f"error: --overlap {overlap}: use a fraction of a tile in [0, "
                                 f"{MAX_TILE_OVERLAP:g}] (more overlap multiplies the tiles without a gain), "
                                 "e.g. 0.5 or 0.2\n")
    assert not (tmp_path / "tiles").exists()


def test_data_imports_the_cap_without_importing_the_engine():
    """The cap lives in a leaf both use: data sits below the engine and must not import it."""
    root = Path(hybridvision.__file__).parent
    for module in ("data/slicing.py", "tile_overlap.py"):
        tree = ast.parse((root / module).read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(str(n).startswith("hybridvision.engine") for n in names), module
    from hybridvision.engine import tiling

    assert tiling.MAX_TILE_OVERLAP is MAX_TILE_OVERLAP
