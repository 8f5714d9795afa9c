"""Evaluation analysis: PR curves and per-class AP against faster-coco-eval run here (whole and
restricted to one class), the confusion matrix on hand cases, the files and figures of an
evaluation, per-class accuracy, and ``hybridvision eval`` writing and printing all of it."""

from __future__ import annotations

import copy
import csv
import io
import json

import numpy as np
import pytest
import torch
from faster_coco_eval import COCO, COCOeval_faster
from PIL import Image

from hybridvision.engine.checkpoint import save_checkpoint
from hybridvision.evaluation.analysis import (BACKGROUND, DetectionAnalysis, confusion_matrix,
                                              detection_analysis, evaluate_with_analysis,
                                              per_class_accuracy, write_analysis_files)
from hybridvision.factory import create_model
from hybridvision.plots import (figure_png, plot_confusion_matrix, plot_per_class_accuracy,
                                plot_per_class_ap, plot_pr_curves, save_analysis_plots)

W, H = 320, 240


def _random_case(seed: int) -> tuple[dict, list[dict]]:
    """4 classes (one without ground truth, one without detections), crowd boxes, jittered hits,
    duplicates, wrong-class hits and random false positives over 12 images."""
    rng = np.random.default_rng(seed)
    cats = [{"id": 3 + 2 * k, "name": f"c{k}"} for k in range(4)]  # ids 3, 5, 7, 9
    images = [{"id": 50 + i, "width": W, "height": H, "file_name": f"{i}.png"} for i in range(12)]
    anns, dets = [], []
    for img in images:
        for _ in range(int(rng.integers(0, 6))):
            w, h = rng.uniform(8, 120, size=2)
            box = [float(rng.uniform(0, W - w)), float(rng.uniform(0, H - h)), float(w), float(h)]
            cat = int(rng.choice([3, 5, 7]))  # 9 has no ground truth
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": cat, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": int(rng.random() < 0.1)})
            if cat == 7:
                continue  # 7 is never detected
            for _ in range(int(rng.integers(0, 3))):
                jit = rng.normal(0, 0.1, size=4) * np.array([w, h, w, h])
                label = cat if rng.random() < 0.8 else int(rng.choice([3, 5, 9]))
                dets.append({"image_id": img["id"], "category_id": label, "score": float(rng.uniform(0.05, 1)),
                             "bbox": [box[0] + jit[0], box[1] + jit[1], max(w + jit[2], 1.0), max(h + jit[3], 1.0)]})
        for _ in range(int(rng.integers(0, 3))):
            dets.append({"image_id": img["id"], "category_id": int(rng.choice([3, 5, 9])),
                         "score": float(rng.uniform(0, 0.9)), "bbox": [float(rng.uniform(0, W - 40)),
                                                                     float(rng.uniform(0, H - 40)), 30.0, 30.0]})
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _cocoeval(gt: dict, dets: list[dict], cat_ids: list[int] | None = None):
    """faster-coco-eval run here, on copies, optionally restricted to some categories."""
    coco_gt = COCO(copy.deepcopy(gt), print_function=lambda *a, **k: None)
    coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
    ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *a, **k: None)
    ev.params.maxDets = [1, 10, 100]
    if cat_ids is not None:
        ev.params.catIds = cat_ids
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


@pytest.fixture(scope="module")
def case():
    gt, dets = _random_case(7)
    return gt, dets, detection_analysis(gt, dets)


# ------------------------------------------------------------------------------ oracles
def test_pr_curves_are_the_precision_array_slices(case):
    gt, dets, a = case
    ev = _cocoeval(gt, dets)
    P = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]  # [T, R, K] area all, maxDets 100
    assert a.category_ids == [3, 5, 7, 9] and a.class_names == ["c0", "c1", "c2", "c3"]
    np.testing.assert_array_equal(a.recall, np.linspace(0, 1, 101))
    np.testing.assert_array_equal(np.where(np.isnan(a.precision), -1, a.precision), P)
    assert (P[:, :, 3] == -1).all() and np.isnan(a.pr_curve("0.5", 3)).all()  # c3: no ground truth
    assert (a.pr_curve("0.5", 2) == 0).all()  # c2: ground truth, never detected
    for k in range(3):
        np.testing.assert_allclose(a.pr_curve("0.5", k), P[0, :, k], rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.pr_curve("0.5:0.95", k), P[:, :, k].mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.pr_curve("0.5"), P[0, :, :3].mean(axis=1), atol=1e-12)
    np.testing.assert_allclose(a.pr_curve("0.5:0.95"), P[:, :, :3].mean(axis=(0, 2)), atol=1e-12)
    assert a.ap() == pytest.approx(ev.stats[0], abs=1e-12) and a.ap("0.5") == pytest.approx(ev.stats[1], abs=1e-12)
    assert 0 < a.ap() < a.ap("0.5") < 1


