"""Losses shared by the detectors, as pure functions.

* :func:`focal_loss_sum` — the sigmoid focal loss (Lin et al., "Focal Loss for Dense Object
  Detection", ICCV 2017), torchvision's, summed;
* :func:`iou_loss_ltrb` — UnitBox's −ln IoU (Yu et al., ACM MM 2016) and :func:`giou_loss_ltrb`
  — GIoU (Rezatofighi et al., CVPR 2019), for boxes given as distances (l, t, r, b) from one
  location, as FCOS predicts them;
* :func:`heatmap_focal_loss` — the penalty-reduced pixel-wise focal loss of keypoint heatmaps
  (Law & Deng, CornerNet, ECCV 2018, Eq. 1; Zhou et al., CenterNet, 2019, Eq. 1);
* :func:`pull_push_loss` — CornerNet's associative-embedding losses that group a top-left and a
  bottom-right corner into one object (Law & Deng, ECCV 2018, Eq. 4–5; Newell et al. 2017);
* :func:`reduce_mean` — a loss normaliser (e.g. the number of positives) averaged over workers.

Symbols: P locations (positives), K classes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

__all__ = ["focal_loss_sum", "heatmap_focal_loss", "pull_push_loss", "iou_loss_ltrb", "giou_loss_ltrb",
           "ltrb_to_boxes", "reduce_mean"]


def focal_loss_sum(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                   gamma: float = 2.0) -> torch.Tensor:
    """Σ of torchvision's sigmoid focal loss over every element (``[..., K]`` logits, 0/1 targets)."""
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="sum")


def heatmap_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 2.0,
    beta: float = 4.0,
    eps: float = 1e-4,
    num_objects: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Penalty-reduced focal loss of a keypoint heatmap, summed and divided by the objects.

    With p = sigmoid(logit) clamped to [eps, 1 − eps] and y the Gaussian target (1 at a keypoint):

        L = −1/N Σ { (1 − p)^α · log p                 where y = 1
                   { (1 − y)^β · p^α · log(1 − p)      elsewhere

    The (1 − y)^β factor lowers the penalty on negatives near a keypoint (CornerNet Eq. 1).

    Args:
        logits, target: ``[B, K, H, W]`` heatmap logits and Gaussian targets in [0, 1].
        alpha, beta: α = 2, β = 4 in both papers.
        eps: the probability clamp (the released code's 1e-4).
        num_objects: N; default the number of cells where y = 1. Clamped to ≥ 1, so an image
            without objects gives the negatives' term alone, never NaN.
    """
    p = logits.float().sigmoid().clamp(eps, 1 - eps)
    target = target.float()
    pos = target == 1
    pos_term = torch.log(p) * (1 - p).pow(alpha)
    neg_term = torch.log(1 - p) * p.pow(alpha) * (1 - target).pow(beta)
    total = torch.where(pos, pos_term, neg_term).sum()
    n = pos.sum() if num_objects is None else num_objects
    return -total / torch.as_tensor(n, dtype=total.dtype, device=total.device).clamp(min=1)


def pull_push_loss(
    tl_tags: torch.Tensor, br_tags: torch.Tensor, images: torch.Tensor, num_images: int, *, margin: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """CornerNet's pull and push losses on the 1-D embeddings of each object's two corners.

    For an image with N objects, e_k = (e_tl,k + e_br,k) / 2:

        pull = 1/N Σ_k [(e_tl,k − e_k)² + (e_br,k − e_k)²]
        push = 1/(N(N−1)) Σ_{k≠j} max(0, Δ − |e_k − e_j|)        (0 when N < 2)

    Each is averaged over the ``num_images`` images of the batch (an image without objects
    counts 0), so the loss does not grow with the batch; one object gives a pull and no push.

    Args:
        tl_tags, br_tags: ``[M]`` embeddings of the top-left and bottom-right corner of each
            object of the batch.
        images: ``[M]`` image index of each object.
        num_images: B.
        margin: Δ (1 in the paper).

    Returns:
        ``(pull, push)``, scalars (0 connected to the graph when M = 0).
    """
    if tl_tags.numel() == 0:
        zero = (tl_tags.sum() + br_tags.sum()) * 0.0
        return zero, zero
    tl, br = tl_tags.float(), br_tags.float()
    mean = (tl + br) / 2  # [M]
    counts = torch.bincount(images, minlength=num_images).to(mean.dtype)  # [B]
    n = counts[images]  # [M] objects in each object's image
    pull = (((tl - mean) ** 2 + (br - mean) ** 2) / n).sum() / num_images
    same = images[:, None] == images[None, :]  # [M, M]
    same.fill_diagonal_(False)
    gap = torch.relu(margin - (mean[:, None] - mean[None, :]).abs())  # [M, M]
    pairs = (n * (n - 1)).clamp(min=1)[:, None]  # N(N−1) of the row's image
    push = (gap * same / pairs).sum() / num_images
    return pull, push


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
