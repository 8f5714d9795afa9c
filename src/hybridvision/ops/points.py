"""Locations of dense feature maps and the geometry between locations and boxes.

A dense detector predicts at every cell of every pyramid level. A cell (x, y) of a level with
stride s sits at pixel (⌊s/2⌋ + x·s, ⌊s/2⌋ + y·s) (Tian et al., FCOS, ICCV 2019, Sec. 3.1).
Locations are ordered level by level, row-major inside a level; ``flatten_levels`` and
``unflatten_levels`` move per-level maps to and from that order.

Symbols: B images, D channels of a map, L locations over all levels (Σ_l H_l·W_l), M boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "level_locations",
    "per_location",
    "flatten_levels",
    "unflatten_levels",
    "point_box_distances",
    "distances_to_boxes",
]


def level_locations(
    shapes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Pixel coordinates (x, y) of every feature cell: one ``[H_l·W_l, 2]`` per level."""
    out = []
    for (h, w), s in zip(shapes, strides):
        xs = torch.arange(w, device=device, dtype=dtype) * s + s // 2  # [W]
        ys = torch.arange(h, device=device, dtype=dtype) * s + s // 2  # [H]
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # [H, W]
        out.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))  # [H·W, 2]
    return out


def per_location(
    values: Sequence[float] | Sequence[Sequence[float]],
    shapes: Sequence[tuple[int, int]],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Repeat one value (or row) per level for each of its locations: ``[L]`` or ``[L, R]``."""
    counts = torch.tensor([h * w for h, w in shapes], device=device)
    per_level = torch.tensor(values, dtype=torch.float32, device=device)
    return torch.repeat_interleave(per_level, counts, dim=0)


def flatten_levels(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``list[[B, D, H_l, W_l]] -> [B, L, D]`` (level by level, row-major)."""
    b, d = maps[0].shape[:2]
    return torch.cat([m.permute(0, 2, 3, 1).reshape(b, -1, d) for m in maps], dim=1)


def unflatten_levels(flat: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """The inverse of :func:`flatten_levels`: ``[B, L, D] -> list[[B, D, H_l, W_l]]``."""
    b, _, d = flat.shape
    sizes = [h * w for h, w in shapes]
    return [
        part.reshape(b, h, w, d).permute(0, 3, 1, 2).contiguous()
        for part, (h, w) in zip(flat.split(sizes, dim=1), shapes)
    ]


def point_box_distances(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Distances (l, t, r, b) from each point to each box's sides: ``[L, 2] x [M, 4] -> [L, M, 4]``.

    ``boxes`` may also be ``[L, M, 4]`` (one box per point and column, e.g. centre regions).
    All four are positive exactly when the point lies strictly inside the box.
    """
    x, y = points[:, 0, None], points[:, 1, None]  # [L, 1]
    return torch.stack(
        [x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y], dim=-1
    )  # [L, M, 4]


def distances_to_boxes(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """xyxy boxes from points ``[P, 2]`` and distances ``[P, 4]`` to their sides: ``[P, 4]``."""
    return torch.cat([points - ltrb[:, :2], points + ltrb[:, 2:]], dim=1)
