"""CLI verbs on a trained model: eval --run / --weights, predict, explain (a tiny NL-FCOS run)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

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



KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def test_eval_run_and_weights(cli, nl_run, tiny_amounts, tmp_path):
    code, out, err = cli("eval", "--run", nl_run, "--device", "cpu")
    assert code == 0, err
    m = json.loads((nl_run / "eval/coco_metrics.json").read_text())
    assert all(k in m for k in KEYS) and "per_class" in m
    preds = json.loads((nl_run / "eval/predictions.json").read_text())
    assert isinstance(preds, list)
    code, _, err = cli("eval", "--weights", nl_run / "checkpoints/last.safetensors",
                           "--data", "builtin:amounts", "--out", tmp_path / "ev", "--device", "cpu")
    assert code == 0, err
    m2 = json.loads((tmp_path / "ev/coco_metrics.json").read_text())
    assert {k: m2[k] for k in KEYS} == pytest.approx({k: m[k] for k in KEYS})  # same data, same model


def test_eval_with_test_time_augmentation(cli, nl_run, tmp_path):
    for mode in ("flip", "multiscale"):
        code, out, err = cli("eval", "--run", nl_run, "--device", "cpu", "--tta", mode, "--out", tmp_path / mode)
        assert code == 0, err
        m = json.loads((tmp_path / mode / "coco_metrics.json").read_text())
        assert all(k in m for k in KEYS)
    code, _, err = cli("eval", "--run", nl_run, "--tta", "rotate", "--out", tmp_path / "bad")
    assert code == 2 and "--tta rotate" in err and "flip" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_predict_folder_and_corrupt_image(cli, nl_run, tiny_amounts, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    for p in sorted((tiny_amounts / "amounts/val/images").iterdir())[:2]:
        (src / p.name).write_bytes(p.read_bytes())
    code, _, err = cli("predict", src, "--weights",
                           nl_run / "checkpoints/last.safetensors", "--out", tmp_path / "pred",
                           "--conf", "0.0", "--device", "cpu")
    assert code == 0, err
    pngs = sorted((tmp_path / "pred").glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == Image.open(next(src.iterdir())).size
    recs = json.loads((tmp_path / "pred/predictions.json").read_text())
    assert recs and set(recs[0]) == {"image_id", "category_id", "bbox", "score"}  # true COCO results
    # sliced inference on a 2×2 mosaic of val images at full resolution, more detections allowed
    tiles = [Image.open(p) for p in sorted(src.iterdir())]
    w, h = tiles[0].size
    mosaic = Image.new("RGB", (2 * w, 2 * h))
    for k, t in enumerate(tiles * 2):
        mosaic.paste(t, ((k % 2) * w, (k // 2) * h))
    (tmp_path / "big").mkdir()
    mosaic.save(tmp_path / "big" / "mosaic.png")
    code, _, err = cli("predict", tmp_path / "big", "--weights", nl_run / "checkpoints/last.safetensors",
                       "--out", tmp_path / "tiled", "--tile", "--conf", "0.0", "--max-det", "300", "--iou", "0.5",
                       "--device", "cpu")
    assert code == 0, err
    recs = json.loads((tmp_path / "tiled/predictions.json").read_text())
    assert recs and all(r["bbox"][0] + r["bbox"][2] <= 2 * w + 1e-3 for r in recs)
    assert Image.open(tmp_path / "tiled" / "mosaic.png.png").size == (2 * w, 2 * h)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    code, _, err = cli("predict", bad, "--weights",
                           nl_run / "checkpoints/last.safetensors", "--out", tmp_path / "p2")
    assert code != 0 and "bad.png" in err and "Traceback" not in err


def test_explain_writes_overlay(cli, nl_run, tiny_amounts, tmp_path):
    img = sorted((tiny_amounts / "amounts/val/images").iterdir())[0]
    out = tmp_path / "attn.png"
    code, _, err = cli("explain", "--weights", nl_run / "checkpoints/last.safetensors",
                           "--image", img, "--point", "30,20", "--out", out)
    assert code == 0, err
    assert Image.open(out).size == Image.open(img).size
    code, _, err = cli("explain", "--weights", nl_run / "checkpoints/last.safetensors",
                           "--image", img, "--point", "999,20", "--out", out, "--exist-ok")
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


def test_export_onnx_round_trip_decodes_like_pytorch(cli, nl_run, tmp_path):
    """The exported graph, run in onnxruntime and decoded in Python, gives PyTorch's detections."""
    import onnxruntime as ort

    from hybridvision.api import load_trained
    from hybridvision.export import unflatten_outputs

    weights = nl_run / "checkpoints" / "best.safetensors"
    out = tmp_path / "nl.onnx"
    code, stdout, err = cli("export", "--weights", weights, "--out", out)
    assert code == 0, err
    assert "onnxruntime agrees" in stdout
    info = json.loads((tmp_path / "nl.onnx.json").read_text())
    assert info["task"] == "detection" and info["input"]["shape"] == ["batch", 3, 64, 64]
    assert len(info["outputs"]) == 3 * len(info["strides"]) and info["class_names"]
    assert info["check"]["max_rel_diff"] < 1e-3

    model, _ = load_trained(weights)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))  # batch 1: dynamic axis
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    onnx_out = unflatten_outputs(info["outputs"], session.run(info["outputs"], {"images": x.numpy()}))
    # Decode every (location, class) candidate with no ranking step (no top-k cut, no suppression,
    # no cap): a model trained for 2 steps scores many candidates within 1e-6 of each other, and
    # kernels that differ in the last bit (onnxruntime's against PyTorch's, on another CPU) reorder
    # such near-ties, which changes which ones a top-k or an NMS keeps. Without ranking, both
    # runtimes decode the same candidates, and each one's box and score must agree.
    model.score_thresh, model.topk_candidates, model.detections_per_img = 0.0, 10**9, 10**9
    model.nms_thresh = 1.0  # NMS drops IoU > 1: nothing
    with torch.no_grad():
        ref = model.decode(model(x), [(64, 64)])[0]
        got = model.decode(onnx_out, [(64, 64)])[0]
    assert len(ref["scores"]) == len(got["scores"]) > 100
    _assert_same_detections(got, ref, score_tol=1e-4, box_tol=1e-3)
    # the control: a graph whose levels came back in another order decodes to other detections
    swapped = {k: v[::-1] if isinstance(v, list) else v for k, v in onnx_out.items()}
    with torch.no_grad():
        wrong = model.decode(swapped, [(64, 64)])[0]
    with pytest.raises(AssertionError):
        _assert_same_detections(wrong, ref, score_tol=1e-4, box_tol=1e-3)


