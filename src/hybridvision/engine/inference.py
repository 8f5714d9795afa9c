"""Running a trained detector over a dataset or over image files.

Predictions are made at the transformed size and mapped back to original pixels with each
target's ``orig_size`` (the transforms resize; padding is bottom/right, so it shifts nothing).
"""

from __future__ import annotations

from typing import Any
from collections.abc import Iterable

import torch
import torch.nn as nn

from hybridvision.detectors.tta import predict_tta
from hybridvision.engine.progress import track
from hybridvision.evaluation.coco import detections_to_coco_results, evaluate_coco
from hybridvision.layers.fusion import fuse_conv_bn

__all__ = ["predict_batches", "evaluate_detector", "scale_detections"]


def scale_detections(dets: dict[str, torch.Tensor], sx: float, sy: float) -> dict[str, torch.Tensor]:
    """Boxes ``[D, 4]`` xyxy scaled by (sx, sy) back to original image pixels."""
    boxes = dets["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=dets["boxes"].dtype,
                                         device=dets["boxes"].device)
    return {**dets, "boxes": boxes}


@torch.inference_mode()
def predict_batches(model: nn.Module, loader: Iterable, device: torch.device,
                    progress: bool = False, tta: str | None = None
                    ) -> tuple[list[int], list[dict[str, torch.Tensor]]]:
    """Run ``model`` over a detection loader; returns image ids and detections in original pixels.

    Runs an eval-mode copy with its conv→BatchNorm pairs folded (:func:`fuse_conv_bn`); ``model``
    itself is not changed. ``tta``: None, ``"flip"`` or ``"multiscale"`` test-time augmentation
    (:func:`~hybridvision.detectors.tta.predict_tta`)."""
    runner = fuse_conv_bn(model)
    ids: list[int] = []
    out: list[dict[str, torch.Tensor]] = []
    batches = loader
    if progress:
        batches = track(loader, description="evaluating", total=len(loader))
    for images, targets, sizes in batches:
        sizes = [tuple(s) for s in sizes]
        if tta is None:
            dets = runner.decode(runner(images.to(device), sizes), sizes)
        else:
            dets = predict_tta(runner, images.to(device), sizes, tta)
        for d, t, (h, w) in zip(dets, targets, sizes):
            oh, ow = (int(v) for v in t["orig_size"])
            d = {k: v.float().cpu() if k != "labels" else v.cpu() for k, v in d.items()}
            out.append(scale_detections(d, ow / w, oh / h))
            ids.append(int(t["image_id"]))
    return ids, out


def evaluate_detector(model: nn.Module, loader: Iterable, device: torch.device, gt: Any,
                      label_to_cat_id: list[int], progress: bool = False, tta: str | None = None
                      ) -> tuple[dict[str, Any], list[dict]]:
    """COCO evaluation of ``model`` on ``loader`` against ``gt`` (a dict or a path).

    Returns ``(evaluation, results)``: evaluation = ``{"metrics": {12 keys}, "per_class": {...}}``,
    results = the COCO results list (``image_id, category_id, bbox, score``).
    """
    ids, dets = predict_batches(model, loader, device, progress=progress, tta=tta)
    results = detections_to_coco_results(dets, ids, label_to_cat_id)
    return evaluate_coco(gt, results), results
