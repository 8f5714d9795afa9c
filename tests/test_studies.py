"""Studies: report arithmetic against hand values, dry runs, and a real (tiny) study on a
user's COCO-format dataset written by the test."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hybridvision.config import TrainConfig
from hybridvision.engine.tasks import DetectionTask
from hybridvision.engine.trainer import share_initialisation, train
from hybridvision.errors import UserInputError
from hybridvision.factory import create_model
from hybridvision.studies.runner import get_study, run_study
from hybridvision.studies.report import aggregate, markdown_table


def test_aggregate_mean_and_sample_std():
    recs = [{"row": "A", "seed": s, "metrics": {"AP": v, "APl": -1}} for s, v in enumerate([0.2, 0.4, 0.6])]
    line = aggregate(recs, ["A"], ["AP", "APl"])[0]
    assert line["n"] == 3
    assert line["AP"]["mean"] == pytest.approx(0.4)
    assert line["AP"]["std"] == pytest.approx(math.sqrt(((0.2) ** 2 + 0 + 0.2 ** 2) / 2))
    assert line["APl"]["mean"] == -1
    table = markdown_table([line], ["AP", "APl"])
    assert "| A | 40.0 ± 20.0 | - |" in table


def test_dry_run_lists_every_row_and_seed(tmp_path):
    study = get_study("fcos-nonlocal")
    res = run_study("fcos-nonlocal", seeds=3, dry_run=True, out=tmp_path)
    assert len(res["runs"]) == 3 * len(study.rows["cpu"]) == 21
    assert {r["row"] for r in res["runs"]} == {"FCOS", "NL-FCOS-cls", "NL-FCOS-reg", "NL-FCOS",
                                               "NL-FCOS (Wang)", "NL-FCOS-PANet", "NL-FCOS-deep"}
    quick = run_study("fcos-nonlocal", preset="quick", seeds=3, dry_run=True, out=tmp_path)
    assert [r["cfg"] for r in quick["runs"]] == [r["cfg"] for r in res["runs"]]  # quick = cpu
    res = run_study("hybrid-classification", seeds=2, dry_run=True, out=tmp_path)
    assert len(res["runs"]) == 2 * 6
    res = run_study("hybrid-classification", preset="paper", seeds=2, dry_run=True, out=tmp_path)
    assert len(res["runs"]) == 34
    with pytest.raises(UserInputError, match="preset"):
        run_study("fcos-nonlocal", preset="nope", dry_run=True)
    with pytest.raises(UserInputError, match="unknown study"):
        run_study("nope", dry_run=True)


def _write_user_coco(root):
    """12 images of coloured rectangles on noise; category ids 3 and 7 (not contiguous)."""
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    images, anns = [], []
    for i in range(12):
        img = rng.integers(0, 60, (64, 80, 3), dtype=np.uint8)
        for k in range(2):
            w, h = int(rng.integers(10, 30)), int(rng.integers(10, 30))
            x, y = int(rng.integers(0, 80 - w)), int(rng.integers(0, 64 - h))
            cat = (3, 7)[k]
            img[y:y + h, x:x + w] = (220, 40, 40) if cat == 3 else (40, 220, 40)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        Image.fromarray(img).save(root / "imgs" / f"{i:03d}.jpg")
        images.append({"id": i + 1, "file_name": f"{i:03d}.jpg", "width": 80, "height": 64})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 3, "name": "red"}, {"id": 7, "name": "green"}]}
    (root / "ann.json").write_text(json.dumps(coco))
    return root / "ann.json", root / "imgs"


def test_fcos_study_runs_on_user_coco(tmp_path):
    ann, imgs = _write_user_coco(tmp_path / "user")
    out = tmp_path / "study"
    kw = dict(preset="smoke", seeds=2, data=f"coco:{ann},{imgs}", out=out, device="cpu",
              overrides=["max_steps=1"], rows=["FCOS", "NL-FCOS"])
    res = run_study("fcos-nonlocal", **kw)
    assert [line["row"] for line in res["summary"]] == ["FCOS", "NL-FCOS"]
    assert len(res["runs"]) == 4
    for rec in res["runs"]:
        m = rec["metrics"]
        for key in ("AP", "AP50", "AR100", "APl", "infer_ms", "params_m", "gflops", "infer_mem_mb"):
            assert key in m
        assert m["params_m"] > 0 and m["gflops"] > 0 and m["infer_ms"] > 0
    # NL-FCOS has the extra head blocks: more parameters than FCOS
    p = {line["row"]: line["params_m"]["mean"] for line in res["summary"]}
    assert p["NL-FCOS"] > p["FCOS"]
    report = (out / "report.md").read_text()
    assert "NL-FCOS" in report and "±" in report
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["row"] for r in rows] == ["FCOS", "NL-FCOS"] and "AP_mean" in rows[0]
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 4
    # paired: NL-FCOS starts from FCOS's initialisation (same seed) in every tensor they share
    for rec in results["runs"]:
        if rec["row"] == "NL-FCOS":
            copied, total = rec["shared_init"]
            assert 0 < copied < total
        else:
            assert rec["shared_init"] is None
    assert {(c["row"], c["reference"]) for c in results["comparisons"]} == {("NL-FCOS", "FCOS")}
    assert all(c["n"] == 2 for c in results["comparisons"] if c["metric"] == "infer_ms")
    html = (out / "report.html").read_text()
    assert "NL-FCOS" in html and "data:image/png;base64," in html
    assert report.index("Does a non-local block help FCOS") < report.index("## COCO metrics")
    # a second call resumes: finished runs are read back, not trained again
    marker = (out / "FCOS/seed0/result.json").stat().st_mtime_ns
    run_study("fcos-nonlocal", **kw)
    assert (out / "FCOS/seed0/result.json").stat().st_mtime_ns == marker
    # other settings into the same folder: refused, not mixed into the comparisons
    with pytest.raises(UserInputError, match="other settings .*max_steps: 1 → 2"):
        run_study("fcos-nonlocal", **{**kw, "overrides": ["max_steps=2"]})
    with pytest.raises(UserInputError, match="other settings"):
        run_study("fcos-nonlocal", **{**kw, "overrides": ["max_steps=2"]}, report_only=True)


def test_centernet_study_smoke_with_tta_columns(tmp_path):
    """Study ``centernet`` on a user's COCO data: every row (keypoint, anchor-free, anchor-based)
    trains, is evaluated plain / flip / multi-scale, and is compared with CenterNet-R18."""
    ann, imgs = _write_user_coco(tmp_path / "user")
    out = tmp_path / "study"
    res = run_study("centernet", preset="smoke", seeds=1, data=f"coco:{ann},{imgs}", out=out, device="cpu",
                    overrides=["max_steps=1"])
    assert [line["row"] for line in res["summary"]] == ["CenterNet-R18", "CenterNet-R18 + NL", "FCOS", "RetinaNet"]
    for rec in res["runs"]:
        m = rec["metrics"]
        for key in ("AP", "AP_flip", "AP_ms", "infer_ms", "infer_ms_flip", "infer_ms_ms"):
            assert key in m and m[key] == m[key]
        assert m["infer_ms_ms"] > m["infer_ms"]  # five scales cost more than one
    report = (out / "report.md").read_text()
    assert "Speed–accuracy with test-time augmentation" in report and "AP multi-scale" in report
    results = json.loads((out / "results.json").read_text())
    assert {c["reference"] for c in results["comparisons"]} == {"CenterNet-R18"}


@pytest.fixture
def imagenet_cache(tmp_path, monkeypatch):
    """A torch hub cache holding (empty stand-ins of) torchvision's ResNet weight files."""
    import torchvision

    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    for name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        url = torchvision.models.get_model_weights(name).DEFAULT.url
        (hub / "checkpoints" / url.rsplit("/", 1)[-1]).write_bytes(b"")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def test_paper_presets_start_resnets_from_imagenet(tmp_path, monkeypatch, imagenet_cache):
    """The detection studies' paper presets name torchvision's ImageNet weights for every ResNet
    backbone (hourglasses train from scratch); without the file the plan stops in one line."""
    from hybridvision.studies.runner import get_study, plan

    rows = {r.model: r.model_kwargs.get("backbone_weights")
            for name in ("fcos-nonlocal", "centernet", "cornerfcos", "anchor-based", "cornernet-nonlocal")
            for r in get_study(name).rows["paper"]}
    assert rows["fcos_r50_fpn"] == "torchvision:resnet50" and rows["nl_fcos_r101_fpn"] == "torchvision:resnet101"
    assert rows["centernet_r18"] == "torchvision:resnet18" and rows["cornerfcos_multi_normal"] == "torchvision:resnet50"
    assert rows["cornernet_hg104"] is None and rows["nl_cornernet_64"] is None
    assert all(r.model_kwargs.get("backbone_weights") is None for r in get_study("fcos-nonlocal").rows["cpu"])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty"))
    with pytest.raises(UserInputError, match=r"resnet50-.*\.pth .*download.pytorch.org"):
        plan(get_study("fcos-nonlocal"), "paper", 1, None, tmp_path / "p")


