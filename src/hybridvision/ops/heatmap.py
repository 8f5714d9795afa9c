"""Keypoint heatmaps: the machinery CenterNet, CornerNet and CornerFCOS share.

A keypoint detector predicts, for every class, a heatmap whose peaks are object keypoints
(CenterNet: box centres, Zhou et al., "Objects as Points", 2019; CornerNet: box corners, Law &
Deng, ECCV 2018). Training targets are unnormalised Gaussians around each keypoint whose radius
keeps a box built from a keypoint within that radius above an IoU with the truth
(:func:`gaussian_radius`); decoding keeps the local maxima of a 3×3 window
(:func:`heatmap_peaks`, instead of NMS), the top K over classes and positions
(:func:`topk_peaks`), and gathers the regression maps at those positions (:func:`gather_at`).

Symbols: B images, K classes, H×W the heatmap, M objects, k peaks kept per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_radius", "draw_gaussians", "heatmap_peaks", "topk_peaks", "gather_at"]


def _smaller_root(a: torch.Tensor | float, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The smaller root of a·r² + b·r + c = 0 (real roots assumed; the discriminant clamps at 0)."""
    return (-b - (b * b - 4 * a * c).clamp(min=0).sqrt()) / (2 * a)


def gaussian_radius(
    height: torch.Tensor | float,
    width: torch.Tensor | float,
    min_overlap: float = 0.7,
    *,
    form: str = "corrected",
) -> torch.Tensor:
    """The largest radius r such that a box whose corners each move by up to r (along x and y)
    keeps IoU ≥ ``min_overlap`` with the ``height`` × ``width`` box (CornerNet, Sec. 3.2).

    Three ways of moving the corners bound r; each is a quadratic in r, and r is the smallest of
    their relevant roots:

    1. both corners move the same way (the box shifts by (r, r)):
       (w−r)(h−r) / (2wh − (w−r)(h−r)) = o  ⇔  r² − (w+h)·r + wh(1−o)/(1+o) = 0, smaller root;
    2. both corners move inwards (the box shrinks by 2r):
       (w−2r)(h−2r) / wh = o  ⇔  4r² − 2(w+h)·r + (1−o)·wh = 0, smaller root;
    3. both corners move outwards (the box grows by 2r):
       wh / ((w+2r)(h+2r)) = o  ⇔  4o·r² + 2o(w+h)·r + (o−1)·wh = 0, positive root.

    ``form="corrected"`` solves those equations (the fix published after CornerNet's release and
    derived in mmdetection's ``gaussian_target``). ``form="original"`` reproduces the released
    CornerNet / CenterNet code, which takes (b' + √Δ)/2 for every case, b' = −b, without dividing
    by 2a — the larger root in cases 1 and 2; it gives a different (mostly larger) radius, and
    the published recipes (and their AP) were trained with it (the released code also rounds h
    and w up first: pass ``ceil``-ed sizes to match it exactly).

    Args:
        height, width: box size (scalars or tensors of one shape), in heatmap cells.
        min_overlap: the IoU o to keep (0.7 in CenterNet, 0.3 in CornerNet's config).
        form: ``"corrected"`` or ``"original"``.

    Returns:
        The radius, a float tensor of the broadcast shape of ``height`` and ``width``.
    """
    if form not in ("corrected", "original"):
        raise ValueError(f"gaussian_radius form={form!r} must be 'corrected' or 'original'")
    h = torch.as_tensor(height, dtype=torch.float64)
    w = torch.as_tensor(width, dtype=torch.float64)
    o = float(min_overlap)
    if form == "corrected":
        r1 = _smaller_root(1.0, -(h + w), w * h * (1 - o) / (1 + o))
        r2 = _smaller_root(4.0, -2 * (h + w), (1 - o) * w * h)
        r3 = -_smaller_root(4 * o, -2 * o * (h + w), (o - 1) * w * h)  # roots of r ↦ −r: the positive one
        return torch.minimum(torch.minimum(r1, r2), r3).float()
    # The released code: r_i = (b_i + √(b_i² − 4 a_i c_i)) / 2 with these (a, b, c).
    cases = [
        (1.0, h + w, w * h * (1 - o) / (1 + o)),
        (4.0, 2 * (h + w), (1 - o) * w * h),
        (4 * o, -2 * o * (h + w), (o - 1) * w * h),
    ]
    radii = [(b + (b * b - 4 * a * c).clamp(min=0).sqrt()) / 2 for a, b, c in cases]
    return torch.minimum(torch.minimum(radii[0], radii[1]), radii[2]).float()