def test_per_class_ap_equals_cocoeval_restricted_to_that_class(case):
    gt, dets, a = case
    for row in a.per_class:
        if row.category_id == 9:
            assert (row.AP, row.AP50, row.AP75, row.n_gt) == (-1, -1, -1, 0)
            continue
        stats = _cocoeval(gt, dets, [row.category_id]).stats
        assert (row.AP, row.AP50, row.AP75) == pytest.approx(tuple(stats[:3]), abs=1e-12), row.name
        assert row.n_gt == sum(1 for x in gt["annotations"]
                               if x["category_id"] == row.category_id and not x["iscrowd"])
    assert a.per_class_ap() == pytest.approx(evaluate_with_analysis(gt, dets)["per_class"])


# --------------------------------------------------------------------------- confusion matrix
def _hand_case() -> tuple[dict, list[dict]]:
    """3 ground-truth boxes of 2 classes (cat 1, 1, 2) and a crowd region of cat 2 on one image."""
    gt = {"images": [{"id": 1, "width": 200, "height": 200, "file_name": "a.png"}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]},      # found, right class
              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 0, 40, 40]},    # found as dog
              {"id": 3, "image_id": 1, "category_id": 2, "bbox": [0, 100, 40, 40]},    # missed
              {"id": 4, "image_id": 1, "category_id": 2, "bbox": [100, 100, 90, 90], "iscrowd": 1}]}
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 40, 40], "score": 0.9},       # correct
        {"image_id": 1, "category_id": 2, "bbox": [101, 1, 40, 38], "score": 0.8},     # wrong class
        {"image_id": 1, "category_id": 2, "bbox": [60, 60, 20, 20], "score": 0.7},     # false positive
        {"image_id": 1, "category_id": 1, "bbox": [0, 100, 40, 40], "score": 0.1},     # below threshold
        {"image_id": 1, "category_id": 2, "bbox": [120, 120, 30, 30], "score": 0.6},   # on the crowd region
        {"image_id": 1, "category_id": 1, "bbox": [2, 0, 40, 40], "score": 0.5},       # duplicate: a FP
    ]
    return gt, dets


def test_confusion_matrix_hand_case():
    gt, dets = _hand_case()
    a = detection_analysis(gt, dets)
    assert a.matrix_labels == ["cat", "dog", BACKGROUND]
    #                       predicted: cat dog background
    expected = np.array([[1, 1, 0],    # ground truth cat: one right, one as dog
                         [0, 0, 1],    # ground truth dog: missed (its detection is below 0.25)
                         [1, 1, 0]])   # background: the duplicate cat, the false-positive dog
    np.testing.assert_array_equal(a.confusion, expected)
    # the detection under the threshold counts once the threshold is lowered: it finds the dog as cat
    low = confusion_matrix(gt, dets, [1, 2], score_threshold=0.05)
    np.testing.assert_array_equal(low, [[1, 1, 0], [1, 0, 0], [1, 1, 0]])
    # no crowd flag: the region is a dog that is found, as dog
    plain = copy.deepcopy(gt)
    plain["annotations"][3]["iscrowd"] = 0
    plain["annotations"][3]["bbox"] = [120, 120, 30, 30]
    np.testing.assert_array_equal(confusion_matrix(plain, dets, [1, 2]), [[1, 1, 0], [0, 1, 1], [1, 1, 0]])


def test_confusion_matrix_ignores_crowd_and_prefers_the_higher_iou():
    gt = {"images": [{"id": 1, "width": 100, "height": 100}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50]},
                          {"id": 2, "image_id": 1, "category_id": 2, "bbox": [60, 60, 30, 30], "iscrowd": 1}]}
    # two detections on GT 1: the b one overlaps it more, so it is the match; a is then a FP.
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 40], "score": 0.9},
            {"image_id": 1, "category_id": 2, "bbox": [0, 0, 50, 49], "score": 0.3}]
    np.testing.assert_array_equal(confusion_matrix(gt, dets, [1, 2]), [[0, 1, 0], [0, 0, 0], [1, 0, 0]])
    # only the crowd region and nothing on it: an all-zero matrix (a crowd box is never missed)
    assert not confusion_matrix({**gt, "annotations": gt["annotations"][1:]}, [], [1, 2]).any()