@pytest.mark.parametrize("name", ["cornernet-nonlocal", "cornerfcos", "amounts", "anchor-based"])
def test_thesis_a_corner_studies_plan_every_preset(name, tmp_path, imagenet_cache):
    """Every run of every preset is planned and its model built (on the meta device)."""
    from hybridvision.studies.runner import get_study, plan

    study = get_study(name)
    for preset in ("smoke", "cpu", "paper"):
        runs = plan(study, preset, 2, None, tmp_path / preset)
        assert len(runs) == 2 * len(study.rows[preset])
    assert all(r.reference in {x.label for x in study.rows["cpu"]} for r in study.rows["cpu"] if r.reference)


# cornerfcos (6 rows) and amounts (4) take ~20 s each on 2 cores; their families run in the other two
@pytest.mark.parametrize("name", ["cornernet-nonlocal", "anchor-based",
                                  pytest.param("cornerfcos", marks=pytest.mark.slow),
                                  pytest.param("amounts", marks=pytest.mark.slow)])
def test_thesis_a_corner_studies_run_on_user_coco(name, tmp_path):
    """Each of thesis A's corner-detector studies trains, evaluates, costs and compares every row
    on a user's COCO data (one step per run), and compares each row with its reference and with the
    rows it is also compared with."""
    from hybridvision.studies.runner import get_study

    study = get_study(name)
    ann, imgs = _write_user_coco(tmp_path / "user")
    res = run_study(name, preset="smoke", seeds=1, data=f"coco:{ann},{imgs}", out=tmp_path / "s",
                    device="cpu", overrides=["max_steps=1"])
    assert [line["row"] for line in res["summary"]] == [r.label for r in study.rows["smoke"]]
    assert all("AP" in r["metrics"] and r["metrics"]["params_m"] > 0 for r in res["runs"])
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    expected = {(r.label, other) for r in study.rows["smoke"] for other in r.compared_with}
    assert {(c["row"], c["reference"]) for c in results["comparisons"]} == expected


