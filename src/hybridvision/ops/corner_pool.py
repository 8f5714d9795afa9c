"""Corner pooling (Law & Deng, "CornerNet: Detecting Objects as Paired Keypoints", ECCV 2018,
Sec. 3.4) and the centre and cascade corner pooling of CenterNet keypoint triplets (Duan et al.,
"CenterNet: Keypoint Triplets for Object Detection", ICCV 2019, Sec. 3.3).

A box corner usually lies outside the object, so a corner detector looks along the box's edges:
a top-left corner at (i, j) sees the maximum of its column *below* it and of its row *right* of
it. Each direction is a running maximum:

===========  ============================================  ==========================
direction    output at (i, j)                              used for
===========  ============================================  ==========================
``top``      max over rows i..H−1 of column j               top-left corners
``left``     max over columns j..W−1 of row i               top-left corners
``bottom``   max over rows 0..i of column j                 bottom-right corners
``right``    max over columns 0..j of row i                 bottom-right corners
===========  ============================================  ==========================

Two equal forms: ``method="cummax"`` (:func:`torch.cummax`, with flips for ``top`` / ``left``;
the default) and ``method="logstep"`` — ⌈log₂ n⌉ rounds of "max with the map shifted by
1, 2, 4, … cells" built from slicing, concatenation and :func:`torch.maximum` only, so it exports
to plain ONNX (no custom operator; ONNX has no cummax). During ONNX export the log-step form is
used whatever ``method`` says; its number of rounds follows the traced H and W, so the graph is
made for that input size (as this package's exports are: only the batch is dynamic).

Shapes: ``[..., H, W] -> [..., H, W]`` (any leading dims, e.g. ``[B, C, H, W]``).
"""

from __future__ import annotations

import torch

__all__ = ["corner_pool", "center_pool", "cascade_corner_pool", "CORNER_POOL_DIRECTIONS"]

# direction -> (dim, whether the maximum runs towards higher indices)
_AXES = {"top": (-2, True), "bottom": (-2, False), "left": (-1, True), "right": (-1, False)}
CORNER_POOL_DIRECTIONS = tuple(_AXES)


def _cummax(x: torch.Tensor, dim: int, towards_end: bool) -> torch.Tensor:
    if towards_end:  # max over i..n-1: a running max from the end
        return torch.cummax(x.flip(dim), dim).values.flip(dim)
    return torch.cummax(x, dim).values


def _logstep(x: torch.Tensor, dim: int, towards_end: bool) -> torch.Tensor:
    n = int(x.shape[dim])
    k = 1
    while k < n:
        # y[i] = max(y[i], y[i + k]) (towards the end) or max(y[i], y[i − k]); a cell whose
        # partner falls outside the map is compared with itself.
        if towards_end:
            shifted = torch.cat([x.narrow(dim, k, n - k), x.narrow(dim, n - k, k)], dim)
        else:
            shifted = torch.cat([x.narrow(dim, 0, k), x.narrow(dim, 0, n - k)], dim)
        x = torch.maximum(x, shifted)
        k *= 2
    return x


def corner_pool(x: torch.Tensor, direction: str, *, method: str = "cummax") -> torch.Tensor:
    """Running maximum of ``x`` ``[..., H, W]`` in ``direction`` (see the module's table).

    Args:
        x: feature map.
        direction: ``"top"``, ``"bottom"``, ``"left"`` or ``"right"``.
        method: ``"cummax"`` (default) or ``"logstep"`` (ONNX-exportable; always used while
            exporting to ONNX).
    """
    if direction not in _AXES:
        raise ValueError(f"corner_pool direction={direction!r} must be one of {', '.join(_AXES)}")
    if method not in ("cummax", "logstep"):
        raise ValueError(f"corner_pool method={method!r} must be 'cummax' or 'logstep'")
    dim, towards_end = _AXES[direction]
    if method == "logstep" or torch.onnx.is_in_onnx_export():
        return _logstep(x, dim, towards_end)
    return _cummax(x, dim, towards_end)


def center_pool(rows: torch.Tensor, cols: torch.Tensor, *, method: str = "cummax") -> torch.Tensor:
    """Centre pooling (Duan et al. Sec. 3.3): the maximum of ``rows`` over each location's whole
    row plus the maximum of ``cols`` over its whole column, ``[..., H, W]`` each."""
    row_max = corner_pool(corner_pool(rows, "left", method=method), "right", method=method)
    col_max = corner_pool(corner_pool(cols, "top", method=method), "bottom", method=method)
    return row_max + col_max


def cascade_corner_pool(x: torch.Tensor, look: torch.Tensor, direction: str, look_direction: str,
                        *, method: str = "cummax") -> torch.Tensor:
    """Cascade corner pooling (Duan et al. Sec. 3.3), one of its two branches: first the maximum
    along the box's boundary (``look`` pooled in ``look_direction``), then — added to ``x`` — the
    maximum looking into the object (pooled in ``direction``).

    A top-left corner's two branches are ``cascade_corner_pool(a, a_look, "top", "left")`` and
    ``cascade_corner_pool(b, b_look, "left", "top")``, summed.
    """
    return corner_pool(x + corner_pool(look, look_direction, method=method), direction, method=method)
