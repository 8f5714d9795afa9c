"""FCOS oracles: perfect-prediction round trip (pycocotools AP = 1), assignment on hand-made
cases and against a loop, loss against a hand computation, decode against a per-image loop."""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch
from torchvision.ops import nms

from hybridvision.detectors.fcos import (
    FCOS,
    assign_targets,
    centerness_target,
    compute_locations,
)
from hybridvision.factory import create_model
from hybridvision.ops.points import per_location

INF = float("inf")
K = 3


def _model(**kw) -> FCOS:
    # Tiny backbone; the paper's five levels and size ranges unless overridden.
    kw = dict(num_classes=K, num_levels=5, size_ranges=None) | kw
    return create_model("fcos_demo", **kw)


# ------------------------------------------------------------------------- locations


def test_locations_are_half_stride_plus_offsets() -> None:
    (loc,) = compute_locations([(2, 3)], [8])
    want = [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]  # row-major (x, y)
    assert loc.tolist() == want
    (loc,) = compute_locations([(1, 1)], [128])
    assert loc.tolist() == [[64, 64]]


# ------------------------------------------------------------------------- assignment


def _assign(locs, strides, ranges, boxes, radius=1.5):
    return assign_targets(
        torch.tensor(locs, dtype=torch.float32),
        torch.tensor(strides, dtype=torch.float32),
        torch.tensor(ranges, dtype=torch.float32),
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        center_sampling_radius=radius,
    ).tolist()


def test_center_sampling_excludes_locations_outside_centre_region() -> None:
    box = [[0, 0, 100, 100]]  # centre (50, 50); stride 8 × 1.5 -> centre region [38, 62]²
    locs = [[44, 44], [28, 28], [60, 52], [70, 50]]
    rng = [[0, INF]] * 4
    assert _assign(locs, [8] * 4, rng, box) == [0, -1, 0, -1]
    # without centre sampling every location inside the box is positive
    assert _assign(locs, [8] * 4, rng, box, radius=0) == [0, 0, 0, 0]
    # the centre region is clipped to the box: a thin box keeps only locations inside it
    assert _assign([[50, 45], [50, 55]], [64, 64], [[0, INF]] * 2, [[0, 40, 100, 50]]) == [0, -1]


def test_size_range_picks_the_level() -> None:
    box = [[0, 0, 180, 180]]
    # P3 location (92, 92): max(l,t,r,b) = 92 > 64; P4 location (88, 88): 92 in [64, 128]
    locs = [[92, 92], [88, 88], [96, 96]]
    strides = [8, 16, 32]
    ranges = [[0, 64], [64, 128], [128, 256]]
    assert _assign(locs, strides, ranges, box) == [-1, 0, -1]


def test_location_in_two_boxes_goes_to_smaller_area() -> None:
    big, small = [0, 0, 120, 120], [40, 40, 70, 70]
    loc, stride, rng = [[52, 52]], [8], [[0, INF]]
    assert _assign(loc, stride, rng, [big, small], radius=0) == [1]
    assert _assign(loc, stride, rng, [small, big], radius=0) == [0]
    # with centre sampling too: (52, 52) lies in both centre regions ([43,67]² and [48,72]²)
    assert _assign(loc, stride, rng, [big, small]) == [1]


def test_no_boxes_means_background() -> None:
    assert _assign([[4, 4], [12, 4]], [8, 8], [[0, INF]] * 2, []) == [-1, -1]


def _assign_loop(locs, strides, ranges, boxes, radius):
    """Straightforward reference: one location and one box at a time."""
    out = []
    for (x, y), s, (lo, hi) in zip(locs.tolist(), strides.tolist(), ranges.tolist()):
        best, best_area = -1, INF
        for j, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            l, t, r, b = x - x0, y - y0, x1 - x, y1 - y
            if radius > 0:
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                inside = min(
                    x - max(cx - s * radius, x0),
                    y - max(cy - s * radius, y0),
                    min(cx + s * radius, x1) - x,
                    min(cy + s * radius, y1) - y,
                ) > 0
            else:
                inside = min(l, t, r, b) > 0
            area = (x1 - x0) * (y1 - y0)
            if inside and lo <= max(l, t, r, b) <= hi and area < best_area:
                best, best_area = j, area
        out.append(best)
    return out


@pytest.mark.parametrize("radius", [0.0, 1.5])
def test_assignment_matches_loop(radius: float) -> None:
    g = torch.Generator().manual_seed(3)
    model = _model()
    shapes = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    locations = compute_locations(shapes, model.strides)
    strides = per_location(model.strides, shapes)  # [L]
    ranges = per_location(model.size_ranges, shapes)  # [L, 2]
    locs = torch.cat(locations)
    xy = torch.rand(12, 2, generator=g) * 200
    wh = torch.rand(12, 2, generator=g) ** 2 * 250 + 2
    boxes = torch.cat([xy, xy + wh], 1).round()  # integer corners: exercises boundaries
    got = assign_targets(locs, strides, ranges, boxes, center_sampling_radius=radius).tolist()
    assert got == _assign_loop(locs, strides, ranges, boxes, radius)
    assert sum(i >= 0 for i in got) > 20  # the case is not trivially all background


