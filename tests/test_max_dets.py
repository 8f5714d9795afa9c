"""``--max-dets N`` / ``eval_max_dets``: COCO's maxDets [1, 10, N] in every evaluation (files,
models, training, studies), the metric named AR{N}, and detectors that keep N detections."""

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

from hybridvision.config import TrainConfig, apply_overrides
from hybridvision.engine.tasks import DetectionTask
from hybridvision.engine.tasks.bundle import DataBundle
from hybridvision.errors import UserInputError
from hybridvision.evaluation.coco import COCO_METRIC_KEYS, evaluate_coco, metric_keys
from hybridvision.factory import create_model

W, H = 640, 480
N_DENSE = 150  # objects on the dense image: more than COCO's 100


def _grid_boxes(n: int = N_DENSE) -> list[list[float]]:
    """``n`` disjoint 24×24 boxes ``[x, y, w, h]`` on a 15-column grid of a 640×480 image."""
    return [[16.0 + 40 * (k % 15), 24.0 + 44 * (k // 15), 24.0, 24.0] for k in range(n)]


def _dense_case() -> tuple[dict, list[dict]]:
    """One image with 150 ground-truth boxes and a perfect detection of each (distinct scores)."""
    boxes = _grid_boxes()
    gt = {"images": [{"id": 1, "width": W, "height": H, "file_name": "dense.png"}],
          "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": 576.0, "iscrowd": 0}
                          for k, b in enumerate(boxes)],
          "categories": [{"id": 1, "name": "tree"}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": b, "score": 1.0 - k / 1000} for k, b in enumerate(boxes)]
    return gt, dets


def _random_dense_case(seed: int) -> tuple[dict, list[dict]]:
    """Two classes, a dense image (150 objects of one class, jittered detections, duplicates, false
    positives) and sparse ones: numbers that depend on maxDets beyond 100."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": W, "height": H, "file_name": f"{i}.png"} for i in range(4)]
    anns, dets = [], []
    for img in images:
        n = N_DENSE if img["id"] == 1 else int(rng.integers(1, 8))
        for b in (_grid_boxes(n) if img["id"] == 1 else _grid_boxes(15)[:n]):
            cat = 1 if img["id"] == 1 else int(rng.integers(1, 3))  # COCO caps per image and class
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": cat, "bbox": b,
                         "area": b[2] * b[3], "iscrowd": 0})
            for _ in range(int(rng.integers(0, 3))):
                jit = rng.normal(0, 3.0, size=4)
                dets.append({"image_id": img["id"], "category_id": cat, "score": float(rng.uniform(0.05, 1)),
                             "bbox": [b[0] + jit[0], b[1] + jit[1], max(b[2] + jit[2], 1.0), max(b[3] + jit[3], 1.0)]})
        for _ in range(int(rng.integers(0, 60))):
            dets.append({"image_id": img["id"], "category_id": int(rng.integers(1, 3)),
                         "score": float(rng.uniform(0, 0.9)),
                         "bbox": [float(rng.uniform(0, 600)), float(rng.uniform(0, 440)), 30.0, 30.0]})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    return gt, dets


def _pycocotools_stats(gt: dict, dets: list[dict], max_dets: int) -> np.ndarray:
    """pycocotools' 12 stats with ``params.maxDets = [1, 10, max_dets]``.

    pycocotools' ``summarize`` computes ``stats[0]`` (AP) at a hard-wired ``maxDets=100`` and so
    reports -1 for any other last maxDets, while every other AP entry uses ``maxDets[2]``; AP is
    therefore taken here from its accumulated precision at ``maxDets[2]``, area all — the very
    slice ``summarize`` averages at 100."""
    with contextlib.redirect_stdout(io.StringIO()):
        ref_gt = RefCOCO()
        ref_gt.dataset = copy.deepcopy(gt)
        ref_gt.createIndex()
        ev = RefCOCOeval(ref_gt, ref_gt.loadRes(copy.deepcopy(dets)), iouType="bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.asarray(ev.stats, dtype=np.float64)
    p = ev.eval["precision"][:, :, :, 0, -1]  # [T, R, K] at area all, maxDets[2]
    stats[0] = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
    return stats


# ----------------------------------------------------------------------------------- the metric
def test_dense_image_reaches_recall_one_only_with_enough_detections():
    gt, dets = _dense_case()
    wide = evaluate_coco(gt, dets, max_dets=300)["metrics"]
    assert wide["AR300"] == 1.0 and wide["AP"] == 1.0
    assert list(wide) == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR300", "ARs", "ARm", "ARl"]
    default = evaluate_coco(gt, dets)["metrics"]
    assert list(default) == list(COCO_METRIC_KEYS) and "AR300" not in default  # nothing changes at 100
    assert default["AR100"] == pytest.approx(100 / N_DENSE) and default["AR100"] < 1.0
    assert evaluate_coco(gt, dets, max_dets=100)["metrics"] == default
    assert metric_keys(300)[8] == "AR300" and metric_keys()[8] == "AR100"


@pytest.mark.parametrize("seed,max_dets", [(0, 300), (1, 120), (2, 100), (3, 11)])
def test_equals_pycocotools_with_the_same_max_dets(seed, max_dets):
    gt, dets = _random_dense_case(seed)
    got = evaluate_coco(gt, dets, max_dets=max_dets)["metrics"]
    ref = _pycocotools_stats(gt, dets, max_dets)
    np.testing.assert_allclose([got[k] for k in metric_keys(max_dets)], ref, atol=1e-6, rtol=0)
    if max_dets > 100:  # the setting matters on this data: it is not COCO's default in disguise
        assert not np.allclose(ref, _pycocotools_stats(gt, dets, 100))


@pytest.mark.parametrize("bad", [0, 1, 10, 100_001, 2.5, "300", True, None])
def test_max_dets_out_of_range_is_one_line(bad):
    gt, dets = _dense_case()
    with pytest.raises(UserInputError, match=r"max_dets .*use an integer in \[11, 100000\]"):
        evaluate_coco(gt, dets, max_dets=bad)


# ---------------------------------------------------------------------------------------- eval
def test_eval_files_max_dets_names_printed_and_saved_metrics(cli, tmp_path):
    gt, dets = _dense_case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    code, out, err = cli("eval", "--gt", tmp_path / "gt.json", "--dt", tmp_path / "dt.json", "--max-dets", "300",
                         "--out", tmp_path / "m.json")
    assert code == 0, err
    header = next(line for line in out.splitlines() if "AR10" in line)
    assert "AR300" in header and "AR100" not in header
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["AR300"] == 1.0 and "AR100" not in saved
    code, out, err = cli("eval", "--gt", tmp_path / "gt.json", "--dt", tmp_path / "dt.json", "--max-dets", "300",
                         "--out", tmp_path / "folder")
    assert code == 0, err
    assert json.loads((tmp_path / "folder/coco_metrics.json").read_text())["AR300"] == 1.0
    assert json.loads((tmp_path / "folder/pr_curves.json").read_text())["max_dets"] == 300
    code, out, err = cli("eval", "--gt", tmp_path / "gt.json", "--dt", tmp_path / "dt.json")
    assert code == 0 and "AR100" in out and "AR300" not in out


@pytest.mark.parametrize("value", ["0", "10", "100001", "-5"])
def test_eval_refuses_a_bad_max_dets_in_one_line(cli, tmp_path, value):
    gt, dets = _dense_case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    for args in (["--gt", tmp_path / "gt.json", "--dt", tmp_path / "dt.json"], ["--run", tmp_path / "norun"]):
        code, out, err = cli("eval", *args, "--max-dets", value, "--out", tmp_path / "o")
        assert code == 2 and f"--max-dets {value}" in err and "[11, 100000]" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------ detectors
@pytest.mark.parametrize("name", ["fcos_demo", "centernet_small", "cornernet_small", "retinanet_small"])
def test_detectors_keep_as_many_detections_as_asked(name):
    """A perfect prediction of 150 objects decodes to 100 detections at the default and to more
    than 100 once ``detections_per_img`` is raised (CenterNet and CornerNet took 100 peaks)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=2).eval()
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in _grid_boxes()])
    outputs = model.encode_targets([{"boxes": boxes, "labels": torch.zeros(N_DENSE, dtype=torch.long)}], [(H, W)])
    assert len(model.decode(outputs, [(H, W)])[0]["boxes"]) == 100
    model.detections_per_img = 300
    assert len(model.decode(outputs, [(H, W)])[0]["boxes"]) > 100


