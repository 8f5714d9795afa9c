"""Losses shared by the detectors, as pure functions.

* :func:`focal_loss_sum` — the sigmoid focal loss (Lin et al., "Focal Loss for Dense Object
  Detection", ICCV 2017), torchvision's, summed;
* :func:`iou_loss_ltrb` — UnitBox's −ln IoU (Yu et al., ACM MM 2016) and :func:`giou_loss_ltrb`
  — GIoU (Rezatofighi et al., CVPR 2019), for boxes given as distances (l, t, r, b) from one
  location, as FCOS predicts them;
* :func:`reduce_mean` — a loss normaliser (e.g. the number of positives) averaged over workers.

Symbols: P locations (positives), K classes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

__all__ = ["focal_loss_sum", "iou_loss_ltrb", "giou_loss_ltrb", "ltrb_to_boxes", "reduce_mean"]


def focal_loss_sum(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                   gamma: float = 2.0) -> torch.Tensor:
    """Σ of torchvision's sigmoid focal loss over every element (``[..., K]`` logits, 0/1 targets)."""
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="sum")


def ltrb_to_boxes(ltrb: torch.Tensor) -> torch.Tensor:
    """Distances around a location at the origin as an xyxy box: ``[..., 4] -> [..., 4]``."""
    return torch.cat([-ltrb[..., :2], ltrb[..., 2:]], dim=-1)


def iou_loss_ltrb(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """UnitBox IoU loss −ln IoU for boxes given as distances from the same location: ``[P]``."""
    area_p = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    area_t = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    w = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 2], target[:, 2])
    h = torch.minimum(pred[:, 1], target[:, 1]) + torch.minimum(pred[:, 3], target[:, 3])
    inter = w.clamp(min=0) * h.clamp(min=0)
    iou = inter / (area_p + area_t - inter).clamp(min=eps)
    return -torch.log(iou.clamp(min=eps))


def giou_loss_ltrb(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """GIoU loss (torchvision) for boxes given as distances from the same location: ``[P]``."""
    return generalized_box_iou_loss(ltrb_to_boxes(pred), ltrb_to_boxes(target), reduction="none")


def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over distributed workers (identity without ``torch.distributed``).

    Loss normalisers such as the number of positives are averaged over GPUs, so every worker
    divides by the same number (FCOS / detectron2 practice).
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x = x / dist.get_world_size()
    return x