def _assert_same_detections(got: dict, ref: dict, *, score_tol: float, box_tol: float) -> None:
    """The same detections in any order: per class, a one-to-one matching (Hungarian, on the
    largest difference of a box coordinate or the score) within the tolerances."""
    from scipy.optimize import linear_sum_assignment

    assert sorted(got["labels"].tolist()) == sorted(ref["labels"].tolist())
    for label in ref["labels"].unique():
        a = torch.cat([got["boxes"], got["scores"][:, None]], 1)[got["labels"] == label]  # [n, 5]
        b = torch.cat([ref["boxes"], ref["scores"][:, None]], 1)[ref["labels"] == label]  # [n, 5]
        box_diff = (a[:, None, :4] - b[None, :, :4]).abs().amax(-1)  # [n, n]
        score_diff = (a[:, None, 4] - b[None, :, 4]).abs()  # [n, n]
        cost = torch.maximum(box_diff / box_tol, score_diff / score_tol)  # ≤ 1: within both tolerances
        rows, cols = linear_sum_assignment(cost.numpy())
        worst = float(cost[rows, cols].max())
        assert worst <= 1.0, f"class {int(label)}: a detection differs by {worst:.2f}× the tolerance"


def test_export_classifier_and_bad_requests(cli, tmp_path):
    from hybridvision.export import export_onnx
    from hybridvision.factory import create_model

    model = create_model("hib_patch_2_2_nl", width=0.25, in_chans=1, num_classes=5)
    info = export_onnx(model, tmp_path / "hib.onnx", size=64, in_chans=1)
    assert info["task"] == "classification" and info["outputs"] == ["logits"]
    assert info["check"]["max_rel_diff"] < 1e-3 and (tmp_path / "hib.onnx").is_file()

    code, _, err = cli("export")
    assert code == 2 and "--weights" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("export", "--model", "fcos_demo", "--size", "8",
                           "--out", tmp_path / "x.onnx")
    assert code == 2 and "--size" in err and not (tmp_path / "x.onnx").exists()


def test_export_that_fails_its_check_writes_nothing(tmp_path):
    """A zero tolerance cannot hold for float32 kernels of two runtimes: the check fails, and
    neither the .onnx file nor a temporary one is left behind."""
    from hybridvision.export import ExportCheckError, export_onnx
    from hybridvision.factory import create_model

    with pytest.raises(ExportCheckError, match="not faithful"):
        export_onnx(create_model("fcos_demo", num_classes=3), tmp_path / "m.onnx", size=64, atol=0.0, rtol=0.0)
    assert list(tmp_path.iterdir()) == []


def test_fine_tune_for_tiles_as_the_readme_says(cli, nl_run, tmp_path):
    """README, sliced inference: more epochs from a run's weights with a quarter mosaics (here two
    steps). The new run starts from the given weights, records the mosaics, and changes no input."""
    from safetensors.torch import load_file, save_file

    start = load_file(nl_run / "checkpoints/last.safetensors")
    params = ["head.cls_logits.bias", "head.centerness.bias"]
    start = {k: v + 1.0 if k in params else v for k, v in start.items()}  # far from any seeded init
    weights = tmp_path / "start.safetensors"
    save_file(start, str(weights))
    before = weights.read_bytes()
    out = tmp_path / "nl-tiles"
    code, _, err = cli("train", "--config", nl_run / "config.yaml", "--weights", weights, "--out", out,
                       "augment.mosaic=0.25", "epochs=6", "max_steps=2", "lr=0.0002", "schedule=cosine",
                       "warmup_steps=0", "progress=false")
    assert code == 0, err
    assert weights.read_bytes() == before
    assert "mosaic: 0.25" in (out / "config.yaml").read_text()
    new = load_file(out / "checkpoints/last.safetensors")
    assert new.keys() == start.keys()
    drift = max(float((new[k] - start[k]).abs().max()) for k in params)
    assert 0 < drift < 0.05, drift  # two small steps from the given weights