def test_task_evaluation_raises_the_models_cap_and_restores_it():
    gt, _ = _dense_case()
    model = create_model("fcos_demo", num_classes=1).eval()
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in _grid_boxes()])
    perfect = model.encode_targets([{"boxes": boxes, "labels": torch.zeros(N_DENSE, dtype=torch.long)}], [(H, W)])
    model.forward = lambda images, image_sizes=None: perfect  # the model "predicts" the truth
    loader = [(torch.zeros(1, 3, H, W), [{"image_id": 1, "orig_size": (H, W)}], [(H, W)])]
    task = DetectionTask()
    for max_dets, recall in ((300, 1.0), (100, 100 / N_DENSE)):
        bundle = DataBundle(train=None, val=None, num_classes=1, class_names=["tree"],
                            meta=dict(label_to_cat_id=[1], val_gt=gt, max_dets=max_dets))
        evaluation, results = task.evaluate(model, loader, torch.device("cpu"), bundle)
        assert evaluation["metrics"][f"AR{max_dets}"] == pytest.approx(recall)
        assert len(results) == (N_DENSE if max_dets == 300 else 100)
        assert model.detections_per_img == 100  # restored


# ------------------------------------------------------------------------ training, eval --run
def test_training_and_run_evaluation_use_eval_max_dets(tiny_amounts, tmp_path, cli):
    from hybridvision.engine.trainer import train

    cfg = TrainConfig(model="fcos_demo", data="builtin:amounts", data_root=str(tiny_amounts),
                      data_kwargs=dict(n_train=32, n_val=8, image_size=64), image_size=64, epochs=1,
                      max_steps=2, batch_size=8, out=str(tmp_path / "run"), progress=False, device="cpu",
                      eval_max_dets=300)
    summary = train(cfg)
    assert "AR300" in summary.evaluation["metrics"] and "AR100" not in summary.evaluation["metrics"]
    assert "AR300" in json.loads((tmp_path / "run/eval/coco_metrics.json").read_text())
    code, out, err = cli("eval", "--run", tmp_path / "run", "--device", "cpu", "--out", tmp_path / "e1")
    assert code == 0 and "AR300" in out, err  # the run's own setting
    code, out, err = cli("eval", "--run", tmp_path / "run", "--device", "cpu", "--out", tmp_path / "e2",
                         "--max-dets", "100")
    assert code == 0 and "AR100" in out, err
    assert "AR100" in json.loads((tmp_path / "e2/coco_metrics.json").read_text())