# ------------------------------------------------------------------------- perfect round trip


def _encode_perfect(model: FCOS, targets, shapes):
    """Head outputs that say exactly the ground truth: high logits at the assigned positives."""
    tgt = model.prepare_targets(targets, shapes)
    labels, reg = tgt["labels"], tgt["reg"]  # [B, L], [B, L, 4]
    batch, num_loc = labels.shape
    pos = labels < K
    cls = torch.full((batch, num_loc, K), -20.0)
    cls[pos, labels[pos]] = 20.0
    ctr = torch.where(pos, 20.0, -20.0)[..., None]  # [B, L, 1]
    out = {"cls_logits": [], "bbox_reg": [], "centerness": []}
    start = 0
    for h, w in shapes:
        end = start + h * w
        for key, val in (("cls_logits", cls), ("bbox_reg", reg), ("centerness", ctr)):
            out[key].append(val[:, start:end].reshape(batch, h, w, -1).permute(0, 3, 1, 2).contiguous())
        start = end
    return out, tgt


def _coco_ap(gts, dets, sizes) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, ((h, w), gt, det) in enumerate(zip(sizes, gts, dets)):
        images.append(dict(id=i, height=h, width=w))
        for box, lab in zip(gt["boxes"].tolist(), gt["labels"].tolist()):
            x0, y0, x1, y1 = box
            anns.append(dict(id=len(anns) + 1, image_id=i, category_id=lab + 1, bbox=[x0, y0, x1 - x0, y1 - y0],
                             area=(x1 - x0) * (y1 - y0), iscrowd=0))
        for box, s, lab in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            x0, y0, x1, y1 = box
            results.append(dict(image_id=i, category_id=lab + 1, bbox=[x0, y0, x1 - x0, y1 - y0], score=s))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dict(images=images, annotations=anns, categories=[dict(id=k + 1, name=str(k)) for k in range(K)])
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results) if results else COCO(), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def _round_trip_case():
    # Boxes of every size range: max(l,t,r,b) near the centre of each lands in a different level.
    sizes = [(1152, 1152), (640, 512), (256, 320)]
    targets = [
        dict(boxes=torch.tensor([[20.0, 30, 1120, 1000], [100, 100, 130, 140], [300, 200, 680, 500],
                                 [600, 700, 780, 850], [150, 600, 850, 1100]]),
             labels=torch.tensor([0, 1, 2, 1, 0])),
        dict(boxes=torch.tensor([[10.0, 10, 50, 30], [200, 100, 500, 600], [60, 400, 100, 480]]),
             labels=torch.tensor([2, 0, 2])),
        dict(boxes=torch.tensor([[5.0, 5, 250, 200], [260, 10, 300, 60]]), labels=torch.tensor([1, 1])),
    ]
    pad = 1152
    shapes = [(pad // s, pad // s) for s in (8, 16, 32, 64, 128)]
    return sizes, targets, shapes


def test_perfect_predictions_give_ap_one() -> None:
    model = _model().eval()
    sizes, targets, shapes = _round_trip_case()
    outputs, tgt = _encode_perfect(model, targets, shapes)

    # every box has positives, and together they use all five levels
    level_of = torch.repeat_interleave(torch.arange(5), torch.tensor([h * w for h, w in shapes]))
    levels_used = set()
    for b, t in enumerate(targets):
        for j in range(len(t["boxes"])):
            hit = tgt["matched"][b] == j
            assert hit.any(), f"box {j} of image {b} has no positive location"
            levels_used |= set(level_of[hit].tolist())
    assert levels_used == {0, 1, 2, 3, 4}

    dets = model.decode(outputs, sizes)
    for d, t in zip(dets, targets):
        assert len(d["boxes"]) == len(t["boxes"])  # NMS merged the duplicates per object
    assert _coco_ap(targets, dets, sizes) == 1.0

    # the oracle can fail: hide one object's positives -> it is missed, AP < 1
    outputs["cls_logits"] = [c.clone() for c in outputs["cls_logits"]]
    miss = (tgt["matched"][0] == 1)
    start = 0
    for lvl, (h, w) in enumerate(shapes):
        m = miss[start:start + h * w].reshape(h, w)
        outputs["cls_logits"][lvl][0, :, m] = -20.0
        start += h * w
    assert _coco_ap(targets, model.decode(outputs, sizes), sizes) < 1.0


def test_decode_clips_to_image_size() -> None:
    model = _model().eval()
    targets = [dict(boxes=torch.tensor([[10.0, 20, 120, 90]]), labels=torch.tensor([2]))]
    shapes = [(128 // s, 128 // s) for s in (8, 16, 32, 64, 128)]
    outputs, _ = _encode_perfect(model, targets, shapes)
    (det,) = model.decode(outputs, [(80, 100)])  # image is 80 high, 100 wide
    torch.testing.assert_close(det["boxes"], torch.tensor([[10.0, 20, 100, 80]]))
    assert det["labels"].tolist() == [2]


# ------------------------------------------------------------------------- decode vs loop


def _decode_loop(model: FCOS, outputs, sizes):
    """Reference: image by image, level by level, torchvision NMS per class."""
    results = []
    locations = compute_locations([c.shape[-2:] for c in outputs["cls_logits"]], model.strides)
    for b, (h, w) in enumerate(sizes):
        boxes, scores, labels = [], [], []
        for lvl, stride in enumerate(model.strides):
            prob = outputs["cls_logits"][lvl][b].sigmoid().flatten(1).T  # [HW, K]
            ctr = outputs["centerness"][lvl][b].sigmoid().flatten()  # [HW]
            reg = outputs["bbox_reg"][lvl][b].flatten(1).T * stride  # [HW, 4]
            cand = []
            for i in range(prob.shape[0]):
                for k in range(prob.shape[1]):
                    if prob[i, k] > model.score_thresh:
                        cand.append((float(prob[i, k] * ctr[i]), i, k))
            cand.sort(reverse=True)
            for s, i, k in cand[: model.topk_candidates]:
                x, y = locations[lvl][i].tolist()
                l, t, r, bb = reg[i].tolist()
                boxes.append([min(max(x - l, 0), w), min(max(y - t, 0), h),
                              min(max(x + r, 0), w), min(max(y + bb, 0), h)])
                scores.append(math.sqrt(s))
                labels.append(k)
        boxes, scores, labels = torch.tensor(boxes), torch.tensor(scores), torch.tensor(labels)
        keep = []
        for k in labels.unique().tolist():
            idx = torch.nonzero(labels == k).flatten()
            keep += idx[nms(boxes[idx], scores[idx], model.nms_thresh)].tolist()
        keep = sorted(keep, key=lambda i: -float(scores[i]))[: model.detections_per_img]
        results.append(dict(boxes=boxes[keep], scores=scores[keep], labels=labels[keep]))
    return results


def test_vectorised_decode_matches_loop() -> None:
    g = torch.Generator().manual_seed(0)
    model = _model(topk_candidates=40, detections_per_img=25).eval()
    shapes = [(8, 10), (4, 5), (2, 3), (1, 2), (1, 1)]
    batch = 2
    outputs = {
        "cls_logits": [torch.randn(batch, K, h, w, generator=g) * 2 - 2 for h, w in shapes],
        "bbox_reg": [torch.rand(batch, 4, h, w, generator=g) * 3 for h, w in shapes],
        "centerness": [torch.randn(batch, 1, h, w, generator=g) for h, w in shapes],
    }
    sizes = [(64, 80), (50, 70)]
    got = model.decode(outputs, sizes)
    want = _decode_loop(model, outputs, sizes)
    for gd, wd in zip(got, want):
        assert 0 < len(wd["boxes"]) <= 25
        torch.testing.assert_close(gd["scores"], wd["scores"])
        torch.testing.assert_close(gd["boxes"], wd["boxes"])
        assert gd["labels"].tolist() == wd["labels"].tolist()
    assert len(want[0]["boxes"]) == 25  # the per-image cap was exercised


# ------------------------------------------------------------------------- loss by hand


def _sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _giou_ltrb(p, t) -> float:
    """GIoU loss of two boxes given as (l, t, r, b) around the same point."""
    area_p = (p[0] + p[2]) * (p[1] + p[3])
    area_t = (t[0] + t[2]) * (t[1] + t[3])
    inter = (min(p[0], t[0]) + min(p[2], t[2])) * (min(p[1], t[1]) + min(p[3], t[3]))
    union = area_p + area_t - inter
    hull = (max(p[0], t[0]) + max(p[2], t[2])) * (max(p[1], t[1]) + max(p[3], t[3]))
    return 1 - (inter / union - (hull - union) / hull)


def _iou_loss_ltrb(p, t) -> float:
    """UnitBox −ln IoU of two boxes given as (l, t, r, b) around the same point."""
    area_p = (p[0] + p[2]) * (p[1] + p[3])
    area_t = (t[0] + t[2]) * (t[1] + t[3])
    inter = (min(p[0], t[0]) + min(p[2], t[2])) * (min(p[1], t[1]) + min(p[3], t[3]))
    return -math.log(inter / (area_p + area_t - inter))


@pytest.mark.parametrize("reg_loss", ["giou", "iou"])
def test_loss_matches_hand_computation(reg_loss: str) -> None:
    # fcos_demo's three levels, ranges [0,32], [32,64], [64,inf); a 32×32 image:
    # P3 locations at 4,12,20,28 (stride 8), P4 at 8,24, P5 at 16.
    model = create_model("fcos_demo", num_classes=2, reg_loss=reg_loss)
    box_loss = _giou_ltrb if reg_loss == "giou" else _iou_loss_ltrb
    box, label = (2.0, 2.0, 22.0, 18.0), 1
    # Hand assignment: centre (12, 10); P3 centre region (radius 12) clipped to the box is the
    # box itself -> P3 locations with x in {4,12,20}, y in {4,12} (y = 20 > 18). Their
    # max(l,t,r,b) <= 20 is in [0, 32]. P4 (8,8): max 14 not in [32,64]; P5 (16,16): 14 < 64.
    positives = {(x, y) for x in (4, 12, 20) for y in (4, 12)}
    g = torch.Generator().manual_seed(7)
    shapes = [(4, 4), (2, 2), (1, 1)]
    outputs = {
        "cls_logits": [torch.randn(1, 2, h, w, generator=g) for h, w in shapes],
        "bbox_reg": [torch.rand(1, 4, h, w, generator=g) * 2 + 0.1 for h, w in shapes],
        "centerness": [torch.randn(1, 1, h, w, generator=g) for h, w in shapes],
    }
    targets = [dict(boxes=torch.tensor([box]), labels=torch.tensor([label]))]
    got = model.loss(outputs, targets)

    alpha, gamma = 0.25, 2.0
    focal = giou = bce = ctr_sum = 0.0
    n_pos = 0
    for lvl, ((h, w), s) in enumerate(zip(shapes, (8, 16, 32))):
        for yi in range(h):
            for xi in range(w):
                x, y = s // 2 + xi * s, s // 2 + yi * s
                is_pos = (x, y) in positives
                for k in range(2):
                    p = _sig(float(outputs["cls_logits"][lvl][0, k, yi, xi]))
                    t = 1.0 if (is_pos and k == label) else 0.0
                    p_t = p if t else 1 - p
                    focal += (alpha if t else 1 - alpha) * (1 - p_t) ** gamma * -math.log(p_t)
                if not is_pos:
                    continue
                n_pos += 1
                tgt = [(x - box[0]) / s, (y - box[1]) / s, (box[2] - x) / s, (box[3] - y) / s]
                c = math.sqrt(min(tgt[0], tgt[2]) / max(tgt[0], tgt[2]) * min(tgt[1], tgt[3]) / max(tgt[1], tgt[3]))
                pred = outputs["bbox_reg"][lvl][0, :, yi, xi].tolist()
                giou += c * box_loss(pred, tgt)
                ctr_sum += c
                q = _sig(float(outputs["centerness"][lvl][0, 0, yi, xi]))
                bce += -(c * math.log(q) + (1 - c) * math.log(1 - q))
    assert n_pos == 6
    want = dict(loss_cls=focal / n_pos, loss_box_reg=giou / ctr_sum, loss_centerness=bce / n_pos)
    for key, val in want.items():
        assert float(got[key]) == pytest.approx(val, rel=1e-5), key
    assert float(got["loss"]) == pytest.approx(sum(want.values()), rel=1e-5)


def test_centerness_target_formula() -> None:
    ltrb = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    torch.testing.assert_close(centerness_target(ltrb), torch.tensor([math.sqrt(1 / 3 * 2 / 4), 1.0]))


def test_loss_without_objects_is_finite_and_connected() -> None:
    model = create_model("fcos_demo", num_classes=2)
    out = model(torch.rand(1, 3, 64, 64))
    losses = model.loss(out, [dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))])
    assert torch.isfinite(losses["loss"]) and float(losses["loss_box_reg"].detach()) == 0.0
    losses["loss"].backward()
    assert model.head.cls_logits.weight.grad is not None


def test_head_attention_is_shared_across_levels() -> None:
    model = create_model("nl_fcos_small", num_classes=2)
    assert model.head.cls_attn is not model.head.reg_attn
    calls = []
    model.head.cls_attn.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[-2:]))
    model(torch.rand(1, 3, 64, 64))
    assert calls == [torch.Size([8, 8]), torch.Size([4, 4]), torch.Size([2, 2])]  # one module, every level
    cls_only = create_model("nl_fcos_small_cls", num_classes=2)
    assert isinstance(cls_only.head.reg_attn, torch.nn.Identity)
    assert not isinstance(cls_only.head.cls_attn, torch.nn.Identity)
