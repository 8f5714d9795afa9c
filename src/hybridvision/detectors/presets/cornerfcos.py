"""CornerFCOS presets (thesis A, Sec. 3.3.4): CornerNet prediction modules on an FCOS backbone
and FPN, one module pair shared by every level.

Four settings, each a paper preset (ResNet-50 FPN) and a CPU one (ResNet-18 ×0.25, FPN 64 ch):
``mode`` "single" (P3 only) or "multi" (P3–P7), ``targets`` "normal" (FCOS's size range per
level) or "all" (every level learns every box); with one level the two target rules coincide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hybridvision.detectors.cornernet import CornerNet
from hybridvision.detectors.fcos import default_size_ranges
from hybridvision.detectors.presets.common import DEMO_SIZE_RANGES, build_neck, preset_options, resnet_features
from hybridvision.errors import UserInputError
from hybridvision.necks.fpn import FinestLevels
from hybridvision.registry import register_model

__all__ = ["build_cornerfcos"]


def build_cornerfcos(
    *,
    num_classes: int,
    mode: str = "multi",
    targets: str = "normal",
    depth: int = 50,
    width: float = 1.0,
    neck_channels: int = 256,
    pool_channels: int = 128,
    num_levels: int = 5,
    size_ranges: Sequence[tuple[float, float]] | None = None,
    **cornernet_kwargs: Any,
) -> CornerNet:
    """CornerFCOS: a ResNet (C3–C5) and FPN, and one CornerNet prediction module pair shared by
    every level (``pool``: ``"nl"`` as the thesis, ``"conv"``, or ``"corner"`` — its future work).

    Args:
        mode: ``"single"`` (P3 only, no P6/P7) or ``"multi"`` (P3–P7).
        targets: ``"normal"`` (each level learns the boxes whose half larger side lies in FCOS's
            size range of the level: FCOS's target max(l, t, r, b) at the box's centre) or
            ``"all"`` (every level learns every box); with one level (single) both mean that P3
            learns every box.
        num_levels: pyramid levels of "multi", 5 (P3–P7) or 3 (P3–P5).
        size_ranges: the "normal" ranges per level (default FCOS's for ``num_levels``).
        **cornernet_kwargs: :class:`~hybridvision.detectors.cornernet.CornerNet` options.
    """
    if mode not in ("single", "multi") or targets not in ("normal", "all"):
        raise UserInputError(f"CornerFCOS mode={mode!r} targets={targets!r}: use mode single|multi, "
                             "targets normal|all")
    backbone = resnet_features(depth, out_indices=(2, 3, 4), owner="CornerFCOS", width=width)
    num_levels = num_levels if mode == "multi" else 3
    neck = build_neck("fpn", backbone, neck_channels, num_levels)
    if mode == "single":
        neck = FinestLevels(neck, 1)
    ranges = None
    if mode == "multi" and targets == "normal":
        ranges = default_size_ranges(num_levels) if size_ranges is None else [tuple(r) for r in size_ranges]
    options = {"pool": "nl", "nms_method": "hard", "nms_thresh": 0.6, **cornernet_kwargs}
    return CornerNet(backbone, num_classes, neck=neck, shared_head=True, level_ranges=ranges, decode_all=True,
                     pool_channels=pool_channels, **options)


OPTIONS = preset_options(build_cornerfcos, CornerNet)
# fcos_small's pyramid (P3–P5, ranges for ~128-px images), so the two compare at one budget.
SMALL: dict[str, Any] = dict(depth=18, width=0.25, neck_channels=64, pool_channels=32, num_levels=3,
                             size_ranges=DEMO_SIZE_RANGES)


def _cornerfcos(mode: str, targets: str, num_classes: int, kwargs: dict[str, Any], **defaults: Any) -> CornerNet:
    return build_cornerfcos(**{"num_classes": num_classes, "mode": mode, "targets": targets, **defaults, **kwargs})


@register_model(task="detection", options=OPTIONS)
def cornerfcos_single_normal(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """CornerFCOS single/normal: ResNet-50 FPN, a shared CornerNet module pair per level (pool nl | conv | corner)."""
    return _cornerfcos("single", "normal", num_classes, kwargs)


@register_model(task="detection", options=OPTIONS)
def cornerfcos_single_all(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """CornerFCOS single/all: ResNet-50 FPN, a shared CornerNet module pair per level (pool nl | conv | corner)."""
    return _cornerfcos("single", "all", num_classes, kwargs)


@register_model(task="detection", options=OPTIONS)
def cornerfcos_multi_normal(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """CornerFCOS multi/normal: ResNet-50 FPN, a shared CornerNet module pair per level (pool nl | conv | corner)."""
    return _cornerfcos("multi", "normal", num_classes, kwargs)


@register_model(task="detection", options=OPTIONS)
def cornerfcos_multi_all(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """CornerFCOS multi/all: ResNet-50 FPN, a shared CornerNet module pair per level (pool nl | conv | corner)."""
    return _cornerfcos("multi", "all", num_classes, kwargs)


@register_model(task="detection", options=OPTIONS)
def cornerfcos_single_normal_small(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """CornerFCOS single/normal: ResNet-18 ×0.25, FPN 64 ch (CPU), a shared CornerNet module pair per level (pool nl | conv | corner)."""  # noqa: E501
    return _cornerfcos("single", "normal", num_classes, kwargs, **SMALL)


@register_model(task="detection", options=OPTIONS)
def cornerfcos_single_all_small(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """CornerFCOS single/all: ResNet-18 ×0.25, FPN 64 ch (CPU), a shared CornerNet module pair per level (pool nl | conv | corner)."""  # noqa: E501
    return _cornerfcos("single", "all", num_classes, kwargs, **SMALL)


@register_model(task="detection", options=OPTIONS)
def cornerfcos_multi_normal_small(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """CornerFCOS multi/normal: ResNet-18 ×0.25, FPN 64 ch (CPU), a shared CornerNet module pair per level (pool nl | conv | corner)."""  # noqa: E501
    return _cornerfcos("multi", "normal", num_classes, kwargs, **SMALL)


@register_model(task="detection", options=OPTIONS)
def cornerfcos_multi_all_small(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """CornerFCOS multi/all: ResNet-18 ×0.25, FPN 64 ch (CPU), a shared CornerNet module pair per level (pool nl | conv | corner)."""  # noqa: E501
    return _cornerfcos("multi", "all", num_classes, kwargs, **SMALL)
