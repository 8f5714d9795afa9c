"""Every registered detection model honours the detector contract on a tiny input:
forward (same keys in train and eval), loss with a ``"loss"`` total, backward, decode."""

from __future__ import annotations

import pytest
import torch

from hybridvision.factory import create_model, list_models

NUM_CLASSES = 3
SIZE = 64
# Hourglass-104 detectors (~200 M parameters, inputs a multiple of 128): the same classes as their
# small presets, which the fast suite covers; `make test-all` runs these too.
SLOW_DETECTORS = {"cornernet_hg104", "nl_cornernet_hg104", "cornernet_64", "nl_cornernet_64",
                  "centernet_triplets_hg104"}
DETECTORS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_DETECTORS else n
             for n in list_models(task="detection")]


def _targets() -> list[dict[str, torch.Tensor]]:
    return [dict(boxes=torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 20.0, 60.0, 34.0]]), labels=torch.tensor([0, 2]))]


def _check_outputs(out) -> None:
    assert isinstance(out, dict) and out
    for key, val in out.items():
        tensors = val if isinstance(val, (list, tuple)) else [val]
        assert all(isinstance(t, torch.Tensor) for t in tensors), key
        assert all(torch.isfinite(t).all() for t in tensors), key


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_contract(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES)
    size = -(-SIZE // model.size_divisible) * model.size_divisible  # inputs come padded to it
    images = torch.rand(2, 3, size, size)  # two: BatchNorm in training needs > 1 value at 1×1 maps

    model.train()
    out = model(images)
    _check_outputs(out)
    losses = model.loss(out, _targets() * 2)
    assert "loss" in losses
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(g is None or torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        out_eval = model(images)
    assert set(out_eval) == set(out)  # raw head outputs in both modes, no mode-dependent return
    dets = model.decode(out_eval, [(size, size - 8)] * 2)
    assert isinstance(dets, list) and len(dets) == 2
    det = dets[0]
    d = det["boxes"].shape[0]
    assert det["boxes"].shape == (d, 4) and det["scores"].shape == (d,) and det["labels"].shape == (d,)
    assert det["labels"].dtype == torch.int64
    if d:
        assert (det["labels"] >= 0).all() and (det["labels"] < NUM_CLASSES).all()
        assert (det["boxes"][:, 0::2] <= size - 8 + 1e-4).all() and (det["boxes"][:, 1::2] <= size + 1e-4).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()  # best first


def test_padding_is_the_mean_after_normalisation() -> None:
    """A mixed-size batch normalises as if each image were normalised alone, then zero-padded
    (torchvision's GeneralizedRCNNTransform order): padded pixels are 0, not ``-mean / std``."""
    from hybridvision.data.coco import collate_detection

    model = create_model("fcos_demo", num_classes=NUM_CLASSES)
    small, large = torch.rand(3, 40, 50), torch.rand(3, 64, 70)
    images, _, sizes = collate_detection([(small, {}), (large, {})], size_divisible=32)
    assert images.shape == (2, 3, 64, 96) and sizes == [(40, 50), (64, 70)]

    x = model.normalize(images, sizes)
    for b, im in enumerate((small, large)):
        h, w = im.shape[-2:]
        alone = model.normalize(im[None])[0]
        torch.testing.assert_close(x[b, :, :h, :w], alone)
        assert x[b, :, h:, :].abs().sum() == 0 and x[b, :, :, w:].abs().sum() == 0
    # without sizes the padding keeps its old value, -mean/std (a dark border)
    raw = model.normalize(images)
    assert torch.allclose(raw[0, :, 50:, :], (-model.pixel_mean / model.pixel_std)[0].expand(3, 14, 96))


# ------------------------------------------------------------------ perfect-prediction round trip

ROUND_TRIP_SIZES = [(160, 192), (128, 100)]  # the second image is padded in the batch


def _round_trip_targets() -> list[dict[str, torch.Tensor]]:
    # Boxes small and large, of several classes, none overlapping another of its class.
    return [
        dict(boxes=torch.tensor([[8.0, 10, 40, 34], [60, 20, 150, 140], [120, 100, 186, 156],
                                 [20, 90, 50, 150]]),
             labels=torch.tensor([0, 1, 2, 0])),
        dict(boxes=torch.tensor([[5.0, 5, 95, 120], [40, 30, 60, 52]]), labels=torch.tensor([2, 1])),
    ]


def _pycocotools_ap(gts, dets, sizes) -> float:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, ((h, w), gt, det) in enumerate(zip(sizes, gts, dets)):
        images.append(dict(id=i + 1, height=h, width=w))
        for (x0, y0, x1, y1), lab in zip(gt["boxes"].tolist(), gt["labels"].tolist()):
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=lab + 1,
                             bbox=[x0, y0, x1 - x0, y1 - y0], area=(x1 - x0) * (y1 - y0), iscrowd=0))
        for (x0, y0, x1, y1), s, lab in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                            det["labels"].tolist()):
            results.append(dict(image_id=i + 1, category_id=lab + 1, bbox=[x0, y0, x1 - x0, y1 - y0], score=s))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dict(images=images, annotations=anns,
                            categories=[dict(id=k + 1, name=str(k)) for k in range(NUM_CLASSES)])
        coco.createIndex()
        if not results:
            return 0.0
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


@pytest.mark.parametrize("name", DETECTORS)
def test_perfect_prediction_round_trip(name: str) -> None:
    """encode_targets → decode → COCO AP (pycocotools) = 1.0 for every registered detector, and a
    negative control: the encoding of other targets (one box moved, one relabelled) scores < 1."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES).eval()
    targets = _round_trip_targets()
    outputs = model.encode_targets(targets, ROUND_TRIP_SIZES)
    # the encoding has the shapes the model itself outputs for that padded batch
    pad = model.size_divisible
    h = -(-max(s[0] for s in ROUND_TRIP_SIZES) // pad) * pad
    w = -(-max(s[1] for s in ROUND_TRIP_SIZES) // pad) * pad
    with torch.no_grad():
        real = model(torch.zeros(len(targets), 3, h, w), ROUND_TRIP_SIZES)
    assert set(outputs) == set(real)
    for key in real:
        assert [t.shape for t in outputs[key]] == [t.shape for t in real[key]], key

    dets = model.decode(outputs, ROUND_TRIP_SIZES)
    for d, t in zip(dets, targets):
        assert len(d["boxes"]) == len(t["boxes"])  # one detection per object
    assert _pycocotools_ap(targets, dets, ROUND_TRIP_SIZES) == 1.0

    wrong = [{k: v.clone() for k, v in t.items()} for t in targets]
    wrong[0]["boxes"][1] += torch.tensor([30.0, 0, 30, 0])  # IoU with the truth < 0.5
    wrong[1]["labels"][0] = 0
    bad = model.decode(model.encode_targets(wrong, ROUND_TRIP_SIZES), ROUND_TRIP_SIZES)
    assert _pycocotools_ap(targets, bad, ROUND_TRIP_SIZES) < 1.0