def _write_user_tuberlin(root):
    """TU-Berlin layout: DIR/<class>/<n>.png, white paper with a black stroke per class."""
    for c, name in enumerate(("airplane", "bell")):
        (root / name).mkdir(parents=True)
        for n in range(6):
            img = np.full((48, 48), 255, np.uint8)
            if c == 0:
                img[20 + n % 3, 5:43] = 0  # horizontal stroke
            else:
                img[5:43, 20 + n % 3] = 0  # vertical stroke
            Image.fromarray(img).save(root / name / f"{n + 1}.png")
    return root


def _write_user_quickdraw(root):
    """QuickDraw simplified ndjson: DIR/<class>.ndjson, one drawing per line."""
    root.mkdir(parents=True)
    for c, word in enumerate(("circle", "line")):
        lines = []
        for n in range(6):
            stroke = [[10, 128, 245], [128, 128 + n, 128]] if c else [[128, 200, 128, 56, 128],
                                                                       [56, 128, 200, 128, 56]]
            lines.append(json.dumps({"word": word, "countrycode": "CL", "timestamp": "x",
                                     "recognized": True, "key_id": str(n), "drawing": [stroke]}))
        (root / f"{word}.ndjson").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("kind", ["tuberlin", "quickdraw"])
def test_hybrid_study_runs_on_user_sketches(tmp_path, kind):
    """The classification study reads a user's real-format sketches unchanged, and its Table 3.1
    covers the selected rows plus the ResNet26 reference, not all 17 models."""
    writer = _write_user_tuberlin if kind == "tuberlin" else _write_user_quickdraw
    root = writer(tmp_path / kind)
    out = tmp_path / "study"
    res = run_study("hybrid-classification", preset="smoke", seeds=1, data=f"{kind}:{root}", out=out,
                    device="cpu", overrides=["max_steps=1"], rows=["ResNet26 (nl)"])
    (line,) = res["summary"]
    assert line["row"] == "ResNet26 (nl)"
    assert 0 <= line["top1"]["mean"] <= 1 and line["top5"]["mean"] == 1  # 2 classes: top-5 is all
    table = json.loads((out / "table_3_1.json").read_text())
    assert set(table) == {"ResNet26", "ResNet26 (nl)"}
    assert table["ResNet26 (nl)"]["params_m"] == pytest.approx(11.58, rel=0.01)
    report = (out / "report.md").read_text()
    assert "| ResNet26 (nl) |" in report and "| SAN10 pairwise |" not in report
    assert f"{kind}:" in report


