"""Keypoint-heatmap machinery (ops/heatmap.py, losses.heatmap_focal_loss) against hand oracles:
the radius's defining IoU, closed forms, a loop-drawn Gaussian, loop-computed peaks and top-K,
and the penalty-reduced focal loss computed element by element."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from hybridvision.losses import heatmap_focal_loss
from hybridvision.ops import draw_gaussians, gather_at, gaussian_radius, heatmap_peaks, topk_peaks


def _iou(a, b) -> float:
    return float(box_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)))


@pytest.mark.parametrize("h,w", [(100.0, 100.0), (30.0, 80.0), (12.0, 5.0)])
@pytest.mark.parametrize("o", [0.3, 0.7])
def test_corrected_radius_keeps_exactly_the_overlap(h, w, o):
    """Each of the three corner moves at its own root gives IoU = o exactly, and the corrected
    radius is the smallest of the three roots (so every move within it keeps IoU ≥ o)."""
    r = float(gaussian_radius(h, w, o))
    box = (0.0, 0.0, w, h)
    # case 1: shift by (r1, r1); case 2: shrink by 2·r2; case 3: grow by 2·r3, each root from its quadratic
    r1 = ((h + w) - math.sqrt((h + w) ** 2 - 4 * w * h * (1 - o) / (1 + o))) / 2
    r2 = (2 * (h + w) - math.sqrt(4 * (h + w) ** 2 - 16 * (1 - o) * w * h)) / 8
    r3 = (-2 * o * (h + w) + math.sqrt(4 * o * o * (h + w) ** 2 - 16 * o * (o - 1) * w * h)) / (8 * o)
    assert _iou(box, (r1, r1, w + r1, h + r1)) == pytest.approx(o, abs=1e-9)
    assert _iou(box, (r2, r2, w - r2, h - r2)) == pytest.approx(o, abs=1e-9)
    assert _iou(box, (-r3, -r3, w + r3, h + r3)) == pytest.approx(o, abs=1e-9)
    assert r == pytest.approx(min(r1, r2, r3), rel=1e-6)


def test_corrected_radius_closed_form_for_a_square():
    """A square of side s at o = 0.7: the inward case binds, r = s(1 − √o)/2."""
    s, o = 100.0, 0.7
    closed = min(s * (1 - math.sqrt(2 * o / (1 + o))), s * (1 - math.sqrt(o)) / 2, s * (1 / math.sqrt(o) - 1) / 2)
    assert closed == pytest.approx(s * (1 - math.sqrt(o)) / 2)
    assert float(gaussian_radius(s, s, o)) == pytest.approx(closed, rel=1e-6)  # 8.167


def test_original_radius_is_the_released_formula_and_differs():
    """The released CornerNet/CenterNet code's radius for a 100×100 box at 0.7 — (b + √Δ)/2 per
    case — is 27.33 cells, against 8.17 for the corrected one (CornerNet issue: 'the radius is
    wrong'); both forms agree only by accident."""
    h = w = 100.0
    o = 0.7
    b1, c1 = h + w, w * h * (1 - o) / (1 + o)
    b2, c2 = 2 * (h + w), (1 - o) * w * h
    b3, c3 = -2 * o * (h + w), (o - 1) * w * h
    expected = min((b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2, (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2,
                   (b3 + math.sqrt(b3 ** 2 - 16 * o * c3)) / 2)
    original = float(gaussian_radius(h, w, o, form="original"))
    assert original == pytest.approx(expected, rel=1e-6)
    assert original == pytest.approx(27.332, abs=1e-3)
    assert float(gaussian_radius(h, w, o)) == pytest.approx(8.167, abs=1e-3)
    with pytest.raises(ValueError, match="form"):
        gaussian_radius(h, w, o, form="cornernet")


def test_draw_gaussians_equals_a_loop_and_takes_the_maximum():
    heat = torch.zeros(2, 9, 11)
    centers = torch.tensor([[3, 4], [5, 4], [10, 0]])
    radii = torch.tensor([2.7, 1.2, 3.0])
    labels = torch.tensor([0, 0, 1])
    draw_gaussians(heat, centers, radii, labels)
    expected = torch.zeros(2, 9, 11)
    for (cx, cy), rad, k in zip(centers.tolist(), radii.tolist(), labels.tolist()):
        r = int(rad)
        sigma = (2 * r + 1) / 6
        for y in range(9):
            for x in range(11):
                if abs(x - cx) <= r and abs(y - cy) <= r:
                    g = math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma * sigma))
                    expected[k, y, x] = max(expected[k, y, x], g)
    torch.testing.assert_close(heat, expected)
    assert heat[0, 4, 3] == 1 and heat[0, 4, 5] == 1 and heat[1, 0, 10] == 1  # peaks exactly 1
    assert heat[0, 4, 4] < 1  # between two Gaussians: the max, not the sum (a sum would exceed 1)


def test_peaks_topk_and_gather_on_a_hand_case():
    heat = torch.zeros(1, 2, 4, 5)
    heat[0, 0, 1, 1] = 0.9
    heat[0, 0, 1, 2] = 0.5  # a neighbour of 0.9: not a peak
    heat[0, 1, 3, 4] = 0.7
    heat[0, 1, 0, 4] = 0.2
    peaks = heatmap_peaks(heat)
    expected = heat.clone()
    expected[0, 0, 1, 2] = 0
    torch.testing.assert_close(peaks, expected)
    scores, labels, ys, xs = topk_peaks(peaks, 3)
    assert scores[0].tolist() == pytest.approx([0.9, 0.7, 0.2])
    assert labels.tolist() == [[0, 1, 1]] and ys.tolist() == [[1, 3, 0]] and xs.tolist() == [[1, 4, 4]]
    maps = torch.arange(2 * 4 * 5, dtype=torch.float32).view(1, 2, 4, 5)
    got = gather_at(maps, ys, xs)  # [1, 3, 2]
    assert got.tolist() == [[[maps[0, d, y, x].item() for d in range(2)] for y, x in ((1, 1), (3, 4), (0, 4))]]
    assert topk_peaks(peaks, 100)[0].shape == (1, 40)  # k capped at K·H·W


def test_heatmap_focal_loss_equals_the_formula():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]], requires_grad=True)
    target = torch.tensor([[[[1.0, 0.6], [0.0, 0.2]]]])
    loss = heatmap_focal_loss(logits, target)
    total = 0.0
    for z, y in zip(logits.detach().flatten().tolist(), target.flatten().tolist()):
        p = min(max(1 / (1 + math.exp(-z)), 1e-4), 1 - 1e-4)
        total += (1 - p) ** 2 * math.log(p) if y == 1 else (1 - y) ** 4 * p ** 2 * math.log(1 - p)
    assert float(loss.detach()) == pytest.approx(-total / 1, rel=1e-6)  # one object
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # ÷ the number of objects given
    assert float(heatmap_focal_loss(logits.detach(), target, num_objects=4)) == pytest.approx(-total / 4, rel=1e-6)


