"""RetinaNet presets (Lin et al. 2017): the anchor-based baseline, torchvision's head and anchors,
on a ResNet (C3–C5) and an FPN."""

from __future__ import annotations

from typing import Any

from hybridvision.detectors.presets.common import build_neck, preset_options, resnet_features
from hybridvision.detectors.retinanet import RetinaNet, anchor_sizes_for
from hybridvision.registry import register_model

__all__ = ["build_retinanet"]


def build_retinanet(
    *,
    num_classes: int,
    depth: int = 50,
    width: float = 1.0,
    neck_channels: int = 256,
    num_levels: int = 5,
    anchor_base: float = 4.0,
    **retinanet_kwargs: Any,
) -> RetinaNet:
    """Build a RetinaNet from a ResNet-``depth`` (C3–C5), an FPN (P3–P7 or P3–P5) and options.

    Args:
        num_classes: K.
        depth: 18, 34, 50 or 101.
        width: ResNet channel multiplier.
        neck_channels: channels of the pyramid (and of the head's towers).
        num_levels: 5 (P3–P7) or 3 (P3–P5).
        anchor_base: anchor size in strides at scale 2⁰ (4: 32 px at P3, the paper's).
        **retinanet_kwargs: :class:`~hybridvision.detectors.retinanet.RetinaNet` options.
    """
    backbone = resnet_features(depth, out_indices=(2, 3, 4), owner="RetinaNet", width=width)
    neck = build_neck("fpn", backbone, neck_channels, num_levels)
    if "anchor_sizes" not in retinanet_kwargs:
        retinanet_kwargs["anchor_sizes"] = anchor_sizes_for(neck.strides, anchor_base)
    return RetinaNet(backbone, neck, num_classes, **retinanet_kwargs)


OPTIONS = preset_options(build_retinanet, RetinaNet)


@register_model(task="detection", options=OPTIONS)
def retinanet_r50_fpn(*, num_classes: int = 80, **kwargs: Any) -> RetinaNet:
    """RetinaNet, ResNet-50, FPN P3–P7, 9 anchors per cell (torchvision's ``retinanet_resnet50_fpn``)."""
    return build_retinanet(**{"num_classes": num_classes, "depth": 50, **kwargs})


@register_model(task="detection", options=OPTIONS)
def retinanet_small(*, num_classes: int = 10, **kwargs: Any) -> RetinaNet:
    """Small RetinaNet for CPU, matched to ``fcos_small``: ResNet-18 ×0.25, FPN 64 ch, P3–P5,
    anchors 2·stride (16–102 px, for ~128 px images)."""
    return build_retinanet(**{"num_classes": num_classes, "depth": 18, "width": 0.25, "neck_channels": 64,
                              "num_levels": 3, "anchor_base": 2.0, **kwargs})