def test_share_initialisation_copies_every_common_tensor():
    """A paired row starts where its reference starts wherever the two have the same tensor."""
    torch.manual_seed(0)
    ref = create_model("fcos_small", num_classes=3)
    torch.manual_seed(1)
    model = create_model("nl_fcos_small_panet", num_classes=3)
    own, theirs = model.state_dict(), ref.state_dict()
    common = [k for k in own if k in theirs and own[k].shape == theirs[k].shape]
    assert any(not torch.equal(own[k], theirs[k]) for k in common if own[k].is_floating_point())
    copied, total = share_initialisation(model, ref)
    assert copied == len(common) and total == len(own) > copied
    after = model.state_dict()
    assert all(torch.equal(after[k], theirs[k]) for k in common)
    assert all(torch.equal(after[k], own[k]) for k in own if k not in common)  # its own block untouched


def test_rows_with_one_seed_see_the_same_batches(tiny_amounts, tmp_path, monkeypatch):
    """Pairing's other half: two rows trained with the same seed get identical batches (images,
    augmentation, boxes), however differently their models consumed the random stream."""
    seen: dict[str, list] = {}
    original = DetectionTask.batch_loss

    def recording(self, model, batch, device):
        images, targets, _ = batch
        seen.setdefault(current[0], []).append((images.clone(), [t["boxes"].clone() for t in targets]))
        return original(self, model, batch, device)

    monkeypatch.setattr(DetectionTask, "batch_loss", recording)
    current = [""]
    for model in ("fcos_small", "nl_fcos_small_panet"):
        current[0] = model
        cfg = TrainConfig(model=model, data="builtin:amounts", data_root=str(tiny_amounts), image_size=64,
                          data_kwargs=dict(n_train=32, n_val=8, image_size=64),
                          epochs=2, batch_size=8, eval_every=0, max_steps=6, seed=3, progress=False,
                          out=str(tmp_path / model))
        train(cfg)
    a, b = seen["fcos_small"], seen["nl_fcos_small_panet"]
    assert len(a) == len(b) == 6
    for (ia, ba), (ib, bb) in zip(a, b):
        assert torch.equal(ia, ib)
        assert all(torch.equal(x, y) for x, y in zip(ba, bb))
    assert not torch.equal(a[0][0], a[4][0])  # and the batches do change from step to step


