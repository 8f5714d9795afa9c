"""Bad inputs found by trying every verb as a new user would (the cases a first round of fixes
left): each ends in one `error:` line with exit 2, or is handled as the user meant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hybridvision.data.builtin.amounts import make_amounts
from hybridvision.data.builtin.bimodal import make_bimodal
from hybridvision.engine.checkpoint import save_checkpoint
from hybridvision.factory import create_model
from test_image_inputs import _corrupt_idat_png


@pytest.mark.parametrize("args", [
    ["data", "make", "amounts", "--train", "99999999999999999999"],  # hung, filling memory
    ["data", "make", "amounts", "--val", "2000000"],
    ["data", "make", "sketches", "--per-class", "2000000"],
    ["data", "make", "bimodal", "--photos", "2000000"],
    ["data", "make", "bimodal", "--size", "100000"],
])
def test_generator_counts_are_bounded(cli, tmp_path, args):
    code, _, err = cli(*args, "--out", tmp_path / "d")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "d").exists()


def test_the_same_bound_holds_for_data_kwargs(cli, tmp_path):
    code, _, err = cli("train", "--model", "fcos_demo", "--data", "builtin:amounts", "--out", tmp_path / "r",
                       "data_kwargs.n_train=2000000", f"data_root={tmp_path / 'data'}")
    assert code == 2 and "n_train" in err and len(err.strip().splitlines()) == 1, err


def test_export_of_an_sbir_model_is_one_line(cli, tmp_path):
    """Before: a TypeError traceback (its two branches return a tuple)."""
    out = tmp_path / "s.onnx"
    code, stdout, err = cli("export", "--model", "sbir_resnet26", "--out", out, "--size", "32", "--no-check")
    assert code == 2 and err.startswith("error: export: sbir_resnet26 is a sbir model"), err
    assert len(err.strip().splitlines()) == 1 and not out.exists() and "exporting" not in stdout


def test_retrieve_prints_the_query_path_whole(cli, tmp_path):
    """Before: the query's path was the table's title, wrapped to the table's width."""
    deep = tmp_path / ("a-long-folder-name-for-the-data-" * 4)
    make_bimodal(deep, sketches=1, photos=1, size=32)
    torch.manual_seed(0)
    model = create_model("sbir_resnet26", num_classes=27, width=0.25, hidden=32, embed_dim=16)
    weights = save_checkpoint(tmp_path, "w", model, extra={
        "model": "sbir_resnet26", "num_classes": 27, "task": "sbir", "image_size": 32,
        "model_kwargs": {"width": 0.25, "hidden": 32, "embed_dim": 16}})
    query = deep / "sketches" / "fish" / "0000.png"
    code, out, err = cli("retrieve", "--query", query, "--weights", weights, "--gallery", deep / "photos",
                         "-k", "2", "--cache", tmp_path / "cache", "--device", "cpu")
    assert code == 0, err
    assert any(line.startswith(str(query)) for line in out.splitlines()), out


def _coco(tmp_path: Path) -> tuple[Path, Path]:
    make_amounts(tmp_path / "a", n_train=1, n_val=1, seed=0, image_size=64)
    return tmp_path / "a" / "val" / "annotations.json", tmp_path / "a" / "val" / "images"


def test_data_check_decodes_every_pixel(cli, tmp_path):
    """Before: a PNG whose pixel data is corrupt (chunk CRCs right) passed `data check` (exit 0,
    "OK") while `train` and `predict` refused it."""
    ann, images = _coco(tmp_path)
    (png,) = images.glob("*.png")
    _corrupt_idat_png(png)
    code, out, err = cli("data", "check", ann, "--images", images)
    assert code == 1 and "cannot be decoded" in err and png.name in err, (out, err)


def test_data_check_of_a_file_that_is_not_json_is_one_error_line(cli, tmp_path):
    """Before: two lines without `error:`, exit 1."""
    ann, images = _coco(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe[]")
    code, _, err = cli("data", "check", bad, "--images", images)
    assert code == 2 and err.startswith(f"error: {bad}") and "UTF-8" in err, err
    assert len(err.strip().splitlines()) == 1
    # a COCO file with a missing key is still a finding of the report (exit 1), not an input error
    data = json.loads(ann.read_text())
    del data["categories"]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(data))
    code, _, err = cli("data", "check", partial, "--images", images)
    assert code == 1 and "categories" in err, err