def test_heatmap_focal_loss_without_objects_is_finite():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    loss = heatmap_focal_loss(logits, torch.zeros(2, 3, 8, 8))
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # extreme logits: the clamp keeps log() finite
    assert torch.isfinite(heatmap_focal_loss(torch.full((1, 1, 2, 2), 1e4), torch.ones(1, 1, 2, 2)))
    assert torch.isfinite(heatmap_focal_loss(torch.full((1, 1, 2, 2), -1e4), torch.ones(1, 1, 2, 2)))


def test_centernet_targets_and_loss_weights():
    """CenterNet's targets on a hand case (centre cell, offset, size in cells, Gaussian peak) and
    its total = 1·heatmap + 0.1·size + 1·offset."""
    from hybridvision.factory import create_model

    model = create_model("centernet_small", num_classes=2)
    targets = [dict(boxes=torch.tensor([[10.0, 6.0, 30.0, 22.0]]), labels=torch.tensor([1]))]
    tgt = model.prepare_targets(targets, (16, 16))
    # centre (20, 14) px = (5, 3.5) cells → cell (5, 3), offset (0, 0.5); size (20, 16) px = (5, 4) cells
    assert tgt["xs"].tolist() == [5] and tgt["ys"].tolist() == [3]
    assert tgt["offset"].tolist() == [[0.0, 0.5]] and tgt["size"].tolist() == [[5.0, 4.0]]
    assert tgt["heatmap"][0, 1, 3, 5] == 1 and tgt["heatmap"][0, 0].sum() == 0
    with torch.no_grad():
        outputs = model(torch.rand(1, 3, 64, 64))
    losses = model.loss(outputs, targets)
    assert float(losses["loss"]) == pytest.approx(
        float(losses["loss_heatmap"] + 0.1 * losses["loss_size"] + losses["loss_offset"]), rel=1e-6)
    size_p = outputs["size"][0, :, 3, 5]
    assert float(losses["loss_size"]) == pytest.approx(float(F.l1_loss(size_p, torch.tensor([5.0, 4.0]))), rel=1e-5)
    # an image without objects: finite, size and offset terms 0
    empty = model.loss(outputs, [dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))])
    assert torch.isfinite(empty["loss"]) and float(empty["loss_size"]) == 0 and float(empty["loss_offset"]) == 0