# ------------------------------------------------------------------------- files and figures
def test_analysis_files_and_figures(case, tmp_path):
    gt, dets, a = case
    write_analysis_files(a, tmp_path)
    save_analysis_plots(a, tmp_path)
    pr = json.loads((tmp_path / "pr_curves.json").read_text())
    assert len(pr["recall"]) == 101 and pr["classes"] == a.class_names
    assert pr["precision"]["0.5"]["per_class"]["c3"] is None
    assert pr["precision"]["0.5:0.95"]["all"] == pytest.approx(a.pr_curve("0.5:0.95").tolist())
    assert pr["precision"]["0.5"]["per_class"]["c0"] == pytest.approx(a.pr_curve("0.5", 0).tolist())
    cm = json.loads((tmp_path / "confusion_matrix.json").read_text())
    assert cm["matrix"] == a.confusion.tolist() and cm["labels"][-1] == BACKGROUND
    rows = list(csv.DictReader(io.StringIO((tmp_path / "per_class_ap.csv").read_text())))
    assert [r["class"] for r in rows] == a.class_names and list(rows[0]) == ["class", "AP", "AP50", "AP75", "n_gt"]
    assert float(rows[0]["AP"]) == pytest.approx(a.per_class[0].AP, abs=1e-6) and rows[3]["AP"] == "-1"
    for name in ("pr_curve.png", "confusion_matrix.png"):
        assert Image.open(tmp_path / name).format == "PNG"
    # study figures: several models on one axis, bytes for an HTML report
    other = detection_analysis(gt, [d for d in dets if d["score"] > 0.5])
    pairs = [("NL-FCOS", a), ("FCOS", other)]
    fig = plot_pr_curves(pairs)
    assert len(fig.axes) == 2 and all(len(ax.lines) == 2 for ax in fig.axes)  # one curve per model
    assert len(plot_pr_curves(a).axes[0].lines) == 3 + 1  # 3 classes with ground truth + all
    bars = plot_per_class_ap(pairs, metric="AP50")
    assert len(bars.axes[0].patches) == 2 * 4
    assert figure_png(plot_confusion_matrix(a)).startswith(b"\x89PNG")
    with pytest.raises(ValueError):
        plot_pr_curves([])


def test_empty_results_and_no_ground_truth():
    gt, _ = _hand_case()
    a = detection_analysis(gt, [])
    assert a.ap() == 0.0 and a.confusion[:, -1].tolist() == [2, 1, 0]
    empty = {**gt, "annotations": []}
    b = detection_analysis(empty, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9}])
    assert b.ap() == -1 and np.isnan(b.pr_curve()).all() and b.confusion[-1].tolist() == [1, 0, 0]
    figure_png(plot_pr_curves(b))  # nothing to draw is still a figure


def test_per_class_accuracy_and_its_plot():
    acc = per_class_accuracy(torch.tensor([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 1, 0, 0]), ["a", "b", "c", "d"])
    assert acc == {"a": 0.5, "b": pytest.approx(2 / 3), "c": 0.0, "d": -1.0}
    fig = plot_per_class_accuracy([("m1", acc), ("m2", {**acc, "c": 1.0})])
    assert len(fig.axes[0].patches) == 8
    with pytest.raises(ValueError):
        per_class_accuracy([0, 4], [0, 1], ["a", "b"])


def test_analysis_is_a_dataclass_of_arrays(case):
    a = case[2]
    assert isinstance(a, DetectionAnalysis)
    assert a.precision.shape == (10, 101, 4) and a.confusion.shape == (5, 5) and a.n_gt.dtype == np.int64


# ------------------------------------------------------------------------------------ eval
@pytest.fixture(scope="module")
def det(tmp_path_factory):
    """An untrained FCOS checkpoint with the sidecar `train` writes (no training: fast)."""
    torch.manual_seed(0)
    net = create_model("fcos_demo", num_classes=10)
    return save_checkpoint(tmp_path_factory.mktemp("det"), "best", net, extra={
        "epoch": 1, "step": 2, "model": "fcos_demo", "model_kwargs": {}, "num_classes": 10,
        "class_names": [str(d) for d in range(10)], "label_to_cat_id": list(range(1, 11)),
        "image_size": 64, "task": "detection",
        "config": {"model": "fcos_demo", "data": "builtin:amounts", "image_size": 64}})


def test_eval_writes_the_analysis_and_prints_the_per_class_table(cli, tiny_amounts, det, tmp_path):
    root = tiny_amounts / "amounts" / "val"
    out = tmp_path / "ev"
    code, stdout, err = cli("eval", "--weights", det, "--data", f"coco:{root / 'annotations.json'},{root / 'images'}",
                            "--out", out, "--device", "cpu")
    assert code == 0, err
    for name in ("coco_metrics.json", "predictions.json", "pr_curves.json", "pr_curve.png",
                 "confusion_matrix.json", "confusion_matrix.png", "per_class_ap.csv"):
        assert (out / name).is_file(), name
    assert "n_gt" in stdout and "AP75" in stdout
    rows = list(csv.DictReader(io.StringIO((out / "per_class_ap.csv").read_text())))
    n_gt = sum(int(r["n_gt"]) for r in rows)
    assert n_gt == len(json.loads((root / "annotations.json").read_text())["annotations"])
    cm = np.array(json.loads((out / "confusion_matrix.json").read_text())["matrix"])
    assert cm[:-1].sum() == n_gt  # every ground-truth box is in its row once
