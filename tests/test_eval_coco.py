"""COCO metrics: ``evaluate_coco`` (faster-coco-eval) against pycocotools, the reference."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO as RefCOCO
from pycocotools.cocoeval import COCOeval as RefCOCOeval
from rich.console import Console

from hybridvision.errors import UserInputError
from hybridvision.evaluation.coco import (
    COCO_METRIC_KEYS,
    detections_to_coco_results,
    evaluate_coco,
    format_metrics_table,
    write_metrics_json,
)

IMG_W, IMG_H = 640, 480


# ---------------------------------------------------------------------------------------------
# random data
# ---------------------------------------------------------------------------------------------
def _random_box(rng: np.random.Generator) -> list[float]:
    """A box of random size class (small / medium / large) fully inside the image."""
    side = {0: (4, 30), 1: (34, 90), 2: (100, 300)}[int(rng.integers(3))]
    w, h = rng.uniform(*side, size=2)
    x, y = rng.uniform(0, IMG_W - w), rng.uniform(0, IMG_H - h)
    return [float(x), float(y), float(w), float(h)]


def _random_case(seed: int) -> tuple[dict, list[dict]]:
    """Ground truth and detections exercising every corner the evaluator has.

    Images without annotations, crowd boxes, a category with ground truth but no detections,
    boxes of all sizes, GT ``area`` that differs from the box area (segmentation-style), jittered
    true positives, duplicates, random false positives (also on empty images), and one image with
    more than 100 detections (maxDets).
    """
    rng = np.random.default_rng(seed)
    n_img, n_cat = int(rng.integers(10, 21)), int(rng.integers(3, 6))
    cats = [{"id": 10 + 3 * k, "name": f"class{k}"} for k in range(n_cat)]  # non-contiguous ids
    cat_ids = [c["id"] for c in cats]
    no_det_cat = cat_ids[-1]
    images = [{"id": 100 + i, "width": IMG_W, "height": IMG_H, "file_name": f"{i}.jpg"} for i in range(n_img)]
    anns, dets = [], []
    for i, img in enumerate(images):
        n_obj = 0 if i % 4 == 1 else int(rng.integers(1, 7))  # every 4th image is empty
        for _ in range(n_obj):
            box = _random_box(rng)
            cat = int(rng.choice(cat_ids))
            crowd = int(rng.random() < 0.1)
            area = box[2] * box[3] * float(rng.uniform(0.6, 1.0))
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": cat, "bbox": box,
                         "area": area, "iscrowd": crowd})
            if cat == no_det_cat:
                continue
            for _ in range(int(rng.integers(0, 3))):  # 0 (a miss), 1 or 2 (a duplicate) detections
                jit = rng.normal(0, 0.08, size=4) * np.array([box[2], box[3], box[2], box[3]])
                b = [box[0] + jit[0], box[1] + jit[1], max(box[2] + jit[2], 1.0), max(box[3] + jit[3], 1.0)]
                dets.append({"image_id": img["id"], "category_id": cat, "bbox": [float(v) for v in b],
                             "score": float(rng.uniform(0.05, 1.0))})
        n_fp = 130 if i == 0 else int(rng.integers(0, 4))
        for _ in range(n_fp):
            dets.append({"image_id": img["id"], "category_id": int(rng.choice(cat_ids[:-1])),
                         "bbox": _random_box(rng), "score": float(rng.uniform(0.0, 0.9))})
    gt = {"images": images, "annotations": anns, "categories": cats}
    return gt, dets


def _reference(gt: dict, dets: list[dict]) -> tuple[np.ndarray, dict[str, float]]:
    """pycocotools: the 12 stats and per-class AP (precision[:, :, k, area=all, maxDets=100] > -1)."""
    with contextlib.redirect_stdout(io.StringIO()):
        ref_gt = RefCOCO()
        ref_gt.dataset = copy.deepcopy(gt)
        ref_gt.createIndex()
        ref_dt = ref_gt.loadRes(copy.deepcopy(dets))
        ev = RefCOCOeval(ref_gt, ref_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = {c["id"]: c["name"] for c in gt["categories"]}
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        per_class[names[cat_id]] = float(np.mean(p)) if p.size else -1.0
    return np.asarray(ev.stats, dtype=np.float64), per_class


# ---------------------------------------------------------------------------------------------
# oracle comparisons
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_matches_pycocotools_on_random_data(seed: int) -> None:
    gt, dets = _random_case(seed)
    assert any(a["iscrowd"] for a in gt["annotations"]) or seed != 0
    ref_stats, ref_per_class = _reference(gt, dets)
    out = evaluate_coco(gt, dets)
    got = np.array([out["metrics"][k] for k in COCO_METRIC_KEYS])
    np.testing.assert_allclose(got, ref_stats, atol=1e-6, rtol=0)
    assert set(out["per_class"]) == set(ref_per_class)
    for name, ap in ref_per_class.items():
        assert out["per_class"][name] == pytest.approx(ap, abs=1e-6), name
    # the category with ground truth but no detections scores 0, not -1
    assert out["per_class"][gt["categories"][-1]["name"]] == 0.0
    # the per-class mean is the overall AP (when every category has ground truth)
    valid = [v for v in out["per_class"].values() if v >= 0]
    if len(valid) == len(out["per_class"]):
        assert np.mean(valid) == pytest.approx(out["metrics"]["AP"], abs=1e-9)


def test_random_data_really_has_crowds_empty_images_and_all_sizes() -> None:
    """Guards the generator: the oracle test above only means something if these cases occur."""
    gt, dets = _random_case(0)
    anns = gt["annotations"]
    assert any(a["iscrowd"] for a in anns)
    assert {img["id"] for img in gt["images"]} - {a["image_id"] for a in anns}
    areas = np.array([a["area"] for a in anns])
    assert (areas < 32**2).any() and ((areas > 32**2) & (areas < 96**2)).any() and (areas > 96**2).any()
    assert sum(d["image_id"] == gt["images"][0]["id"] for d in dets) > 100
    assert gt["categories"][-1]["id"] not in {d["category_id"] for d in dets}


def test_empty_results_are_zero_and_match_pycocotools() -> None:
    gt, _ = _random_case(1)
    out = evaluate_coco(gt, [])
    # every bucket has ground truth in this case, so every number is exactly 0
    assert all(out["metrics"][k] == 0.0 for k in COCO_METRIC_KEYS), out["metrics"]
    with contextlib.redirect_stdout(io.StringIO()):
        ref_gt = RefCOCO()
        ref_gt.dataset = copy.deepcopy(gt)
        ref_gt.createIndex()
        ref_dt = RefCOCO()  # pycocotools' loadRes cannot take [], so build the empty set by hand
        ref_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
        ref_dt.createIndex()
        ev = RefCOCOeval(ref_gt, ref_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    np.testing.assert_allclose([out["metrics"][k] for k in COCO_METRIC_KEYS], ev.stats, atol=1e-9)


def _gt_as_perfect_results(gt: dict) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
             "score": 1.0 - 0.001 * j}
            for j, a in enumerate(gt["annotations"]) if not a["iscrowd"]]


def test_perfect_prediction_gives_ap_one() -> None:
    gt, _ = _random_case(2)
    out = evaluate_coco(gt, _gt_as_perfect_results(gt))
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "ARs", "ARm", "ARl"):
        assert out["metrics"][k] == pytest.approx(1.0), k
    assert all(v == pytest.approx(1.0) for v in out["per_class"].values())


def test_empty_size_bucket_is_minus_one() -> None:
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    res = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}]
    out = evaluate_coco(gt, res)
    m = out["metrics"]
    assert m["AP"] == pytest.approx(1.0) and m["APs"] == pytest.approx(1.0) and m["ARs"] == pytest.approx(1.0)
    for k in ("APm", "APl", "ARm", "ARl"):
        assert m[k] == -1.0, k
    assert out["per_class"] == {"a": pytest.approx(1.0), "b": -1.0}  # b has no ground truth at all


def test_missing_area_and_iscrowd_default_like_coco_and_ann_id_zero() -> None:
    """Annotations written without area/iscrowd (and with id 0) evaluate as if they had w*h, 0."""
    gt, dets = _random_case(3)
    for a in gt["annotations"]:
        a["area"] = a["bbox"][2] * a["bbox"][3]
        a["iscrowd"] = 0
    full_stats, _ = _reference(gt, dets)
    bare = copy.deepcopy(gt)
    for a in bare["annotations"]:
        a["id"] -= 1  # ids now start at 0: the evaluator's "unmatched" marker
        del a["area"], a["iscrowd"]
    out = evaluate_coco(bare, dets)
    np.testing.assert_allclose([out["metrics"][k] for k in COCO_METRIC_KEYS], full_stats, atol=1e-6)


def test_paths_inputs_not_modified_and_silent(tmp_path, capsys) -> None:
    gt, dets = _random_case(4)
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(dets))
    gt_before, dets_before = copy.deepcopy(gt), copy.deepcopy(dets)
    from_paths = evaluate_coco(gt_path, str(res_path))
    from_objects = evaluate_coco(gt, dets)
    assert from_paths == from_objects
    assert gt == gt_before and dets == dets_before
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_per_class_off() -> None:
    gt, dets = _random_case(0)
    assert evaluate_coco(gt, dets, per_class=False)["per_class"] == {}


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def _tiny_gt() -> dict:
    return {
        "images": [{"id": 1, "width": 50, "height": 50}, {"id": 2, "width": 50, "height": 50}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 10, 10], "area": 100, "iscrowd": 0}],
        "categories": [{"id": 7, "name": "seven"}],
    }


def _good(**kw) -> dict:
    return {"image_id": 1, "category_id": 7, "bbox": [1, 1, 10, 10], "score": 0.5, **kw}


def test_results_file_not_json(tmp_path) -> None:
    p = tmp_path / "preds.json"
    p.write_text('[{"image_id": 1, ')
    with pytest.raises(UserInputError, match=r"preds\.json.*not valid JSON"):
        evaluate_coco(_tiny_gt(), p)


def test_results_file_missing(tmp_path) -> None:
    with pytest.raises(UserInputError, match=r"nothere\.json.*not found"):
        evaluate_coco(_tiny_gt(), tmp_path / "nothere.json")


def test_results_wrong_shape(tmp_path) -> None:
    p = tmp_path / "preds.json"
    p.write_text(json.dumps({"annotations": []}))
    with pytest.raises(UserInputError, match=r"preds\.json.*must be a JSON list"):
        evaluate_coco(_tiny_gt(), p)
    p.write_text(json.dumps([_good(), {"image_id": 1, "category_id": 7, "score": 0.3}]))
    with pytest.raises(UserInputError, match=r"preds\.json: record 1 lacks bbox"):
        evaluate_coco(_tiny_gt(), p)
    with pytest.raises(UserInputError, match=r"record 0 needs 'bbox'"):
        evaluate_coco(_tiny_gt(), [_good(bbox=[1, 2, 3])])
    with pytest.raises(UserInputError, match=r"record 0 needs a finite numeric 'score'"):
        evaluate_coco(_tiny_gt(), [_good(score="high")])
    with pytest.raises(UserInputError, match=r"record 0 is str"):
        evaluate_coco(_tiny_gt(), ["x"])


def test_results_unknown_image_or_category(tmp_path) -> None:
    p = tmp_path / "preds.json"
    p.write_text(json.dumps([_good(), _good(), _good(image_id=99)]))
    with pytest.raises(UserInputError, match=r"preds\.json: record 2 refers to image_id 99"):
        evaluate_coco(_tiny_gt(), p)
    with pytest.raises(UserInputError, match=r"record 0 has category_id 0.*category ids"):
        evaluate_coco(_tiny_gt(), [_good(category_id=0)])


def test_bad_ground_truth(tmp_path) -> None:
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(UserInputError, match=r"ann\.json: missing or non-list 'annotations'"):
        evaluate_coco(p, [])
    gt = _tiny_gt()
    gt["annotations"][0]["image_id"] = 5
    with pytest.raises(UserInputError, match=r"annotations\[0\] refers to unknown image_id 5"):
        evaluate_coco(gt, [])
    with pytest.raises(UserInputError, match="iou_type"):
        evaluate_coco(_tiny_gt(), [], iou_type="segm")


@pytest.mark.parametrize("key,value,shown", [
    ("area", -5, "area -5 is not a non-negative number"),
    ("area", float("nan"), "area nan is not a non-negative number"),
    ("area", "big", "area 'big' is not a non-negative number"),
    ("area", None, "area None is not a non-negative number"),
    ("iscrowd", "no", "iscrowd 'no' is not 0 or 1"),
    ("iscrowd", True, "iscrowd True is not 0 or 1"),
    ("iscrowd", 2, "iscrowd 2 is not 0 or 1"),
])
def test_ground_truth_area_and_iscrowd_are_checked_like_data_check(tmp_path, key, value, shown) -> None:
    """Before: any numeric area (even -5) was used and iscrowd read as bool("no") = crowd, so the
    numbers changed silently (perfect detections: AR1 83.3 -> 77.8). Now one error, in the
    words of `data check`, naming the file, the annotation and the fix."""
    from hybridvision.data.validate import check_coco

    gt = _tiny_gt()
    gt["annotations"].append({"id": 12, "image_id": 2, "category_id": 7, "bbox": [5, 5, 20, 20],
                              "area": 400, "iscrowd": 0, key: value})
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(gt))  # NaN is written as NaN, which Python's json reads back
    with pytest.raises(UserInputError) as e:
        evaluate_coco(p, [_good()])
    msg = str(e.value)
    assert msg.startswith(f"{p}: annotation id=12: {shown}; fix: ") and "\n" not in msg, msg
    same = [str(f) for f in check_coco(p, None, check_images=False) if f.record == "annotation id=12"]
    assert same == [msg]  # the very line `data check` reports
    with pytest.raises(UserInputError, match=r"^ground truth: annotation id=12: " + shown.split(" is ")[0]):
        evaluate_coco(gt, [_good()])  # an in-memory ground truth is named as such
    del gt["annotations"][1]["id"]
    with pytest.raises(UserInputError, match=r"annotation #1 \(no id\): "):
        evaluate_coco(gt, [_good()])


def test_valid_area_and_iscrowd_spellings_still_evaluate() -> None:
    gt = _tiny_gt()
    gt["annotations"][0].update(area=100.0, iscrowd=0.0)  # floats equal to 0/1 are fine (as data check)
    gt["annotations"].append({"id": 2, "image_id": 2, "category_id": 7, "bbox": [5, 5, 20, 20], "area": 0,
                              "iscrowd": 1})
    out = evaluate_coco(gt, [_good(score=0.9)])
    assert out["metrics"]["AP"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# conversion, writing, table
# ---------------------------------------------------------------------------------------------
def test_detections_to_coco_results_by_hand() -> None:
    dets = [
        {"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 4.0, 2.0]]),
         "scores": torch.tensor([0.9, 0.25]), "labels": torch.tensor([1, 0])},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[2.0, 4.0, 6.0, 10.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([2])},
    ]
    out = detections_to_coco_results(dets, [5, 6, 7], [1, 3, 90], scales=[(1.0, 1.0), (2.0, 2.0), (2.0, 0.5)])
    assert out == [
        {"image_id": 5, "category_id": 3, "bbox": [10.0, 20.0, 20.0, 40.0], "score": pytest.approx(0.9)},
        {"image_id": 5, "category_id": 1, "bbox": [0.0, 0.0, 4.0, 2.0], "score": pytest.approx(0.25)},
        {"image_id": 7, "category_id": 90, "bbox": [4.0, 2.0, 8.0, 3.0], "score": pytest.approx(0.5)},
    ]
    # a dict mapping works the same; no scales leaves boxes as they are
    out2 = detections_to_coco_results(dets[2:], [7], {2: 90})
    assert out2[0]["bbox"] == [2.0, 4.0, 4.0, 6.0] and out2[0]["category_id"] == 90
    json.dumps(out)  # plain Python types only
    with pytest.raises(UserInputError, match="label 2 has no COCO category"):
        detections_to_coco_results(dets[2:], [7], [1, 3])


def test_detections_round_trip_perfect() -> None:
    """GT → detector contract (xyxy, contiguous labels, resized ×0.5) → COCO results → AP = 1."""
    gt, _ = _random_case(0)
    cat_ids = [c["id"] for c in gt["categories"]]
    label_of = {c: i for i, c in enumerate(cat_ids)}
    dets, ids = [], []
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"] and not a["iscrowd"]]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1) * 0.5  # network input is half size
        dets.append({"boxes": xyxy, "scores": torch.linspace(1.0, 0.5, len(anns)),
                     "labels": torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64)})
        ids.append(img["id"])
    res = detections_to_coco_results(dets, ids, cat_ids, scales=[(2.0, 2.0)] * len(ids))
    assert evaluate_coco(gt, res)["metrics"]["AP"] == pytest.approx(1.0)


def test_write_metrics_json_atomic(tmp_path) -> None:
    gt, dets = _random_case(1)
    out = evaluate_coco(gt, dets)
    path = tmp_path / "eval" / "coco_metrics.json"
    write_metrics_json(out, path)
    # the 12 keys at the top level (fractions), per-class AP beside them
    assert json.loads(path.read_text()) == {**out["metrics"], "per_class": out["per_class"]}
    write_metrics_json({"AP": np.float32(0.5), "bad": float("nan")}, path)  # overwrite, numpy, NaN
    assert json.loads(path.read_text()) == {"AP": 0.5, "bad": None}
    assert sorted(p.name for p in path.parent.iterdir()) == ["coco_metrics.json"]  # no temp file left


def test_format_metrics_table() -> None:
    metrics = dict(zip(COCO_METRIC_KEYS, [0.5, 0.1234, 1.0, -1.0] + [0.25] * 8))
    table = format_metrics_table({"metrics": metrics, "per_class": {}})
    assert [c.header for c in table.columns] == list(COCO_METRIC_KEYS)
    buf = io.StringIO()
    Console(file=buf, width=80).print(table)  # fits a standard terminal without truncation
    lines = buf.getvalue().splitlines()
    assert [line.split() for line in lines if "AP50" in line] == [list(COCO_METRIC_KEYS)]
    cells = [line for line in lines if "50.0" in line][0].split()
    assert cells == ["50.0", "12.3", "100.0", "-"] + ["25.0"] * 8


def test_eval_gt_dt_writes_the_folder_eval_run_writes(cli, tmp_path) -> None:
    """Before: `eval --gt --dt` wrote the 12 numbers only (evaluate_coco), never the PR curves,
    confusion matrix and per-class AP that `eval --run` writes."""
    from hybridvision.api import _EVAL_FILES

    gt, dets = _random_case(5)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    out = tmp_path / "ev"
    code, stdout, err = cli("eval", "--gt", tmp_path / "gt.json", "--dt", tmp_path / "dt.json", "--out", out)
    assert code == 0 and "AP75" in stdout, err
    names = {"coco_metrics.json", "predictions.json", "pr_curves.json", "confusion_matrix.json",
             "per_class_ap.csv", "pr_curve.png", "confusion_matrix.png"}
    assert {p.name for p in out.iterdir()} == names | {".hybridvision"} and names <= set(_EVAL_FILES)
    metrics = json.loads((out / "coco_metrics.json").read_text())
    assert metrics["num_images"] == len(gt["images"])
    expected = evaluate_coco(gt, dets)
    np.testing.assert_allclose([metrics[k] for k in COCO_METRIC_KEYS],
                               [expected["metrics"][k] for k in COCO_METRIC_KEYS], atol=1e-12)
    assert json.loads((out / "predictions.json").read_text()) == dets
    assert (out / "per_class_ap.csv").read_text().count("\n") == 1 + len(gt["categories"])
    # again into the same folder: ours; a folder of those files without the marker (an older
    # version's eval/) too; a user's folder is refused and left as it was
    assert cli("eval", "--gt", tmp_path / "gt.json", "--dt", tmp_path / "dt.json", "--out", out)[0] == 0
    (out / ".hybridvision").unlink()
    assert cli("eval", "--gt", tmp_path / "gt.json", "--dt", tmp_path / "dt.json", "--out", out)[0] == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, _, err = cli("eval", "--gt", tmp_path / "gt.json", "--dt", tmp_path / "dt.json", "--out", mine)
    assert code == 2 and "did not create" in err and [p.name for p in mine.iterdir()] == ["notes.txt"], err
    # a .json --out is still the metrics file alone
    code, _, err = cli("eval", "--gt", tmp_path / "gt.json", "--dt", tmp_path / "dt.json", "--out", mine / "m.json")
    assert code == 0 and sorted(p.name for p in mine.iterdir()) == ["m.json", "notes.txt"], err
