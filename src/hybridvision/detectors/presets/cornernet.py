"""CornerNet presets (Law & Deng 2018) on a stacked hourglass: CornerNet, NL-CornerNet (thesis A:
a non-local block replaces each corner pooling), CornerNet-64 and CenterNet keypoint triplets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hybridvision.backbones.hourglass import HOURGLASS_104, StackedHourglass
from hybridvision.detectors.cornernet import CornerNet
from hybridvision.detectors.presets.common import preset_options
from hybridvision.registry import register_model

__all__ = ["build_cornernet", "SMALL_HOURGLASS"]


def build_cornernet(
    *,
    num_classes: int,
    stacks: int = 2,
    depth: int = HOURGLASS_104["depth"],
    widths: Sequence[int] = HOURGLASS_104["widths"],
    blocks: Sequence[int] = HOURGLASS_104["blocks"],
    stem_channels: int = 128,
    cnv_channels: int = 256,
    **cornernet_kwargs: Any,
) -> CornerNet:
    """Build a CornerNet on a stacked hourglass (default Hourglass-104: 2 stacks, depth 5).

    ``cornernet_kwargs`` go to :class:`~hybridvision.detectors.cornernet.CornerNet` (``pool``,
    ``pool_channels``, ``attn``, ``min_overlap``, decoding options, ...).
    """
    backbone = StackedHourglass(stacks, depth, widths, blocks, stem_channels=stem_channels,
                                cnv_channels=cnv_channels)
    return CornerNet(backbone, num_classes, **cornernet_kwargs)


OPTIONS = preset_options(build_cornernet, CornerNet)


@register_model(task="detection", options=OPTIONS)
def cornernet_hg104(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """CornerNet, Hourglass-104 (2 stacks), corner pooling, 128-channel prediction modules."""
    return build_cornernet(**{"num_classes": num_classes, **kwargs})


@register_model(task="detection", options=OPTIONS)
def nl_cornernet_hg104(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """NL-CornerNet (thesis A): a non-local block (thesis A's form) replaces each corner pooling."""
    return build_cornernet(**{"num_classes": num_classes, "pool": "nl", **kwargs})


@register_model(task="detection", options=OPTIONS)
def cornernet_64(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """CornerNet-64 (thesis A, Table 4.5): the prediction modules' branches convolve with stride 2,
    so corner pooling runs at 64² for a 128² map, and the pooled map is upsampled back."""
    return build_cornernet(**{"num_classes": num_classes, "pool_stride": 2, **kwargs})


@register_model(task="detection", options=OPTIONS)
def nl_cornernet_64(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """NL-CornerNet-64 (thesis A, Código 3.5): the non-local blocks first reduce their input with a
    stride-2 1×1 conv, so attention runs at 64² for a 128² map, and upsample their output back."""
    return build_cornernet(**{"num_classes": num_classes, "pool": "nl", "attn_kwargs": {"reduce": True},
                              **kwargs})


@register_model(task="detection", options=OPTIONS)
def centernet_triplets_hg104(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """CenterNet keypoint triplets (Duan et al. 2019): Hourglass-104, cascade corner pooling, a
    centre keypoint (centre pooling) and the central-region check in decoding."""
    return build_cornernet(**{"num_classes": num_classes, "pool": "cascade", "center_keypoints": True, **kwargs})


# The CPU preset: one stack of a depth-3 hourglass at widths 32–64 (inputs a multiple of 32). A
# second stack (CornerNet's intermediate supervision; ``stacks=2``) doubles a training step's cost
# on a CPU (0.32 → 0.64 s at batch 16, 128², one thread; fcos_small: 0.17 s).
SMALL_HOURGLASS: dict[str, Any] = dict(stacks=1, depth=3, widths=(32, 32, 48, 64), blocks=(1, 1, 1, 1),
                                       stem_channels=16, cnv_channels=32, pool_channels=32)


@register_model(task="detection", options=OPTIONS)
def cornernet_small(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """Small CornerNet for CPU: one stack of a depth-3 hourglass (32–64 ch), corner pooling."""
    return build_cornernet(**{"num_classes": num_classes, **SMALL_HOURGLASS, **kwargs})


@register_model(task="detection", options=OPTIONS)
def nl_cornernet_small(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """Small NL-CornerNet: a non-local block replaces each corner pooling."""
    return build_cornernet(**{"num_classes": num_classes, **SMALL_HOURGLASS, "pool": "nl", **kwargs})


@register_model(task="detection", options=OPTIONS)
def centernet_triplets_small(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """Small CenterNet keypoint triplets for CPU (the small hourglass)."""
    return build_cornernet(**{"num_classes": num_classes, **SMALL_HOURGLASS, "pool": "cascade",
                              "center_keypoints": True, **kwargs})


@register_model(task="detection", options=OPTIONS)
def cornernet_small_64(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """Small CornerNet-64: corner pooling at half the map's resolution."""
    return build_cornernet(**{"num_classes": num_classes, **SMALL_HOURGLASS, "pool_stride": 2, **kwargs})


@register_model(task="detection", options=OPTIONS)
def nl_cornernet_small_64(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """Small NL-CornerNet-64: the non-local blocks attend at half the map's resolution."""
    return build_cornernet(**{"num_classes": num_classes, **SMALL_HOURGLASS, "pool": "nl",
                              "attn_kwargs": {"reduce": True}, **kwargs})
