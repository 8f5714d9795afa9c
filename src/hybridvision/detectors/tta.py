"""Test-time augmentation for every detector: horizontal flip and multi-scale.

Each view (the images mirrored, or resized by a scale) goes through the model; the views'
predictions are merged as each family should (Zhou et al., "Objects as Points", 2019, Sec. 4):

* a detector with a ``merge_flipped(outputs, flipped_outputs, image_sizes)`` method (CenterNet:
  mean of the heatmaps and sizes) merges the flip view's *raw outputs*, then decodes once;
* every other detector (FCOS, RetinaNet) decodes each view, maps the boxes back to the original
  image, and merges the boxes with its own class-wise NMS (or Soft-NMS, ``nms_method``);
* multi-scale always merges boxes (the keypoint family then needs its NMS, as in CenterNet's
  multi-scale test).

Images are mirrored inside their own width, so the batch's bottom/right padding stays padding. A
detector that merges maps mirrors inside ``model.flip_width(w)`` instead — CenterNet: w rounded up
to its stride, so that mirroring the stride-4 map is exact — and the few columns this adds on the
left hold the model's mean pixel (0 after normalisation, as padding is).

Symbols: B images, H×W the padded batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import clip_boxes_to_image

from hybridvision.detectors.base import Detections, batch_images
from hybridvision.ops.postprocess import empty_detections, nms_per_image

__all__ = ["TTA_MODES", "MULTISCALE_SCALES", "predict_tta", "flip_images", "merge_detections"]

TTA_MODES = ("flip", "multiscale")
MULTISCALE_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)  # CenterNet's multi-scale test


def flip_images(images: torch.Tensor, image_sizes: Sequence[tuple[int, int]],
                widths: Sequence[int] | None = None, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror each image of a padded batch ``[B, 3, H, W]`` left–right inside its own width.

    With ``widths`` (each ≥ the image's w), image b is mirrored inside ``widths[b]`` columns: its
    content lands in the columns ``widths[b] − w … widths[b] − 1`` and the columns left of it
    take ``fill`` (``[3]``, default 0).
    """
    out = images.clone()
    for b, (h, w) in enumerate(image_sizes):
        wide = int(w if widths is None else widths[b])
        out[b, :, :, :wide] = images[b, :, :, :wide].flip(-1)
        if wide > w:
            out[b, :, :h, : wide - w] = 0 if fill is None else fill.view(-1, 1, 1).to(out)
    return out


def flip_boxes(dets: Detections, image_sizes: Sequence[tuple[int, int]]) -> Detections:
    """Boxes predicted on mirrored images, mapped back: x ↦ w − x (x1 and x2 swap)."""
    out = []
    for d, (_, w) in zip(dets, image_sizes):
        b = d["boxes"]
        out.append({**d, "boxes": torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)})
    return out


def merge_detections(views: Sequence[Detections], model: nn.Module) -> Detections:
    """Per image, the union of every view's detections through the model's class-wise NMS
    (its ``postprocess``: ``merge_iou``, ``nms_method``), best ``detections_per_img``.

    With Soft-NMS the views' scores, already decayed inside each view, decay once more here, and
    an object's duplicate from another view stays with a low score (below the original by
    exp(−1/σ) = 0.14 at σ = 0.5 for an exact duplicate)."""
    batch = len(views[0])
    boxes, scores, labels, images = [], [], [], []
    for dets in views:
        for b, d in enumerate(dets):
            boxes.append(d["boxes"])
            scores.append(d["scores"])
            labels.append(d["labels"])
            images.append(torch.full_like(d["labels"], b))
    if sum(len(s) for s in scores) == 0:
        return empty_detections(batch, views[0][0]["boxes"])
    post = model.postprocess  # the model's PostProcess (detectors.base)
    return nms_per_image(
        torch.cat(boxes), torch.cat(scores), torch.cat(labels), torch.cat(images), batch_size=batch,
        num_classes=model.num_classes, iou_threshold=post.merge_iou,
        max_per_image=post.detections_per_img, method=post.nms_method,
    )


def _resized_view(images: torch.Tensor, image_sizes: Sequence[tuple[int, int]], scale: float,
                  size_divisible: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Every image resized by ``scale`` (bilinear, antialiased when shrinking, as the eval
    transforms resize), re-batched and padded."""
    resized = []
    for b, (h, w) in enumerate(image_sizes):
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        im = images[b : b + 1, :, :h, :w]
        resized.append(F.interpolate(im, size=(nh, nw), mode="bilinear", align_corners=False,
                                     antialias=scale < 1)[0])
    return batch_images(resized, size_divisible)


def _scale_boxes(dets: Detections, sx: Sequence[float], sy: Sequence[float],
                 image_sizes: Sequence[tuple[int, int]]) -> Detections:
    """Each image's boxes scaled by (sx, sy) and clipped to its (h, w)."""
    return [{**d, "boxes": clip_boxes_to_image(d["boxes"] * d["boxes"].new_tensor([fx, fy, fx, fy]), size)}
            for d, fx, fy, size in zip(dets, sx, sy, image_sizes)]


@torch.no_grad()
def predict_tta(model: nn.Module, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]], mode: str,
                scales: Sequence[float] = MULTISCALE_SCALES) -> Detections:
    """Detections of ``model`` for a padded batch ``images`` ``[B, 3, H, W]`` with test-time
    augmentation ``mode``: ``"flip"`` (the images and their mirrors) or ``"multiscale"`` (the
    images resized by each of ``scales``). Boxes are in the pixels of ``images``."""
    sizes = [tuple(int(v) for v in s) for s in image_sizes]
    if mode == "flip":
        outputs = model(images, sizes)
        merge_flipped = getattr(model, "merge_flipped", None)
        if merge_flipped is not None:
            widths = [model.flip_width(w) for _, w in sizes]
            mean = getattr(model, "pixel_mean", None)
            flipped = model(flip_images(images, sizes, widths, None if mean is None else mean.flatten()), sizes)
            return model.decode(merge_flipped(outputs, flipped, sizes), sizes)
        flipped = model(flip_images(images, sizes), sizes)
        return merge_detections([model.decode(outputs, sizes), flip_boxes(model.decode(flipped, sizes), sizes)],
                                model)
    if mode == "multiscale":
        views = []
        for scale in scales:
            view, view_sizes = _resized_view(images, sizes, scale, model.size_divisible)
            dets = model.decode(model(view, view_sizes), view_sizes)
            sx = [w / vw for (_, w), (_, vw) in zip(sizes, view_sizes)]
            sy = [h / vh for (h, _), (vh, _) in zip(sizes, view_sizes)]
            views.append(_scale_boxes(dets, sx, sy, sizes))
        return merge_detections(views, model)
    raise ValueError(f"tta={mode!r} must be one of {', '.join(TTA_MODES)}")