def draw_gaussians(
    heatmap: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Draw one unnormalised Gaussian per object into ``heatmap`` ``[K, H, W]``, in place.

    Object m puts exp(−(dx² + dy²) / (2σ²)), σ = (2r + 1) / 6 (CornerNet / CenterNet), on the
    (2r+1)² window around its integer centre cell, r = ⌊radius⌋ ≥ 0; the peak is exactly 1.
    Overlapping Gaussians of a class take the element-wise maximum, not the sum.

    Args:
        heatmap: ``[K, H, W]`` float, modified in place and returned.
        centers: ``[M, 2]`` integer (x, y) cells (may lie outside the map: only the part inside
            is drawn).
        radii: ``[M]`` radii in cells.
        labels: ``[M]`` class of each object in ``0..K-1``.
    """
    if centers.numel() == 0:
        return heatmap
    _, height, width = heatmap.shape
    r = radii.floor().clamp(min=0).to(heatmap.dtype)  # [M]
    sigma = (2 * r + 1) / 6  # [M]
    xs = torch.arange(width, device=heatmap.device, dtype=heatmap.dtype)  # [W]
    ys = torch.arange(height, device=heatmap.device, dtype=heatmap.dtype)  # [H]
    dx = xs[None, :] - centers[:, 0:1].to(heatmap.dtype)  # [M, W]
    dy = ys[None, :] - centers[:, 1:2].to(heatmap.dtype)  # [M, H]
    gx = torch.exp(-dx * dx / (2 * sigma[:, None] ** 2)) * (dx.abs() <= r[:, None])  # [M, W]
    gy = torch.exp(-dy * dy / (2 * sigma[:, None] ** 2)) * (dy.abs() <= r[:, None])  # [M, H]
    g = gy[:, :, None] * gx[:, None, :]  # [M, H, W], separable: exp(-(dx²+dy²)/2σ²)
    index = labels.long()[:, None, None].expand_as(g)
    heatmap.scatter_reduce_(0, index, g, reduce="amax", include_self=True)
    return heatmap


def heatmap_peaks(heat: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Keep the local maxima of ``heat`` ``[B, K, H, W]`` in a ``kernel``² window, zero the rest.

    The keypoint detectors' replacement for NMS: a cell survives when it equals the maximum of
    its neighbourhood (ties all survive).
    """
    pooled = F.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
    return heat * (pooled == heat).to(heat.dtype)


def topk_peaks(heat: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """The ``k`` highest cells of ``heat`` ``[B, K, H, W]`` over classes and positions together.

    Returns ``(scores, labels, ys, xs)``, each ``[B, k']`` with k' = min(k, K·H·W), best first;
    ``labels`` the class, ``ys``/``xs`` the cell (int64).
    """
    b, _, h, w = heat.shape
    k = min(k, heat[0].numel())
    scores, flat = heat.reshape(b, -1).topk(k, dim=1)  # [B, k]
    labels = torch.div(flat, h * w, rounding_mode="floor")
    cell = flat - labels * (h * w)
    ys = torch.div(cell, w, rounding_mode="floor")
    return scores, labels, ys, cell - ys * w


def gather_at(maps: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Values of ``maps`` ``[B, D, H, W]`` at cells ``ys``, ``xs`` ``[B, k]``: ``[B, k, D]``."""
    b, d, _, w = maps.shape
    index = (ys * w + xs)[:, None, :].expand(b, d, -1)  # [B, D, k]
    return maps.flatten(2).gather(2, index).transpose(1, 2)
