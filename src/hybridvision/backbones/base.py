"""The backbone contract, typed: what a detector's core needs of the network under it.

A backbone (``features_only=True``) is an ``nn.Module`` with

* ``forward(x) -> list[Tensor]``: one map ``[B, feature_info[i]["channels"], H / s_i, W / s_i]``
  per entry of ``out_indices``, in that order;
* ``feature_info``: ``list[FeatureInfo]``, one ``{"channels", "stride"}`` per returned map;
* ``out_indices``: the feature levels it returns, as non-negative indices, increasing;
* ``size_divisible``: the input multiple it needs (its coarsest stride, or more: a stacked
  hourglass of depth d needs 2^(d+2)).

One rule for ``out_indices`` (:func:`resolve_out_indices`, timm's ``features_only``
convention): indices into the backbone's list of feature levels (ResNet: stem, layer1..4;
HybridNet: its stages; the hourglass: its stacks), negatives counting from the end; each at most
once, in increasing order; anything else is refused in one line naming the valid range.
``tests/test_backbone_contract.py`` checks every registered backbone against this module.

Symbols: B batch, H×W input size, s_i the stride of output i.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Protocol, TypedDict, runtime_checkable

import torch

from hybridvision.errors import UserInputError

__all__ = ["Backbone", "FeatureInfo", "resolve_out_indices", "coarsest_stride"]


class FeatureInfo(TypedDict):
    """One returned feature map: its channels and its stride (input pixels per output cell)."""

    channels: int
    stride: int


@runtime_checkable
class Backbone(Protocol):
    """What :class:`~hybridvision.detectors.base.DenseDetector` reads of its backbone."""

    feature_info: list[FeatureInfo]
    out_indices: tuple[int, ...]
    size_divisible: int

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]: ...


def resolve_out_indices(out_indices: Sequence[int] | None, num_levels: int, owner: str,
                        levels: str = "") -> tuple[int, ...]:
    """``out_indices`` as non-negative level indices (None: every level).

    Args:
        out_indices: indices into the ``num_levels`` feature levels; ``-1`` is the last.
        num_levels: how many levels the backbone has.
        owner: the backbone's name, for the message.
        levels: what the levels are (e.g. ``"0 = stem, 1..4 = layer1..4"``), for the message.

    Raises:
        UserInputError: empty, not integers, out of ``-num_levels..num_levels-1``, repeated or not
            increasing (after counting negatives from the end).
    """
    if out_indices is None:
        return tuple(range(num_levels))
    raw = tuple(out_indices)
    what = f" ({levels})" if levels else ""
    fix = (f"{owner} out_indices={raw}: give increasing level indices in {-num_levels}..{num_levels - 1}"
           f"{what}, negatives counting from the end")
    try:
        raw = tuple(operator.index(i) for i in raw if not isinstance(i, bool)) if raw else raw
    except TypeError:
        raise UserInputError(fix) from None
    if not raw or len(raw) != len(tuple(out_indices)):
        raise UserInputError(fix)
    if any(not -num_levels <= i < num_levels for i in raw):
        raise UserInputError(fix)
    resolved = tuple(i % num_levels for i in raw)
    if any(b <= a for a, b in zip(resolved, resolved[1:])):
        raise UserInputError(fix)
    return resolved


def coarsest_stride(feature_info: Sequence[FeatureInfo]) -> int:
    """The largest stride of ``feature_info`` (the default ``size_divisible``)."""
    return max(int(f["stride"]) for f in feature_info)
