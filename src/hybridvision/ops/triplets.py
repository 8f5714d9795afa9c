"""The central-region check of CenterNet keypoint triplets (Duan et al., "CenterNet: Keypoint
Triplets for Object Detection", ICCV 2019, Sec. 3.2, Eq. 1).

A corner pair proposes a box; the box is kept only when a centre keypoint of the same class lies
in its central region, the box shrunk around its centre to 1/n of its width and height:

    ctl_x = ((n+1)·tl_x + (n−1)·br_x) / 2n        cbr_x = ((n−1)·tl_x + (n+1)·br_x) / 2n

(and the same for y), with n = 3 for boxes smaller than ``scale_threshold`` (150 px, as the
paper: √(w·h)) and n = 5 for larger ones, so a large box's region is relatively smaller. A kept
box's score becomes the mean of its two corner scores and its centre's score.

Symbols: P candidate boxes, C centre keypoints (of one image).
"""

from __future__ import annotations

import torch

__all__ = ["central_regions", "central_region_check"]


def central_regions(boxes: torch.Tensor, scale_threshold: float = 150.0) -> torch.Tensor:
    """The central region (xyxy) of each box ``[P, 4]``: n = 3 below ``scale_threshold``
    (√(w·h), pixels), else 5 (Duan et al. Eq. 1). Returns ``[P, 4]``."""
    tl, br = boxes[:, :2], boxes[:, 2:]
    scale = ((br - tl).clamp(min=0).prod(dim=1)).sqrt()  # [P]
    n = torch.where(scale < scale_threshold, 3.0, 5.0).to(boxes.dtype)[:, None]  # [P, 1]
    ctl = ((n + 1) * tl + (n - 1) * br) / (2 * n)
    cbr = ((n - 1) * tl + (n + 1) * br) / (2 * n)
    return torch.cat([ctl, cbr], dim=1)


def central_region_check(
    boxes: torch.Tensor,
    labels: torch.Tensor,
    corner_scores: torch.Tensor,
    centers: torch.Tensor,
    center_labels: torch.Tensor,
    center_scores: torch.Tensor,
    *,
    scale_threshold: float = 150.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the boxes whose central region holds a centre keypoint of their class.

    Args:
        boxes, labels, corner_scores: ``[P, 4]``, ``[P]``, ``[P]`` (the pair's mean corner score).
        centers, center_labels, center_scores: ``[C, 2]`` (x, y), ``[C]``, ``[C]``.
        scale_threshold: the box scale (√(w·h)) from which n = 5.

    Returns:
        ``(keep [P] bool, scores [P])``: the new score of a kept box is (2 · corner score +
        centre score) / 3 with its best-scoring matching centre — the mean of the three
        keypoints' scores; unkept boxes keep their corner score.
    """
    regions = central_regions(boxes, scale_threshold)  # [P, 4]
    x, y = centers[None, :, 0], centers[None, :, 1]  # [1, C]
    inside = ((x >= regions[:, 0:1]) & (x <= regions[:, 2:3]) & (y >= regions[:, 1:2]) & (y <= regions[:, 3:4])
              & (labels[:, None] == center_labels[None, :]))  # [P, C]
    best = torch.where(inside, center_scores[None, :], torch.full_like(inside, -1.0, dtype=center_scores.dtype))
    best_center = best.amax(dim=1) if centers.numel() else corner_scores.new_full(corner_scores.shape, -1.0)
    keep = best_center >= 0
    scores = torch.where(keep, (2 * corner_scores + best_center) / 3, corner_scores)
    return keep, scores
