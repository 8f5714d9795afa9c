"""Soft-NMS (Bodla et al., "Soft-NMS — Improving Object Detection With One Line of Code", ICCV
2017), per class, vectorised over classes.

Hard NMS deletes every box overlapping a better one by more than a threshold; Soft-NMS instead
lowers its score by a function of the overlap, so two true objects that overlap both survive:

* ``linear``:   s_i ← s_i · (1 − IoU(M, b_i))   when IoU(M, b_i) ≥ N_t, else unchanged;
* ``gaussian``: s_i ← s_i · exp(−IoU(M, b_i)² / σ).

Each round picks the best remaining box M of every class at once (boxes of different classes
never interact), decays the scores of the rest of its class, and drops boxes whose score fell
below ``score_threshold``. Rounds = the largest number of boxes of one class; each round costs
O(G · n_max) (G classes, n_max boxes of the largest), with no N × N matrix. torchvision has no
Soft-NMS; IoU is area-based as :func:`torchvision.ops.box_iou`.

Symbols: N boxes, G groups (classes, or image × class), P boxes picked in one round (≤ G).
"""

from __future__ import annotations

import torch

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
    # Lay the boxes out as a padded [G, n_max] grid, one row per group, so each round picks the
    # best live box of every group with one max() and decays its row with one IoU row.
    _, group_of = torch.unique(labels.long(), return_inverse=True)  # [N] in 0..G-1
    order = torch.sort(group_of, stable=True).indices  # [N] boxes grouped, original order inside
    counts = torch.bincount(group_of)  # [G]
    num_groups, n_max = counts.numel(), int(counts.max())
    row = group_of[order]
    col = torch.arange(n, device=device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    grid_boxes = boxes.new_zeros((num_groups, n_max, 4))
    grid_boxes[row, col] = boxes[order].to(grid_boxes.dtype)
    index = torch.full((num_groups, n_max), -1, dtype=torch.long, device=device)
    index[row, col] = order
    current = torch.zeros((num_groups, n_max), device=device)
    current[row, col] = scores[order].float()
    alive = torch.zeros((num_groups, n_max), dtype=torch.bool, device=device)
    alive[row, col] = current[row, col] >= score_threshold
    area = (grid_boxes[..., 2] - grid_boxes[..., 0]) * (grid_boxes[..., 3] - grid_boxes[..., 1])  # [G, n_max]
    groups = torch.arange(num_groups, device=device)

    picked: list[torch.Tensor] = []
    picked_scores: list[torch.Tensor] = []
    while bool(alive.any()):
        best, pick = torch.where(alive, current, -torch.inf).max(dim=1)  # [G] (first of ties)
        live = alive[groups, pick]  # [G] groups that still had a box
        picked.append(index[groups, pick][live])
        picked_scores.append(best[live])
        alive[groups, pick] = False

        m = grid_boxes[groups, pick][:, None, :]  # [G, 1, 4] each group's pick M
        w = (torch.minimum(m[..., 2], grid_boxes[..., 2]) - torch.maximum(m[..., 0], grid_boxes[..., 0])).clamp(min=0)
        h = (torch.minimum(m[..., 3], grid_boxes[..., 3]) - torch.maximum(m[..., 1], grid_boxes[..., 1])).clamp(min=0)
        inter = w * h  # [G, n_max]
        union = area[groups, pick][:, None] + area - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1e-12), 0.0)  # IoU(M, b_i); 0 for empty boxes
        if method == "linear":
            decay = torch.where(iou >= iou_threshold, 1 - iou, torch.ones_like(iou))
        else:
            decay = torch.exp(-(iou * iou) / sigma)
        current = current * decay
        alive &= current >= score_threshold

    if not picked:  # nothing reached score_threshold
        return torch.zeros(0, dtype=torch.long, device=device), scores.new_zeros(0)
    keep = torch.cat(picked)
    new_scores = torch.cat(picked_scores)
    order = torch.sort(new_scores, descending=True, stable=True).indices
    return keep[order], new_scores[order].to(scores.dtype)
