"""Feature Pyramid Network, P3–P5 plus optional P6/P7 (Lin et al., "Feature Pyramid Networks for
Object Detection", CVPR 2017; P6/P7 as in RetinaNet, Lin et al. ICCV 2017, and FCOS).

A thin wrapper around :class:`torchvision.ops.FeaturePyramidNetwork` and
:class:`torchvision.ops.feature_pyramid_network.LastLevelP6P7`: it takes and returns plain
lists (the backbone contract) and records the strides and channels of its outputs.

Symbols: B batch, C_i backbone channels of input level i, C neck channels, s_i strides.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from hybridvision.errors import UserInputError

__all__ = ["FPN", "FinestLevels"]


class FPN(nn.Module):
    """FPN over backbone levels (e.g. C3–C5) with ``num_extra`` stride-2 levels on top (P6, P7).

    Args:
        in_channels: channels of each backbone input, finest first (e.g. ``[512, 1024, 2048]``).
        in_strides: strides of those inputs (e.g. ``[8, 16, 32]``); consecutive ones must double.
        out_channels: channels C of every output level.
        num_extra: 0 (P3–P5 only) or 2 (P6 and P7, each a stride-2 3×3 conv, ReLU before P7).
        extra_from: ``"p5"`` (FCOS's improved variant, torchvision's default) or ``"c5"``
            (RetinaNet / the original FCOS) as the input of P6.
        norm_layer: optional norm after the lateral and output convs (None: plain convs, as in
            the paper).

    Shapes: ``forward([[B, C_i, H/s_i, W/s_i]]) -> [[B, C, H/s_j, W/s_j]]`` for the
    ``len(in_channels) + num_extra`` output strides in :attr:`strides`.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        out_channels: int = 256,
        *,
        num_extra: int = 2,
        extra_from: str = "p5",
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        in_channels, in_strides = list(in_channels), list(in_strides)
        if len(in_channels) != len(in_strides) or not in_channels:
            raise UserInputError(
                f"FPN needs one stride per input level, got channels={in_channels} strides={in_strides}"
            )
        if any(b != 2 * a for a, b in zip(in_strides, in_strides[1:])):
            raise UserInputError(f"FPN input strides {in_strides} must double from level to level")
        if num_extra not in (0, 2):
            raise UserInputError(f"FPN num_extra={num_extra} must be 0 (P3–P5) or 2 (P6, P7)")
        if extra_from not in ("p5", "c5"):
            raise UserInputError(f"FPN extra_from={extra_from!r} must be 'p5' or 'c5'")
        extra: LastLevelP6P7 | None = None
        if num_extra:
            extra = LastLevelP6P7(out_channels if extra_from == "p5" else in_channels[-1], out_channels)
            # torchvision infers the source from the channel counts; make the choice explicit so
            # "c5" is honoured even when C5 happens to have ``out_channels`` channels.
            extra.use_P5 = extra_from == "p5"
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra, norm_layer=norm_layer)
        self._names = [f"c{i}" for i in range(len(in_channels))]
        self.out_channels = out_channels
        self.strides: list[int] = in_strides + [in_strides[-1] * 2 ** (k + 1) for k in range(num_extra)]
        self.feature_info = [dict(channels=out_channels, stride=s) for s in self.strides]

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self._names):
            raise ValueError(f"FPN expects {len(self._names)} input levels, got {len(features)}")
        out = self.fpn(OrderedDict(zip(self._names, features)))
        return list(out.values())


class FinestLevels(nn.Module):
    """The first ``n`` (finest) outputs of a neck, e.g. P3 alone (CornerFCOS "single")."""

    def __init__(self, neck: nn.Module, n: int = 1) -> None:
        super().__init__()
        self.neck = neck
        self.n = n
        self.out_channels = neck.out_channels
        self.strides = list(neck.strides)[:n]

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return list(self.neck(features))[: self.n]
