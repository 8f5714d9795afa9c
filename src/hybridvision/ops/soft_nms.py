"""Soft-NMS (Bodla et al., "Soft-NMS — Improving Object Detection With One Line of Code", ICCV
2017), per class, vectorised over classes.

Hard NMS deletes every box overlapping a better one by more than a threshold; Soft-NMS instead
lowers its score by a function of the overlap, so two true objects that overlap both survive:

* ``linear``:   s_i ← s_i · (1 − IoU(M, b_i))   when IoU(M, b_i) ≥ N_t, else unchanged;
* ``gaussian``: s_i ← s_i · exp(−IoU(M, b_i)² / σ).

Each round picks the best remaining box M of every class at once (boxes of different classes
never interact), decays the scores of the rest of its class, and drops boxes whose score fell
below ``score_threshold``. Rounds = the largest number of boxes of one class. torchvision has
no Soft-NMS; IoU is :func:`torchvision.ops.box_iou`.

Symbols: N boxes, G groups (classes, or image × class), P boxes picked in one round (≤ G).
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

__all__ = ["soft_nms", "SOFT_NMS_METHODS"]

SOFT_NMS_METHODS = ("gaussian", "linear")


def soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS inside each label group.

    Args:
        boxes: ``[N, 4]`` xyxy.
        scores: ``[N]``.
        labels: ``[N]`` int group of each box (a class; pass image·K + class to run a whole batch
            in one call).
        method: ``"gaussian"`` (σ = ``sigma``) or ``"linear"`` (N_t = ``iou_threshold``).
        sigma: the Gaussian's σ (0.5 in the paper).
        iou_threshold: N_t of the linear form (0.3 in the paper); unused by the Gaussian form.
        score_threshold: boxes whose (decayed) score falls below it are discarded.

    Returns:
        ``(keep, new_scores)``: ``keep`` ``[D]`` int64 indices into ``boxes`` sorted by new score,
        best first; ``new_scores`` ``[D]`` their scores after decay.
    """
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"soft_nms method={method!r} must be one of {SOFT_NMS_METHODS}")
    device = boxes.device
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=device), scores.new_zeros(0)
    labels = labels.long()
    groups, group_of = torch.unique(labels, return_inverse=True)  # group_of: [N] in 0..G-1
    num_groups = groups.numel()
    index = torch.arange(n, device=device)
    current = scores.clone().float()
    alive = current >= score_threshold  # [N]
    picked: list[torch.Tensor] = []
    picked_scores: list[torch.Tensor] = []
    while bool(alive.any()):
        masked = torch.where(alive, current, torch.full_like(current, -torch.inf))
        best = torch.full((num_groups,), -torch.inf, device=device).scatter_reduce(
            0, group_of, masked, reduce="amax"
        )  # [G] best live score per group
        is_best = alive & (masked == best[group_of])  # [N]
        first = torch.full((num_groups,), n, device=device).scatter_reduce(
            0, group_of[is_best], index[is_best], reduce="amin"
        )  # [G] lowest index among a group's best (n: the group has none alive)
        picks = first[first < n]  # [P]
        picked.append(picks)
        picked_scores.append(current[picks])
        alive[picks] = False

        iou = box_iou(boxes[picks], boxes)  # [P, N]
        same = group_of[picks][:, None] == group_of[None, :]  # [P, N]
        iou = iou * same
        if method == "linear":
            decay = torch.where(iou >= iou_threshold, 1 - iou, torch.ones_like(iou))
        else:
            decay = torch.exp(-(iou * iou) / sigma)
        current = current * decay.prod(dim=0)  # each box meets only its own group's pick
        alive &= current >= score_threshold

    keep = torch.cat(picked)
    new_scores = torch.cat(picked_scores)
    order = torch.sort(new_scores, descending=True, stable=True).indices
    return keep[order], new_scores[order].to(scores.dtype)
