"""Sliced inference on images much larger than the training size (the idea of SAHI: Akyon et al.,
"Slicing Aided Hyper Inference and Fine-tuning for Small Object Detection", ICIP 2022).

The image is covered by overlapping ``tile × tile`` windows at full resolution (the last window
of a row or column is aligned with the border, so every pixel is covered and no window is padded
unless the image is smaller than a tile); each window is detected at the model's own scale, its
boxes are shifted back into the image, and the union is merged class-wise by the detector's NMS
(hard or Soft-NMS, :func:`~hybridvision.ops.postprocess.nms_per_image`). Nothing is resized, so
objects keep the size the model was trained on.

An object cut by a window's inner edge is seen whole by a neighbouring window when it is smaller
than the overlap; its cut fragment would survive NMS (a half box overlaps the whole one by IoU
0.5), so a box touching an inner window edge is dropped unless it is wider (or taller) than the
overlap — too large for any window to hold it whole.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from hybridvision.detectors.base import batch_images
from hybridvision.errors import UserInputError
from hybridvision.ops.postprocess import nms_per_image

__all__ = ["tile_windows", "predict_tiled"]


def tile_windows(height: int, width: int, tile: int, overlap: float = 0.25) -> list[tuple[int, int, int, int]]:
    """``(y0, x0, y1, x1)`` windows of side ``tile`` (or the image's, when smaller) covering the
    image, neighbours overlapping by at least ``overlap`` of a tile."""
    if tile < 1:
        raise UserInputError(f"tile size {tile}: use a positive number of pixels")
    if not 0 <= overlap < 1:
        raise UserInputError(f"tile overlap {overlap}: use a fraction in [0, 1)")

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        stride = max(1, int(tile * (1 - overlap)))
        count = math.ceil((n - tile) / stride) + 1
        return sorted({min(i * stride, n - tile) for i in range(count)})

    return [(y, x, min(y + tile, height), min(x + tile, width)) for y in starts(height) for x in starts(width)]


@torch.no_grad()
def predict_tiled(model: nn.Module, image: torch.Tensor, tile: int, *, overlap: float = 0.25,
                  batch_size: int = 8, iou_threshold: float | None = None,
                  max_detections: int | None = None) -> dict[str, torch.Tensor]:
    """Detections of ``model`` (eval mode, on the image's device) on one ``[3, H, W]`` image in
    [0, 1], by windows (module docstring) → ``{"boxes" [D, 4] xyxy image pixels, "scores",
    "labels"}``, best first. ``iou_threshold`` and ``max_detections`` default to the model's
    ``nms_thresh`` and ``detections_per_img``."""
    if image.dim() != 3:
        raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")
    h, w = image.shape[-2:]
    windows = tile_windows(h, w, tile, overlap)
    reach = overlap * tile  # an object this small is whole in some window
    boxes, scores, labels = [], [], []
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        crops = [image[:, y0:y1, x0:x1] for y0, x0, y1, x1 in chunk]
        batch, sizes = batch_images(crops, getattr(model, "size_divisible", 32))  # [b, 3, S, S]
        dets = model.decode(model(batch, sizes), sizes)
        for (y0, x0, y1, x1), d in zip(chunk, dets):
            b = d["boxes"]  # [n, 4] window pixels
            cut = torch.zeros(len(b), dtype=torch.bool, device=b.device)
            margin = 1.0
            if x0 > 0:
                cut |= (b[:, 0] <= margin) & (b[:, 2] - b[:, 0] <= reach)
            if y0 > 0:
                cut |= (b[:, 1] <= margin) & (b[:, 3] - b[:, 1] <= reach)
            if x1 < w:
                cut |= (b[:, 2] >= (x1 - x0) - margin) & (b[:, 2] - b[:, 0] <= reach)
            if y1 < h:
                cut |= (b[:, 3] >= (y1 - y0) - margin) & (b[:, 3] - b[:, 1] <= reach)
            keep = ~cut
            shift = torch.tensor([x0, y0, x0, y0], dtype=b.dtype, device=b.device)
            boxes.append(b[keep] + shift)
            scores.append(d["scores"][keep])
            labels.append(d["labels"][keep])
    all_boxes, all_scores, all_labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    iou = float(iou_threshold if iou_threshold is not None else getattr(model, "nms_thresh", None) or 0.6)
    keep = int(max_detections if max_detections is not None else getattr(model, "detections_per_img", 100))
    method = getattr(model, "nms_method", "hard")
    classes = int(getattr(model, "num_classes", 0)) or (1 + int(all_labels.max()) if len(all_labels) else 1)
    merged = nms_per_image(all_boxes, all_scores, all_labels, torch.zeros_like(all_labels), batch_size=1,
                           num_classes=classes,
                           iou_threshold=iou, max_per_image=keep, method=method)
    return merged[0]
