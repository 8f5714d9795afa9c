"""CLI: every verb has --help; bad input gives one line on stderr and a non-zero exit."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


VERBS = [[], ["models"], ["train"], ["eval"], ["predict"], ["demo"], ["data"], ["data", "make"],
         ["data", "make", "amounts"], ["data", "make", "sketches"], ["data", "convert"],
         ["data", "convert", "montos"], ["data", "convert", "voc"], ["data", "convert", "yolo"],
         ["data", "convert", "csv"], ["data", "make", "bimodal"], ["data", "check"], ["study"], ["explain"],
         ["bench"], ["export"], ["retrieve"]]



@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v) or "root")
def test_every_verb_has_help(cli, verb):
    code, out, _ = cli(*verb, "--help")
    assert code == 0 and "Usage" in out


def test_no_help_text_loses_brackets_to_rich_markup():
    """Rich reads "[word]" as a style tag and drops it ("pip install 'hybridvision[mnist]'" showed
    as "'hybridvision'"): every help text and docstring escapes such brackets."""
    import re

    from typer.main import get_command

    from hybridvision.cli import app

    tag = re.compile(r"(?<!\\)\[[a-z#/@][^\[\]]*\]")  # rich's markup tag, unescaped

    def texts(command):
        yield command.name, command.help or ""
        for param in command.params:
            yield f"{command.name} {param.name}", getattr(param, "help", None) or ""
        for sub in getattr(command, "commands", {}).values():  # a group's verbs
            yield from texts(sub)

    found = [(where, m.group()) for where, text in texts(get_command(app)) for m in tag.finditer(text)]
    assert found == []
    assert tag.search("pip install 'hybridvision[mnist]'") and not tag.search("'hybridvision\\[mnist]'")


def _valid_coco(tmp_path):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    images, anns = [], []
    for i in range(1, 4):
        Image.fromarray(np.full((40, 50, 3), 30 * i, np.uint8)).save(img_dir / f"im{i}.png")
        images.append({"id": i, "file_name": f"im{i}.png", "width": 50, "height": 40})
        anns.append({"id": 10 + i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 10],
                     "area": 200, "iscrowd": 0})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    return coco, img_dir


def _corrupt_image(img_dir):
    (img_dir / "im2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")


def _missing_image(img_dir):
    (img_dir / "im3.png").unlink()


MALFORMED = {
    "missing_key": lambda c, d: c["annotations"][0].pop("bbox"),
    "bbox_not_4_numbers": lambda c, d: c["annotations"][0].__setitem__("bbox", [1, 2, 3]),
    "bbox_not_finite": lambda c, d: c["annotations"][0].__setitem__("bbox", [1, 2, "nan", 4]),
    "zero_size": lambda c, d: c["annotations"][0].__setitem__("bbox", [5, 5, 0, 10]),
    "negative_size": lambda c, d: c["annotations"][0].__setitem__("bbox", [5, 5, 10, -3]),
    "outside_image": lambda c, d: c["annotations"][0].__setitem__("bbox", [40, 30, 30, 30]),
    "unknown_category": lambda c, d: c["annotations"][0].__setitem__("category_id", 7),
    "duplicate_ann_id": lambda c, d: c["annotations"][1].__setitem__("id", 11),
    "duplicate_image_id": lambda c, d: c["images"][1].__setitem__("id", 1),
    "image_missing": lambda c, d: _missing_image(d),
    "image_not_decodable": lambda c, d: _corrupt_image(d),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_data_check_and_train_reject_malformed(cli, tmp_path, case):
    coco, img_dir = _valid_coco(tmp_path)
    coco = copy.deepcopy(coco)
    MALFORMED[case](coco, img_dir)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    before = ann.read_bytes()
    code, _, err = cli("data", "check", ann, "--images", img_dir)
    assert code != 0
    assert "ann.json" in err or "im" in err
    assert "Traceback" not in err
    code, _, err = cli("train", "--data", f"coco:{ann},{img_dir}",
                           "--epochs", "1", "--device", "cpu", "--out", tmp_path / "run")
    assert code != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err  # one line
    assert ann.read_bytes() == before  # nothing the user gave is modified


def test_data_check_ok(cli, tmp_path):
    coco, img_dir = _valid_coco(tmp_path)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    code, out, _ = cli("data", "check", ann, "--images", img_dir)
    assert code == 0 and "OK" in out
    n_boxes = len(coco["annotations"])
    assert f"{len(coco['images'])} images" in out and f"{n_boxes} boxes" in out and "COCO size buckets" in out


def test_unreadable_json_is_one_line(cli, tmp_path):
    ann = tmp_path / "broken.json"
    ann.write_text("{not json")
    code, _, err = cli("data", "check", ann, "--images", tmp_path)
    assert code != 0 and "broken.json" in err and "Traceback" not in err


def test_unknown_model_is_one_line(cli, tmp_path):
    code, _, err = cli("train", "--model", "fcos_r5O_fpn", "--out", tmp_path / "x")
    assert code != 0 and "unknown model" in err and len(err.strip().splitlines()) == 1


def test_models_lists_registry(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = cli("models", "fcos*")
    assert code == 0 and "fcos_r50_fpn" in out and "fcos_demo" in out
    # what each one is: parameters, input and its builder's first sentence
    assert "0.98M" in out  # fcos_small and fcos_demo
    assert "Tiny CPU FCOS" in out and "Small FCOS" in out and "sides ×32" in out


def test_eval_gt_dt_writes_12_metrics(cli, tmp_path):
    coco, _ = _valid_coco(tmp_path)
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(coco))
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
            for a in coco["annotations"]]
    dt = tmp_path / "dt.json"
    dt.write_text(json.dumps(dets))
    code, out, err = cli("eval", "--gt", gt, "--dt", dt, "--out", tmp_path / "m.json")
    assert code == 0, err
    m = json.loads((tmp_path / "m.json").read_text())
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert all(k in m for k in keys)
    assert m["AP"] == pytest.approx(1.0) and m["APl"] == -1


def test_eval_dt_not_json(cli, tmp_path):
    coco, _ = _valid_coco(tmp_path)
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(coco))
    dt = tmp_path / "dt.json"
    dt.write_text("[{]")
    code, _, err = cli("eval", "--gt", gt, "--dt", dt)
    assert code != 0 and "dt.json" in err and "Traceback" not in err


def test_console_script_runs_as_a_process():
    proc = subprocess.run([sys.executable, "-m", "hybridvision", "data", "check", "/nonexistent.json",
                           "--images", "/tmp"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "nonexistent.json" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_writes_rows_and_rejects_mixed_tasks(cli, tmp_path):
    out = tmp_path / "bench.json"
    code, stdout, _ = cli("bench", "fcos_demo", "fcos_small", "--size", "64",
                              "--runs", "2", "--warmup", "0", "--no-memory", "--out", out)
    assert code == 0 and "fcos_small" in stdout
    data = json.loads(out.read_text())
    assert data["size"] == 64 and [r["name"] for r in data["rows"]] == ["fcos_demo", "fcos_small"]
    assert data["rows"][0]["ratio"] == 1.0

    code, _, err = cli("bench", "resnet26", "fcos_demo")
    assert code == 2 and "one task" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("bench", "torchvision:resnet18", "fcos_demo", "--size", "64")
    assert code == 2 and "one task" in err and len(err.strip().splitlines()) == 1
