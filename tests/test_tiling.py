"""Sliced inference: the windows cover the image with the asked overlap; a stub detector that
finds bright squares recovers every square of a large image in image pixels (no fragments of
squares cut by a window edge), where one pass over the shrunk image would not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import ndimage

from hybridvision.detectors.base import PostProcess
from hybridvision.engine.tiling import predict_tiled, tile_windows
from hybridvision.errors import UserInputError


class SquareFinder(nn.Module):
    """A detector stub: every bright connected blob of its (unpadded) input is a box, score 1."""

    num_classes, size_divisible = 1, 32
    postprocess = PostProcess(nms_thresh=0.5, detections_per_img=100, nms_method="hard")

    def forward(self, batch, sizes):
        return batch

    def decode(self, batch, sizes):
        out = []
        for img, (h, w) in zip(batch, sizes):
            lab, n = ndimage.label(img[0, :h, :w].numpy() > 0.5)
            boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(lab)]
            t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            out.append({"boxes": t, "scores": torch.ones(len(t)), "labels": torch.zeros(len(t), dtype=torch.long)})
        return out


def test_windows_cover_the_image_with_overlap():
    wins = tile_windows(300, 200, 128, 0.25)
    covered = np.zeros((300, 200), bool)
    for y0, x0, y1, x1 in wins:
        assert y1 - y0 == 128 and x1 - x0 == 128
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    xs = sorted({x0 for _, x0, _, _ in wins})
    assert all(b - a <= 96 for a, b in zip(xs, xs[1:]))  # stride ≤ tile · (1 − overlap)
    assert tile_windows(50, 60, 128) == [(0, 0, 50, 60)]
    with pytest.raises(UserInputError, match="overlap"):
        tile_windows(10, 10, 8, 1.0)


def test_tiled_prediction_recovers_every_square_without_fragments():
    rng = np.random.default_rng(0)
    image = torch.zeros(3, 400, 520)
    truth = []
    for _ in range(30):
        x, y = int(rng.integers(0, 500)), int(rng.integers(0, 380))
        if any(abs(x - a) < 24 and abs(y - b) < 24 for a, b, _, _ in truth):
            continue
        image[:, y:y + 16, x:x + 16] = 1.0
        truth.append((x, y, min(x + 16, 520), min(y + 16, 400)))
    dets = predict_tiled(SquareFinder(), image, tile=128, overlap=0.25)
    got = sorted(tuple(int(v) for v in b) for b in dets["boxes"].tolist())
    assert got == sorted(truth)  # every square once, whole, in image pixels


class TwoBoxes(SquareFinder):
    """Two boxes overlapping by IoU 1/3 per window, scores 0.9 and 0.8; a Soft-NMS model."""

    postprocess = PostProcess(nms_thresh=0.5, detections_per_img=2, nms_method="soft_gaussian")

    def decode(self, batch, sizes):
        boxes = torch.tensor([[10.0, 10.0, 40.0, 40.0], [25.0, 10.0, 55.0, 40.0]])
        return [{"boxes": boxes, "scores": torch.tensor([0.9, 0.8]), "labels": torch.zeros(2, dtype=torch.long)}
                for _ in sizes]


def test_the_merge_neither_decays_scores_twice_nor_caps_the_image_at_one_window():
    one = predict_tiled(TwoBoxes(), torch.zeros(3, 64, 64), tile=128)
    assert one["scores"].tolist() == pytest.approx([0.9, 0.8])  # as the window decoded them
    many = predict_tiled(TwoBoxes(), torch.zeros(3, 256, 256), tile=64, overlap=0.0)
    assert len(many["boxes"]) == 2 * 16 > TwoBoxes.postprocess.detections_per_img  # 16 windows, 2 boxes each
