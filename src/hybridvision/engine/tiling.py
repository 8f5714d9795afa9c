"""Sliced inference on images much larger than the training size (the idea of SAHI: Akyon et al.,
"Slicing Aided Hyper Inference and Fine-tuning for Small Object Detection", ICIP 2022).

The image is covered by overlapping ``tile × tile`` windows at full resolution (the last window
of a row or column is aligned with the border, so every pixel is covered and no window is padded
unless the image is smaller than a tile); each window is detected at the model's own scale, its
boxes are shifted back into the image, and the union is merged class-wise by the detector's NMS
(hard or Soft-NMS, :func:`~hybridvision.ops.postprocess.nms_per_image`). Nothing is resized, so
objects keep the size the model was trained on.

Each window *owns* the part of the image closer to its centre than to its neighbours' (its core:
up to the middle of each overlap; the cores tile the image), and keeps only the detections whose
centre lies in its core. An object is thus reported by one window — the one it sits most
centrally in, which sees it whole when it is smaller than the overlap — and the fragments of it
that other windows cut at their edges (centred near those edges, outside their cores) are
dropped; hard NMS then merges what remains across windows (each window's decoding already ran
the detector's own NMS or Soft-NMS), keeping up to the model's per-image limit per window.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from hybridvision.detectors.base import batch_images
from hybridvision.errors import UserInputError
from hybridvision.ops.postprocess import nms_per_image
from hybridvision.tile_overlap import MAX_TILE_OVERLAP, check_tile_overlap

# MAX_TILE_OVERLAP and check_tile_overlap live in a leaf module shared with data slicing.
__all__ = ["MAX_TILE_OVERLAP", "check_tile_overlap", "tile_windows", "predict_tiled"]


def _starts(n: int, tile: int, overlap: float) -> list[int]:
    if n <= tile:
        return [0]
    stride = max(1, int(tile * (1 - overlap)))
    count = math.ceil((n - tile) / stride) + 1
    return sorted({min(i * stride, n - tile) for i in range(count)})


def _cores(starts: list[int], tile: int, n: int) -> list[tuple[float, float]]:
    """Per window start, the span of positions it owns: up to the middle of each overlap."""
    out = []
    for i, s0 in enumerate(starts):
        lo = 0.0 if i == 0 else (s0 + starts[i - 1] + tile) / 2
        hi = float(n) if i == len(starts) - 1 else (starts[i + 1] + s0 + tile) / 2
        out.append((lo, hi))
    return out


def _check(tile: int, overlap: float) -> None:
    if tile < 1:
        raise UserInputError(f"tile size {tile}: use a positive number of pixels")
    check_tile_overlap(overlap)


def tile_windows(height: int, width: int, tile: int, overlap: float = 0.25) -> list[tuple[int, int, int, int]]:
    """``(y0, x0, y1, x1)`` windows of side ``tile`` (or the image's, when smaller) covering the
    image, neighbours overlapping by at least ``overlap`` (at most :data:`MAX_TILE_OVERLAP`) of a tile."""
    _check(tile, overlap)
    return [(y, x, min(y + tile, height), min(x + tile, width))
            for y in _starts(height, tile, overlap) for x in _starts(width, tile, overlap)]


@torch.no_grad()
def predict_tiled(model: nn.Module, image: torch.Tensor, tile: int, *, overlap: float = 0.5,
                  batch_size: int = 8, iou_threshold: float | None = None,
                  max_detections: int | None = None) -> dict[str, torch.Tensor]:
    """Detections of ``model`` (eval mode, on the image's device) on one ``[3, H, W]`` image in
    [0, 1], by windows (module docstring) → ``{"boxes" [D, 4] xyxy image pixels, "scores",
    "labels"}``, best first. ``iou_threshold`` defaults to the model's ``postprocess.merge_iou``;
    ``max_detections`` to its ``detections_per_img`` times the number of windows."""
    if image.dim() != 3:
        raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")
    _check(tile, overlap)
    h, w = image.shape[-2:]
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    y_cores, x_cores = _cores(ys, tile, h), _cores(xs, tile, w)
    windows = [(y, x, yc, xc) for y, yc in zip(ys, y_cores) for x, xc in zip(xs, x_cores)]
    boxes, scores, labels = [], [], []
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        crops = [image[:, y0:y0 + tile, x0:x0 + tile] for y0, x0, _, _ in chunk]
        batch, sizes = batch_images(crops, model.size_divisible)  # [b, 3, S, S]
        dets = model.decode(model(batch, sizes), sizes)
        for (y0, x0, (ylo, yhi), (xlo, xhi)), d in zip(chunk, dets):
            shift = torch.tensor([x0, y0, x0, y0], dtype=d["boxes"].dtype, device=d["boxes"].device)
            b = d["boxes"] + shift  # [n, 4] image pixels
            cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
            own = (cx >= xlo) & (cx < xhi) & (cy >= ylo) & (cy < yhi)
            boxes.append(b[own])
            scores.append(d["scores"][own])
            labels.append(d["labels"][own])
    all_boxes, all_scores, all_labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    post = model.postprocess  # the model's PostProcess (detectors.base)
    iou = float(iou_threshold if iou_threshold is not None else post.merge_iou)
    # Each window kept up to the model's per-image limit: the whole image may hold that many per window.
    per_window = int(post.detections_per_img)
    limit = int(max_detections) if max_detections is not None else per_window * len(windows)
    classes = int(getattr(model, "num_classes", 0)) or (1 + int(all_labels.max()) if len(all_labels) else 1)
    # Hard NMS across windows: each window's decoding already ran the model's own NMS (a second
    # Soft-NMS would decay the scores it kept once more).
    merged = nms_per_image(all_boxes, all_scores, all_labels, torch.zeros_like(all_labels), batch_size=1,
                           num_classes=classes, iou_threshold=iou, max_per_image=limit, method="hard")
    return merged[0]
