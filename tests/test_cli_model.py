"""CLI verbs on a trained model: eval --run / --weights, predict, explain (a tiny NL-FCOS run)."""

from __future__ import annotations

import json
import sys

import pytest
from PIL import Image

from hybridvision.cli import main
from hybridvision.config import TrainConfig
from hybridvision.engine.trainer import train


@pytest.fixture(scope="module")
def nl_run(tiny_amounts, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "nl"
    cfg = TrainConfig(model="nl_fcos_small", data="builtin:amounts", data_root=str(tiny_amounts),
                      data_kwargs=dict(n_train=32, n_val=8, image_size=64), image_size=64, epochs=1,
                      max_steps=2, batch_size=8, out=str(out), progress=False, device="cpu")
    train(cfg)
    return out


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["hybridvision", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def test_eval_run_and_weights(monkeypatch, capsys, nl_run, tiny_amounts, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--run", nl_run, "--device", "cpu")
    assert code == 0, err
    m = json.loads((nl_run / "eval/coco_metrics.json").read_text())
    assert all(k in m for k in KEYS) and "per_class" in m
    preds = json.loads((nl_run / "eval/predictions.json").read_text())
    assert isinstance(preds, list)
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--weights", nl_run / "checkpoints/last.safetensors",
                           "--data", "builtin:amounts", "--out", tmp_path / "ev", "--device", "cpu")
    assert code == 0, err
    m2 = json.loads((tmp_path / "ev/coco_metrics.json").read_text())
    assert {k: m2[k] for k in KEYS} == pytest.approx({k: m[k] for k in KEYS})  # same data, same model


def test_predict_folder_and_corrupt_image(monkeypatch, capsys, nl_run, tiny_amounts, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    for p in sorted((tiny_amounts / "amounts/val/images").iterdir())[:2]:
        (src / p.name).write_bytes(p.read_bytes())
    code, _, err = run_cli(monkeypatch, capsys, "predict", src, "--weights",
                           nl_run / "checkpoints/last.safetensors", "--out", tmp_path / "pred",
                           "--conf", "0.0", "--device", "cpu")
    assert code == 0, err
    pngs = sorted((tmp_path / "pred").glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == Image.open(next(src.iterdir())).size
    recs = json.loads((tmp_path / "pred/predictions.json").read_text())
    assert recs and {"file_name", "category_id", "bbox", "score"} <= set(recs[0])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    code, _, err = run_cli(monkeypatch, capsys, "predict", bad, "--weights",
                           nl_run / "checkpoints/last.safetensors", "--out", tmp_path / "p2")
    assert code != 0 and "bad.png" in err and "Traceback" not in err


def test_explain_writes_overlay(monkeypatch, capsys, nl_run, tiny_amounts, tmp_path):
    img = sorted((tiny_amounts / "amounts/val/images").iterdir())[0]
    out = tmp_path / "attn.png"
    code, _, err = run_cli(monkeypatch, capsys, "explain", "--weights", nl_run / "checkpoints/last.safetensors",
                           "--image", img, "--point", "30,20", "--out", out)
    assert code == 0, err
    assert Image.open(out).size == Image.open(img).size
    code, _, err = run_cli(monkeypatch, capsys, "explain", "--weights", nl_run / "checkpoints/last.safetensors",
                           "--image", img, "--point", "999,20", "--out", out)
    assert code != 0 and "outside" in err


def test_attention_maps_cover_each_level(nl_run):
    """The shared head block is called once per pyramid level; each map sums to 1 (softmax)."""
    import torch

    from hybridvision.api import load_trained
    from hybridvision.explain import attention_maps

    model, _ = load_trained(nl_run / "checkpoints/last.safetensors")
    maps = attention_maps(model, torch.rand(1, 3, 64, 64), (10.0, 20.0))
    names = {m["name"] for m in maps}
    assert len(maps) == 3 * len(names)  # 3 levels (P3–P5) per block
    for m in maps:
        assert float(m["map"].sum()) == pytest.approx(1.0, abs=1e-4)


def test_demo_grid_of_val_predictions(nl_run):
    """The demo's last step: validation images, ground truth beside predictions, as one PNG."""
    from hybridvision.config import load_config
    from hybridvision.demo import _save_val_grid

    _save_val_grid(load_config(nl_run / "config.yaml"), nl_run, n=4)
    img = Image.open(nl_run / "plots/val_predictions.png")
    assert img.size[0] > 2 * 64 and img.size[1] > 4 * 64  # two columns, four rows of 64² images
