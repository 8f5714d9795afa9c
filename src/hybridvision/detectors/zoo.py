"""Detectors on other registered backbones: any classification model with ``feature_info``
(``forward_features`` returning per-stage maps) feeds FCOS's neck and head.

``fcos_hib_patch_2_2_nl`` puts the seed 001's best sketch backbone (HIB patch 2-2 with non-local
blocks) under FCOS, joining the two theses: SAN and non-local attention inside the detector's
backbone rather than in its head.
"""

from __future__ import annotations

from typing import Any

from hybridvision.detectors.fcos import FCOS
from hybridvision.necks.fpn import FPN
from hybridvision.necks.panet import PANet
from hybridvision.registry import create_model, register_model

__all__ = ["fcos_on_backbone", "fcos_hib_patch_2_2_nl", "fcos_hib_patch_2_2_nl_small"]


def fcos_on_backbone(backbone_name: str, *, num_classes: int, backbone_kwargs: dict[str, Any] | None = None,
                     neck: str = "fpn", neck_channels: int = 256, num_levels: int = 5,
                     **fcos_kwargs: Any) -> FCOS:
    """FCOS on the last three stages (strides 8/16/32) of a registered classification model."""
    backbone = create_model(backbone_name, out_indices=(-3, -2, -1), features_only=True,
                            **(backbone_kwargs or {}))
    chans = [f["channels"] for f in backbone.feature_info]
    strides = [f["stride"] for f in backbone.feature_info]
    neck_cls = {"fpn": FPN, "panet": PANet}[neck]
    neck_mod = neck_cls(chans, strides, neck_channels, num_extra=num_levels - 3)
    return FCOS(backbone, neck_mod, num_classes, **fcos_kwargs)


@register_model(task="detection")
def fcos_hib_patch_2_2_nl(*, num_classes: int = 80, backbone_kwargs: dict[str, Any] | None = None,
                          **kwargs: Any) -> FCOS:
    """FCOS on HIB patch 2-2 (nl): ResNet stages 1–2, SAN patchwise stages 3–4 with NL blocks."""
    return fcos_on_backbone("hib_patch_2_2_nl", num_classes=num_classes,
                            backbone_kwargs=backbone_kwargs, **kwargs)


@register_model(task="detection")
def fcos_hib_patch_2_2_nl_small(*, num_classes: int = 10, width: float = 0.25, **kwargs: Any) -> FCOS:
    """CPU preset of :func:`fcos_hib_patch_2_2_nl`: backbone at ``width``, 64-channel P3–P5, 2-conv towers."""
    defaults = dict(neck_channels=64, num_levels=3, num_convs=2,
                    size_ranges=((0, 32), (32, 64), (64, float("inf"))))
    return fcos_on_backbone("hib_patch_2_2_nl", num_classes=num_classes,
                            backbone_kwargs={"width": width}, **{**defaults, **kwargs})