@pytest.mark.parametrize("value", ["10", "0", "abc", "true", "100001"])
def test_config_key_is_validated(value):
    with pytest.raises(UserInputError, match=r"overrides: eval_max_dets=\S+ is not valid .*\[11, 100000\]"):
        apply_overrides(TrainConfig(), [f"eval_max_dets={value}"])
    assert apply_overrides(TrainConfig(), ["eval_max_dets=300"]).eval_max_dets == 300
    assert TrainConfig().eval_max_dets == 100


# ----------------------------------------------------------------------------------------- studies
def test_studies_take_it_from_the_config(tmp_path):
    from hybridvision.studies.runner import get_study, plan, with_max_dets

    study = get_study("fcos-nonlocal")
    runs = plan(study, "smoke", 1, None, tmp_path / "s", overrides=["eval_max_dets=300"])
    assert {r["cfg"].eval_max_dets for r in runs} == {300}
    named = with_max_dets(study, 300)
    assert "AR300" in named.columns and "AR100" not in named.columns
    assert all("AR100" not in cols for _, cols in named.tables) and "AR100" in study.columns
    assert with_max_dets(study, 100) is study
    with pytest.raises(UserInputError, match="eval_max_dets=5"):
        plan(study, "smoke", 1, None, tmp_path / "s", overrides=["eval_max_dets=5"])
