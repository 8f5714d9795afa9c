"""Oracles for the shared dense-detector functions (``ops/``, ``losses.py``): loops and
hand-computed values."""

from __future__ import annotations

import math

import torch
from torchvision.ops import box_iou, nms

from hybridvision.losses import giou_loss_ltrb, iou_loss_ltrb, ltrb_to_boxes
from hybridvision.ops.points import (
    distances_to_boxes,
    flatten_levels,
    level_locations,
    per_location,
    point_box_distances,
    unflatten_levels,
)
from hybridvision.ops.postprocess import clip_boxes_per_image, logit, nms_per_image

SHAPES = [(4, 6), (2, 3), (1, 2)]


def test_flatten_and_unflatten_are_inverse_and_row_major() -> None:
    maps = [torch.randn(2, 5, h, w) for h, w in SHAPES]
    flat = flatten_levels(maps)
    assert flat.shape == (2, sum(h * w for h, w in SHAPES), 5)
    # location 7 of level 0 is row 1, column 1 of a 6-wide map
    torch.testing.assert_close(flat[:, 7], maps[0][:, :, 1, 1])
    torch.testing.assert_close(flat[:, 24 + 4], maps[1][:, :, 1, 1])
    for got, want in zip(unflatten_levels(flat, SHAPES), maps):
        torch.testing.assert_close(got, want)


def test_locations_and_per_location_values_match_a_loop() -> None:
    strides = [8, 16, 32]
    locs = torch.cat(level_locations(SHAPES, strides))
    ranges = per_location([(0, 1), (1, 2), (2, 3)], SHAPES)
    want_locs, want_strides, want_ranges = [], [], []
    for (h, w), s, r in zip(SHAPES, strides, [(0, 1), (1, 2), (2, 3)]):
        for y in range(h):
            for x in range(w):
                want_locs.append((s // 2 + x * s, s // 2 + y * s))
                want_strides.append(s)
                want_ranges.append(r)
    assert locs.tolist() == [list(map(float, p)) for p in want_locs]
    assert per_location(strides, SHAPES).tolist() == want_strides
    assert ranges.tolist() == [list(map(float, r)) for r in want_ranges]


def test_point_box_distances_and_back() -> None:
    pts = torch.tensor([[10.0, 20.0], [50.0, 5.0]])
    boxes = torch.tensor([[0.0, 0, 30, 40], [40, 0, 60, 10]])
    d = point_box_distances(pts, boxes)  # [2, 2, 4]
    assert d[0, 0].tolist() == [10, 20, 20, 20] and d[1, 1].tolist() == [10, 5, 10, 5]
    assert (d[0, 1] > 0).all().item() is False  # the first point is outside the second box
    torch.testing.assert_close(distances_to_boxes(pts, torch.stack([d[0, 0], d[1, 1]])), boxes)


def test_clip_boxes_per_image_matches_a_loop() -> None:
    boxes = torch.tensor([[-5.0, 3, 120, 90], [10, -2, 40, 200], [0, 0, 500, 500]])
    images = torch.tensor([0, 1, 1])
    sizes = [(80, 100), (64, 48)]
    got = clip_boxes_per_image(boxes, images, sizes)
    for b, i in zip(range(3), images.tolist()):
        h, w = sizes[i]
        x0, y0, x1, y1 = boxes[b].tolist()
        want = [min(max(x0, 0), w), min(max(y0, 0), h), min(max(x1, 0), w), min(max(y1, 0), h)]
        assert got[b].tolist() == want


def test_nms_per_image_matches_a_per_image_class_loop() -> None:
    g = torch.Generator().manual_seed(0)
    n = 200
    xy = torch.rand(n, 2, generator=g) * 80
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 40 + 4], 1)
    scores = torch.rand(n, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    images = torch.randint(0, 2, (n,), generator=g)
    dets = nms_per_image(boxes, scores, labels, images, batch_size=3, num_classes=3,
                         iou_threshold=0.5, max_per_image=10)
    assert len(dets) == 3 and len(dets[2]["boxes"]) == 0  # image 2 has no candidates
    for i in range(2):
        kept = []
        for c in range(3):
            m = (images == i) & (labels == c)
            idx = m.nonzero().squeeze(1)
            kept += idx[nms(boxes[idx], scores[idx], 0.5)].tolist()
        kept = sorted(kept, key=lambda k: -scores[k].item())[:10]
        assert dets[i]["scores"].tolist() == scores[kept].tolist()
        assert dets[i]["labels"].tolist() == labels[kept].tolist()


def test_logit_is_the_inverse_sigmoid() -> None:
    for p in (0.05, 0.5, 0.9):
        assert math.isclose(torch.sigmoid(torch.tensor(logit(p))).item(), p, rel_tol=1e-6)
    assert logit(0) == -math.inf and logit(1) == math.inf


def test_iou_losses_equal_hand_computation() -> None:
    pred = torch.tensor([[1.0, 1, 1, 1]])  # a 2×2 box around the location
    tgt = torch.tensor([[1.0, 1, 3, 1]])  # a 4×2 box sharing its left half
    iou = 4 / 8
    torch.testing.assert_close(iou_loss_ltrb(pred, tgt), torch.tensor([-math.log(iou)]))
    # GIoU: the enclosing box is the target itself, so GIoU = IoU
    torch.testing.assert_close(giou_loss_ltrb(pred, tgt), torch.tensor([1 - iou]))
    assert box_iou(ltrb_to_boxes(pred), ltrb_to_boxes(tgt)).item() == iou
