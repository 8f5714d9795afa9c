"""What eval, predict, explain and export write, and where they refuse to write: honest image
counts, true COCO results from predict, outputs that never replace an input, one-line errors for
a classifier in explain, a missing CUDA device and an unsupported ONNX opset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from image_files import bomb_png
from hybridvision.engine.checkpoint import save_checkpoint
from hybridvision.factory import create_model

DIGITS = [str(d) for d in range(10)]


def _one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _checkpoint(folder: Path, model: str, task: str, num_classes: int, **model_kwargs) -> Path:
    """An untrained checkpoint with the sidecar `hybridvision train` writes (no training: fast)."""
    torch.manual_seed(0)
    net = create_model(model, num_classes=num_classes, **model_kwargs)
    names = DIGITS[:num_classes]
    return save_checkpoint(folder, "best", net, extra={
        "epoch": 1, "step": 2, "model": model, "model_kwargs": model_kwargs, "num_classes": num_classes,
        "class_names": names, "label_to_cat_id": list(range(1, num_classes + 1)), "image_size": 64,
        "task": task, "config": {"model": model, "data": "builtin:amounts", "image_size": 64,
                                 "val_limit": 2}})


@pytest.fixture(scope="module")
def det(tmp_path_factory) -> Path:
    """An NL-FCOS checkpoint (it has attention blocks, so explain can run on it)."""
    return _checkpoint(tmp_path_factory.mktemp("det"), "nl_fcos_small", "detection", 10)


@pytest.fixture(scope="module")
def cls(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("cls"), "hib_patch_2_2_nl", "classification", 5,
                       width=0.25, in_chans=1)


def _val(tiny_amounts) -> tuple[Path, Path]:
    root = tiny_amounts / "amounts" / "val"
    return root / "annotations.json", root / "images"


# ------------------------------------------------------------------------------------- eval
def test_eval_one_coco_pair_evaluates_all_of_it(tiny_amounts, det, tmp_path):
    """One pair given to eval is the data to evaluate — not a seeded 20 % hold-out of it."""
    from hybridvision.api import evaluate_run

    ann, images = _val(tiny_amounts)
    n = len(json.loads(ann.read_text())["images"])
    ev = evaluate_run(weights=det, data=f"coco:{ann},{images}", out=tmp_path / "ev", device="cpu",
                      progress=False)
    assert ev["num_images"] == n == 8
    assert json.loads((tmp_path / "ev" / "coco_metrics.json").read_text())["num_images"] == n
    # two pairs: the val pair, whole
    ev2 = evaluate_run(weights=det, data=f"coco:{ann},{images},{ann},{images}", out=tmp_path / "ev2",
                       device="cpu", progress=False)
    assert ev2["num_images"] == n
    assert ev2["metrics"] == pytest.approx(ev["metrics"])


def test_eval_never_writes_over_its_inputs(cli, tiny_amounts, det, tmp_path):
    ann, images = _val(tiny_amounts)
    gt = tmp_path / "gt.json"
    shutil.copy(ann, gt)
    dt = tmp_path / "dt.json"
    dt.write_text("[]")
    before = gt.read_bytes(), dt.read_bytes()
    for out in (gt, dt):
        code, _, err = cli("eval", "--gt", gt, "--dt", dt, "--out", out)
        assert code == 2 and "is also an input" in err and _one_line(err), err
    assert (gt.read_bytes(), dt.read_bytes()) == before
    code, _, err = cli("eval", "--weights", det, "--data", f"coco:{ann},{images}", "--out", images,
                       "--device", "cpu")
    assert code == 2 and _one_line(err) and "images" in err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, _, err = cli("eval", "--weights", det, "--data", f"coco:{ann},{images}", "--out", mine,
                       "--device", "cpu")
    assert code == 2 and "did not create" in err and (mine / "notes.txt").read_text() == "keep"


# ------------------------------------------------------------------------------------- predict
def _sources(tiny_amounts, tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    val = sorted((tiny_amounts / "amounts" / "val" / "images").iterdir())
    shutil.copy(val[0], src / "a.png")
    Image.open(val[1]).convert("RGB").save(src / "a.jpg", quality=95)  # same stem as a.png
    shutil.copy(val[2], src / "b.png")
    return src


def test_predict_writes_coco_results_that_eval_accepts(cli, tiny_amounts, det, tmp_path):
    src = _sources(tiny_amounts, tmp_path)
    out = tmp_path / "pred"
    code, _, err = cli("predict", src, "--weights", det, "--out", out, "--conf", "0.0", "--device", "cpu")
    assert code == 0, err
    # one annotated image per input, named by the whole file name: a.png and a.jpg both kept
    assert sorted(p.name for p in out.glob("*.png")) == ["a.jpg.png", "a.png.png", "b.png.png"]
    images = json.loads((out / "images.json").read_text())
    assert [(im["id"], im["file_name"]) for im in images["images"]] == [(1, "a.jpg"), (2, "a.png"), (3, "b.png")]
    assert all(im["width"] == 64 and im["height"] == 64 for im in images["images"])
    assert [c["name"] for c in images["categories"]] == DIGITS
    results = json.loads((out / "predictions.json").read_text())
    assert results and all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    assert {r["image_id"] for r in results} == {1, 2, 3}
    label = json.loads((out / "labels" / "a.jpg.json").read_text())
    assert label["file_name"] == "a.jpg" and label["image_id"] == 1 and (label["width"], label["height"]) == (64, 64)
    assert len(label["detections"]) == sum(r["image_id"] == 1 for r in results)
    assert {"category", "category_id", "bbox", "score"} == set(label["detections"][0])
    # ground truth with the same ids (1..N in sorted file order): eval takes the results as they are
    ann, _ = _val(tiny_amounts)
    coco = json.loads(ann.read_text())
    gt = {"images": [dict(im) for im in images["images"]], "categories": coco["categories"],
          "annotations": [{**a, "image_id": i + 1} for i in range(3)
                          for a in coco["annotations"] if a["image_id"] == 1]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    code, _, err = cli("eval", "--gt", tmp_path / "gt.json", "--dt", out / "predictions.json")
    assert code == 0, err
    # the folder is ours now: predicting into it again is fine
    code, _, err = cli("predict", src / "b.png", "--weights", det, "--out", out, "--device", "cpu")
    assert code == 0, err
    # so is one an earlier version wrote (predictions.json and annotated PNGs, no marker)
    from hybridvision.api import _predict_folder

    old = tmp_path / "old"
    old.mkdir()
    (old / "predictions.json").write_text("[]")
    (old / "a.png").write_bytes(b"")
    assert _predict_folder(old) and not _predict_folder(src)


def test_predict_takes_image_ids_from_a_ground_truth_file(tiny_amounts, det, tmp_path):
    from hybridvision.api import predict

    ann, images = _val(tiny_amounts)
    coco = json.loads(ann.read_text())
    coco["images"] = [{**im, "id": 100 + im["id"]} for im in coco["images"]]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(coco))
    results = predict(images, weights=det, out=tmp_path / "p", device="cpu", score_threshold=0.0, gt=gt)
    assert {r["image_id"] for r in results} == {im["id"] for im in coco["images"]}


def test_predict_refuses_outputs_that_would_mix_with_or_replace_inputs(cli, tiny_amounts, det, tmp_path):
    src = _sources(tiny_amounts, tmp_path)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.png.png").write_bytes(b"my own file")
    cases = {src: "is also an input", tmp_path: "contains the input", src / "out": "inside the input",
             src / "a.png": "is also an input", mine: "did not create"}
    for out, words in cases.items():
        code, _, err = cli("predict", src, "--weights", det, "--out", out, "--device", "cpu")
        assert code == 2 and words in err and _one_line(err), (out, err)
    code, _, err = cli("predict", src / "a.png", "--weights", det, "--out", src, "--device", "cpu")
    assert code == 2 and "contains the input" in err
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    assert (mine / "a.png.png").read_bytes() == b"my own file"


def test_decompression_bomb_is_one_line_in_predict_and_explain(cli, det, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src / "a.png")
    bomb = bomb_png(src / "bomb.png")
    code, _, err = cli("predict", src, "--weights", det, "--out", tmp_path / "p", "--device", "cpu")
    assert code == 2 and "bomb.png" in err and "pixel" in err and _one_line(err), err
    assert not (tmp_path / "p").exists()  # checked before anything is written
    code, _, err = cli("explain", "--weights", det, "--image", bomb, "--point", "1,1", "--out", tmp_path / "x.png")
    assert code == 2 and "bomb.png" in err and _one_line(err), err


# ------------------------------------------------------------------------------------- explain
def test_explain_refusals(cli, monkeypatch, tiny_amounts, det, cls, tmp_path):
    img = tmp_path / "img.png"
    shutil.copy(sorted((tiny_amounts / "amounts" / "val" / "images").iterdir())[0], img)
    before = img.read_bytes()
    code, _, err = cli("explain", "--weights", det, "--image", img, "--point", "10,10", "--out", img)
    assert code == 2 and "is also an input" in err and _one_line(err)
    assert img.read_bytes() == before
    code, _, err = cli("explain", "--weights", det, "--image", img, "--point", "10,10", "--out", det)
    assert code == 2 and det.is_file() and _one_line(err)
    code, _, err = cli("explain", "--weights", cls, "--image", img, "--point", "10,10",
                       "--out", tmp_path / "o.png")
    assert code == 2 and "classification model" in err and _one_line(err), err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = cli("explain", "--weights", det, "--image", img, "--point", "10,10",
                       "--out", tmp_path / "o.png", "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err and _one_line(err), err
    assert not (tmp_path / "o.png").exists()


# -------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("opset", [7, 13, 27, 99])
def test_export_refuses_an_unsupported_opset_before_exporting(cli, tmp_path, opset):
    out = tmp_path / "m.onnx"
    code, _, err = cli("export", "--model", "fcos_demo", "--size", "64", "--opset", opset, "--out", out)
    assert code == 2 and f"--opset {opset}" in err and "16 to 26" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def _onnx_bytes(opset: int) -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def test_export_records_the_opset_the_file_declares(monkeypatch, tmp_path):
    """The exporter may silently fall back to another opset; the metadata must say which."""
    from hybridvision import export

    model = torch.nn.Identity()
    model.model_name = "identity"
    monkeypatch.setattr(export, "_export_bytes", lambda *a, **k: _onnx_bytes(18))
    with pytest.raises(export.ExportCheckError, match="produced opset 18"):
        export.export_onnx(model, tmp_path / "m.onnx", size=4, opset=17, check=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(export, "_export_bytes", lambda *a, **k: _onnx_bytes(17))
    info = export.export_onnx(model, tmp_path / "m.onnx", size=4, opset=17, check=False)
    assert info["opset"] == 17
    assert json.loads((tmp_path / "m.onnx.json").read_text())["opset"] == 17


def test_export_never_writes_over_the_checkpoint(cli, det, tmp_path):
    w = tmp_path / "best.safetensors"
    shutil.copy(det, w)
    shutil.copy(det.with_suffix(".json"), w.with_suffix(".json"))
    before = w.read_bytes(), w.with_suffix(".json").read_bytes()
    for out in (w, tmp_path / "best"):  # best → best.json would be the sidecar
        code, _, err = cli("export", "--weights", w, "--out", out, "--no-check")
        assert code == 2 and "is also an input" in err and _one_line(err), err
    assert (w.read_bytes(), w.with_suffix(".json").read_bytes()) == before