@pytest.mark.parametrize("kind", ["detector", "classifier"])
def test_cost_measurement_leaves_the_model_as_it_was(kind):
    """The costs are measured before the study evaluates TTA on the same model: the training-step
    timing must not move its BatchNorm statistics (nor anything else in its state)."""
    from hybridvision.config import TrainConfig
    from hybridvision.factory import create_model
    from hybridvision.studies.common import measure_detector
    from hybridvision.studies.hybrid_classification import measure_classifier

    torch.manual_seed(0)
    if kind == "detector":
        model, measure = create_model("centernet_small", num_classes=3), measure_detector
        cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), "model": "centernet_small", "image_size": 64,
                                     "batch_size": 2})
    else:
        model, measure = create_model("resnet26", num_classes=3, in_chans=1, width=0.25), measure_classifier
        cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), "model": "resnet26", "image_size": 32,
                                     "batch_size": 2, "model_kwargs": {"in_chans": 1}})
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure(model, cfg, torch.device("cpu"))
    after = model.state_dict()
    assert not model.training
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []


@pytest.mark.slow  # ~30 s on 2 cores: two rows × three stages; tests/test_sbir_task.py covers the stages
def test_sbir_study_trains_three_stages_per_run_on_user_folders(tmp_path):
    """`sbir` on a user's sketch and photo folders with a zero-shot class list: every run trains
    stages 1–3, reports Tables 4.3/4.4's columns and the chance level, and compares the rows."""
    classes = ["cat", "dog", "owl", "emu"]
    for kind, mode in (("sk", "L"), ("ph", "RGB")):
        for c, name in enumerate(classes):
            (tmp_path / kind / name).mkdir(parents=True)
            for n in range(5):
                img = np.full((32, 32) if mode == "L" else (32, 32, 3), 255, np.uint8)
                img[4 + 6 * c: 8 + 6 * c, 2 + n: 30] = 0
                Image.fromarray(img).save(tmp_path / kind / name / f"{n}.png")
    (tmp_path / "unseen.txt").write_text("emu\n")
    data = f"folders:{tmp_path / 'sk'},{tmp_path / 'ph'},{tmp_path / 'unseen.txt'}"
    res = run_study("sbir", preset="smoke", seeds=1, data=data, out=tmp_path / "s", device="cpu",
                    overrides=["data_kwargs={}"])
    assert [line["row"] for line in res["summary"]] == ["ResNet26", "HIB patch 2-2 (nl)"]
    for run in res["runs"]:
        m = run["metrics"]
        assert {"zs_uni_mAP", "sketch_top1", "photo_top1", "mAP", "P@10", "mAP_random", "query_ms"} <= set(m)
        assert 0 < m["mAP_random"] < 1 and m["params_m"] > 0
    for stage in (1, 2, 3):
        assert (tmp_path / "s" / "ResNet26" / "seed0" / f"stage{stage}" / "checkpoints" / "last.safetensors").is_file()
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert {(c["row"], c["reference"]) for c in results["comparisons"]} == {("HIB patch 2-2 (nl)", "ResNet26")}
    html = (tmp_path / "s" / "report.html").read_text()
    assert "Held-out sketch queries" in html and "not drawn" not in html


class _Stop(Exception):
    pass


def test_study_reads_each_data_spec_once_before_training(tmp_path, monkeypatch):
    """Before any run trains, the study builds each distinct data spec's datasets once, in its own
    process (parallel runs would race to generate built-in data); unreadable data stops it in one
    line before it makes its folder."""
    from hybridvision.studies import runner

    ann, imgs = _write_user_coco(tmp_path / "user")
    calls = []
    real = DetectionTask.build_data
    monkeypatch.setattr(DetectionTask, "build_data", lambda self, cfg: calls.append(cfg.out) or real(self, cfg))

    def no_training(study, preset, runs, jobs, total):
        calls.append(("train", len(runs)))
        raise _Stop

    monkeypatch.setattr(runner, "_train_all", no_training)
    with pytest.raises(_Stop):
        run_study("cornernet-nonlocal", preset="smoke", seeds=2, data=f"coco:{ann},{imgs}", out=tmp_path / "s",
                  device="cpu")
    assert len(calls) == 2 and calls[1] == ("train", 8)  # one data spec: built once, then 8 runs train

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserInputError, match="bad.json"):
        run_study("cornernet-nonlocal", preset="smoke", seeds=1, data=f"coco:{bad},{imgs}", out=tmp_path / "s2",
                  device="cpu")
    assert not (tmp_path / "s2").exists()
