"""Studies: report arithmetic against hand values, dry runs, and a real (tiny) study on a
user's COCO-format dataset written by the test."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from hybridvision.errors import UserInputError
from hybridvision.studies.base import get_study, run_study
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
    assert len(res["runs"]) == 3 * len(study.rows["quick"]) == 18
    assert {r["row"] for r in res["runs"]} == {"FCOS", "NL-FCOS-cls", "NL-FCOS-reg", "NL-FCOS",
                                               "NL-FCOS-PANet", "NL-FCOS-deep"}
    res = run_study("hybrid-classification", seeds=2, dry_run=True, out=tmp_path)
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
    kw = dict(preset="quick", seeds=2, data=f"coco:{ann},{imgs}", out=out, device="cpu",
              overrides=["epochs=1", "max_steps=1", "image_size=64", "batch_size=4"],
              rows=["FCOS", "NL-FCOS"])
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
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 4
    # a second call resumes: finished runs are read back, not trained again
    marker = (out / "FCOS/seed0/result.json").stat().st_mtime_ns
    run_study("fcos-nonlocal", **kw)
    assert (out / "FCOS/seed0/result.json").stat().st_mtime_ns == marker


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
    res = run_study("hybrid-classification", preset="quick", seeds=1, data=f"{kind}:{root}", out=out,
                    device="cpu", overrides=["epochs=1", "max_steps=1", "image_size=32", "batch_size=4"],
                    rows=["HIB NL 3-1"])
    (line,) = res["summary"]
    assert line["row"] == "HIB NL 3-1"
    assert 0 <= line["top1"]["mean"] <= 1 and line["top5"]["mean"] == 1  # 2 classes: top-5 is all
    table = json.loads((out / "table_3_1.json").read_text())
    assert set(table) == {"ResNet26", "HIB NL 3-1"}
    assert table["HIB NL 3-1"]["params_m"] == pytest.approx(11.37, rel=0.01)
    report = (out / "report.md").read_text()
    assert "| HIB NL 3-1 |" in report and "| SAN10 pairwise |" not in report
    assert f"{kind}:" in report
