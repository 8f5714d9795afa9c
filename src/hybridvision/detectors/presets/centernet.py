"""CenterNet presets (Zhou et al. 2019) and NL-CenterNet: a ResNet's C5 upsampled to stride 4
by transposed convolutions, then the heatmap, size and offset heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hybridvision.detectors.centernet import CenterNet, CenterNetHead
from hybridvision.detectors.presets.common import preset_options, resnet_features
from hybridvision.necks.upsample import DeconvUpsample
from hybridvision.registry import register_model

__all__ = ["build_centernet", "SMALL_CENTERNET", "NL_CENTERNET_ATTN"]


def build_centernet(
    *,
    num_classes: int,
    depth: int = 18,
    width: float = 1.0,
    up_channels: Sequence[int] = (256, 128, 64),
    dcn: bool = False,
    skip: bool = False,
    **centernet_kwargs: Any,
) -> CenterNet:
    """Build a CenterNet: ResNet-``depth`` C5 → 3 transposed-conv stages to stride 4 → heads.

    Args:
        num_classes: K.
        depth: 18, 34, 50 or 101.
        width: ResNet channel multiplier.
        up_channels: channels of the upsampling stages (the paper's 256, 128, 64).
        dcn: a deformable 3×3 conv before each upsampling (the paper's ``resnet_dcn``; off by
            default so the model runs on CPU and exports to ONNX).
        skip: add C4, C3, C2 to the upsampled maps of their stride (1×1 conv + BN), as U-Net /
            DLA-34's IDA-up; the paper's ResNet variant has none.
        **centernet_kwargs: :class:`CenterNet` and :class:`CenterNetHead` options.
    """
    backbone = resnet_features(depth, out_indices=(1, 2, 3, 4) if skip else (4,), owner="CenterNet", width=width)
    info = backbone.feature_info
    neck = DeconvUpsample([f["channels"] for f in info], [f["stride"] for f in info], up_channels, dcn=dcn,
                          skip=skip)
    return CenterNet(backbone, neck, num_classes, **centernet_kwargs)


OPTIONS = preset_options(build_centernet, CenterNet, CenterNetHead)

# The non-local block of NL-CenterNet: Wang et al.'s form (identity at the start, sub-sampled keys),
# which keeps the stride-4 map's 1024 (CPU preset) to 16384 (512² input) queries affordable.
NL_CENTERNET_ATTN = "nonlocal"


@register_model(task="detection", options=OPTIONS)
def centernet_r18(*, num_classes: int = 80, **kwargs: Any) -> CenterNet:
    """CenterNet, ResNet-18, upsampling 256/128/64 to stride 4, 64-channel heads."""
    return build_centernet(**{"num_classes": num_classes, "depth": 18, **kwargs})


@register_model(task="detection", options=OPTIONS)
def centernet_r101(*, num_classes: int = 80, **kwargs: Any) -> CenterNet:
    """CenterNet, ResNet-101, upsampling 256/128/64 to stride 4, 64-channel heads."""
    return build_centernet(**{"num_classes": num_classes, "depth": 101, **kwargs})


@register_model(task="detection", options=OPTIONS)
def nl_centernet_r18(*, num_classes: int = 80, **kwargs: Any) -> CenterNet:
    """NL-CenterNet-R18: a non-local block on the stride-4 feature, before the heads."""
    return build_centernet(**{"num_classes": num_classes, "depth": 18, "head_attn": NL_CENTERNET_ATTN,
                              "head_attn_at": "neck", **kwargs})


@register_model(task="detection", options=OPTIONS)
def nl_centernet_r18_heads(*, num_classes: int = 80, **kwargs: Any) -> CenterNet:
    """NL-CenterNet-R18 (heads): a non-local block at the start of each of the three heads."""
    return build_centernet(**{"num_classes": num_classes, "depth": 18, "head_attn": NL_CENTERNET_ATTN,
                              "head_attn_at": "heads", **kwargs})


# The CPU preset: the demo's backbone (ResNet-18 ×0.25) with a narrow neck and heads, and skip
# connections: on the built-in amounts (128 px) C5 is 4×4, too coarse to place 14-px digits on
# the 32×32 heatmap alone (6.8 AP after 8 of the demo's 28 epochs without skips).
SMALL_CENTERNET: dict[str, Any] = dict(depth=18, width=0.25, up_channels=(64, 64, 64), head_channels=32, skip=True)


@register_model(task="detection", options=OPTIONS)
def centernet_small(*, num_classes: int = 10, **kwargs: Any) -> CenterNet:
    """Small CenterNet for CPU (ResNet-18 ×0.25, 64-channel upsampling with skips, 32-channel heads)."""
    return build_centernet(**{"num_classes": num_classes, **SMALL_CENTERNET, **kwargs})


@register_model(task="detection", options=OPTIONS)
def nl_centernet_small(*, num_classes: int = 10, **kwargs: Any) -> CenterNet:
    """Small NL-CenterNet: a non-local block on the stride-4 feature."""
    return build_centernet(**{"num_classes": num_classes, **SMALL_CENTERNET, "head_attn": NL_CENTERNET_ATTN,
                              "head_attn_at": "neck", **kwargs})


@register_model(task="detection", options=OPTIONS)
def nl_centernet_small_heads(*, num_classes: int = 10, **kwargs: Any) -> CenterNet:
    """Small NL-CenterNet (heads): a non-local block at the start of each head."""
    return build_centernet(**{"num_classes": num_classes, **SMALL_CENTERNET, "head_attn": NL_CENTERNET_ATTN,
                              "head_attn_at": "heads", **kwargs})
