"""Post-processing shared by dense detectors: clip to each image, class-wise NMS, per-image cap.

Every function works on the candidates of a whole batch at once, each tagged with its image
index, so one NMS call serves all images (boxes of different images or classes never suppress
each other because their group ids differ).

Symbols: B images, P candidates over the batch, K classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms

from hybridvision.ops.soft_nms import SOFT_NMS_METHODS, soft_nms

NMS_METHODS = ("hard", *(f"soft_{m}" for m in SOFT_NMS_METHODS))  # hard, soft_gaussian, soft_linear

__all__ = ["NMS_METHODS", "check_nms_method", "logit", "clip_boxes_per_image", "nms_per_image",
           "empty_detections", "split_by_image"]

Detections = list[dict[str, torch.Tensor]]


def logit(p: float) -> float:
    """The inverse sigmoid: ``sigmoid(z) > p  ⇔  z > logit(p)`` (±inf at p ≤ 0 and p ≥ 1).

    Thresholding raw logits lets a decoder read the dense maps once and pass only the few
    candidates through sigmoid, gather and top-k.
    """
    if p <= 0:
        return -math.inf
    if p >= 1:
        return math.inf
    return math.log(p / (1 - p))


def check_nms_method(method: str) -> str:
    """``method`` if it is one of :data:`NMS_METHODS`, else a ValueError naming them."""
    if method not in NMS_METHODS:
        raise ValueError(f"nms_method={method!r} must be one of {', '.join(NMS_METHODS)}")
    return method


def clip_boxes_per_image(
    boxes: torch.Tensor, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """Clip xyxy ``boxes`` ``[P, 4]`` to the ``(H, W)`` of the image each belongs to.

    ``images`` ``[P]`` holds each box's image index. The batch is padded bottom/right, so a box
    may reach into padding that is not part of its image.
    """
    hw = torch.tensor(image_sizes, dtype=boxes.dtype, device=boxes.device)[images]  # [P, 2] (H, W)
    return torch.stack(
        [
            boxes[:, 0].clamp(min=0).minimum(hw[:, 1]),
            boxes[:, 1].clamp(min=0).minimum(hw[:, 0]),
            boxes[:, 2].clamp(min=0).minimum(hw[:, 1]),
            boxes[:, 3].clamp(min=0).minimum(hw[:, 0]),
        ],
        dim=1,
    )


def nms_per_image(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    images: torch.Tensor,
    *,
    batch_size: int,
    num_classes: int,
    iou_threshold: float,
    max_per_image: int,
    method: str = "hard",
    soft_sigma: float = 0.5,
) -> Detections:
    """Class-wise NMS inside each image, then the ``max_per_image`` best of each image.

    Args:
        boxes, scores, labels, images: ``[P, 4]``, ``[P]``, ``[P]`` and ``[P]`` candidates of the
            batch (``images`` is each candidate's image index in ``0..B-1``).
        method: ``"hard"`` (torchvision's ``batched_nms`` at ``iou_threshold``),
            ``"soft_gaussian"`` (Soft-NMS, σ = ``soft_sigma``) or ``"soft_linear"`` (Soft-NMS,
            N_t = ``iou_threshold``); Soft-NMS replaces the scores by the decayed ones.

    Returns:
        ``B`` dicts ``boxes [D, 4], scores [D], labels [D]``, best score first.
    """
    groups = images * num_classes + labels
    if check_nms_method(method) == "hard":
        keep = batched_nms(boxes, scores, groups, iou_threshold)  # by score
    else:
        keep, decayed = soft_nms(boxes, scores, groups, method=method[len("soft_"):], sigma=soft_sigma,
                                 iou_threshold=iou_threshold)
        scores = scores.clone()
        scores[keep] = decayed
    order = torch.sort(images[keep], stable=True).indices  # group by image, scores stay desc
    keep = keep[order]
    counts = torch.bincount(images[keep], minlength=batch_size)  # [B]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(keep.numel(), device=boxes.device) - torch.repeat_interleave(starts, counts)
    keep = keep[rank < max_per_image]
    per_img = counts.clamp(max=max_per_image).tolist()
    return split_by_image(boxes[keep], scores[keep], labels[keep], per_img)


def split_by_image(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, counts: Sequence[int]
) -> Detections:
    """Detections grouped by image (``counts`` per image, in order) as a list of dicts."""
    return [
        {"boxes": b, "scores": s, "labels": lab}
        for b, s, lab in zip(boxes.split(list(counts)), scores.split(list(counts)), labels.split(list(counts)))
    ]


def empty_detections(batch_size: int, like: torch.Tensor) -> Detections:
    """``batch_size`` empty detection dicts on ``like``'s device and dtype."""
    boxes = like.new_zeros((0, 4))
    labels = torch.zeros(0, dtype=torch.long, device=like.device)
    return [{"boxes": boxes, "scores": boxes[:, 0], "labels": labels} for _ in range(batch_size)]
