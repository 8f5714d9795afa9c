"""Soft-NMS (ops/soft_nms.py) against a plain Python loop of Bodla et al.'s algorithm, both
kernels, on random boxes; its use in decoding."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou, nms

from hybridvision.ops import soft_nms
from hybridvision.ops.postprocess import nms_per_image


def soft_nms_loop(boxes, scores, labels, method, sigma=0.5, nt=0.3, thresh=0.001):
    """Bodla et al. 2017, Algorithm 1, one class at a time, one box at a time."""
    kept, new_scores = [], []
    for c in sorted(set(labels.tolist())):
        score = {i: float(scores[i]) for i in range(len(boxes)) if int(labels[i]) == c}
        remaining = [i for i in score if score[i] >= thresh]
        while remaining:
            m = max(remaining, key=lambda i: (score[i], -i))
            kept.append(m)
            new_scores.append(score[m])
            remaining.remove(m)
            for i in remaining:
                iou = float(box_iou(boxes[m : m + 1], boxes[i : i + 1]))
                if method == "linear":
                    score[i] *= (1 - iou) if iou >= nt else 1.0
                else:
                    score[i] *= math.exp(-iou * iou / sigma)
            remaining = [i for i in remaining if score[i] >= thresh]
    return kept, new_scores


def _random_boxes(n, num_classes, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 60
    wh = torch.rand(n, 2, generator=g) * 30 + 2
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g), torch.randint(0, num_classes, (n,), generator=g)


@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_nms_equals_a_python_loop(method, seed):
    boxes, scores, labels = _random_boxes(120, 3, seed)
    keep, new = soft_nms(boxes, scores, labels, method=method)
    ref_keep, ref_scores = soft_nms_loop(boxes, scores, labels, method)
    order = sorted(range(len(ref_keep)), key=lambda i: -ref_scores[i])
    assert keep.tolist() == [ref_keep[i] for i in order]
    torch.testing.assert_close(new, torch.tensor([ref_scores[i] for i in order]), rtol=1e-5, atol=1e-6)
    assert (new[:-1] >= new[1:]).all()  # sorted by new score


def test_soft_nms_decays_instead_of_deleting():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 0, 0, 1])  # the last box is another class: untouched
    keep, new = soft_nms(boxes, scores, labels, method="gaussian", sigma=0.5)
    iou = float(box_iou(boxes[:1], boxes[1:2]))
    assert keep.tolist() == [0, 2, 3, 1]
    assert new.tolist() == pytest.approx([0.9, 0.7, 0.6, 0.8 * math.exp(-iou * iou / 0.5)])
    assert nms(boxes[:3], scores[:3], 0.5).tolist() == [0, 2]  # hard NMS deletes box 1
    keep, new = soft_nms(boxes, scores, labels, method="linear", iou_threshold=0.3)
    assert new[keep.tolist().index(1)] == pytest.approx(0.8 * (1 - iou))
    empty_keep, empty_scores = soft_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert empty_keep.numel() == 0 and empty_scores.numel() == 0
    low_keep, _ = soft_nms(boxes, torch.full((4,), 1e-4), labels)  # nothing reaches score_threshold
    assert low_keep.numel() == 0
    # boxes of zero area overlap nothing (IoU 0, not 0/0): none is lost, as batched_nms keeps them
    flat = torch.tensor([[5.0, 5, 5, 9], [20, 20, 20, 30], [0, 0, 10, 10]])
    keep, new = soft_nms(flat, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.long))
    assert keep.tolist() == [0, 1, 2] and new.tolist() == pytest.approx([0.9, 0.8, 0.7])
    with pytest.raises(ValueError, match="method"):
        soft_nms(boxes, scores, labels, method="hard")


def test_nms_per_image_with_soft_nms_keeps_overlapping_objects():
    boxes = torch.tensor([[0.0, 0, 10, 10], [2, 0, 12, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 0, 0])
    images = torch.tensor([0, 0, 1])  # the third box is in another image: never suppressed
    hard = nms_per_image(boxes, scores, labels, images, batch_size=2, num_classes=1, iou_threshold=0.5,
                         max_per_image=10)
    soft = nms_per_image(boxes, scores, labels, images, batch_size=2, num_classes=1, iou_threshold=0.5,
                         max_per_image=10, method="soft_gaussian")
    assert len(hard[0]["boxes"]) == 1 and len(soft[0]["boxes"]) == 2 and len(soft[1]["boxes"]) == 1
    assert soft[0]["scores"][1] < 0.8  # decayed
    with pytest.raises(ValueError, match="nms_method"):
        nms_per_image(boxes, scores, labels, images, batch_size=2, num_classes=1, iou_threshold=0.5,
                      max_per_image=10, method="soft")


def test_detectors_decode_with_soft_nms():
    from hybridvision.factory import create_model

    for name in ("fcos_small", "retinanet_small", "centernet_small"):
        kw = {"nms_thresh": 0.5} if name.startswith("centernet") else {}
        model = create_model(name, num_classes=3, nms_method="soft_gaussian", score_thresh=0.0, **kw).eval()
        dets = model.predict(torch.rand(1, 3, 64, 64))
        assert dets[0]["boxes"].shape[1] == 4 and len(dets[0]["boxes"]) > 0
        assert (dets[0]["scores"][:-1] >= dets[0]["scores"][1:]).all()
    with pytest.raises(Exception, match="nms_method"):
        create_model("fcos_small", num_classes=3, nms_method="softer")
