"""CenterNet's upsampling neck: transposed convolutions from the backbone's last stage to stride 4
(Xiao et al., "Simple Baselines for Human Pose Estimation", ECCV 2018, used by Zhou et al.,
"Objects as Points", 2019, Sec. 4 for ResNets).

Each stage doubles the resolution: an optional 3×3 deformable conv (Dai et al. 2017, through
:func:`torchvision.ops.deform_conv2d`; off by default so the model runs on CPU and exports to
ONNX) → BN → ReLU, then a 4×4 stride-2 transposed conv, initialised as bilinear upsampling →
BN → ReLU.

Symbols: B batch, C_in the backbone's last channels, C_i the channels of stage i, s the
backbone's stride (32 for a ResNet).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torchvision.ops import DeformConv2d

from hybridvision.errors import UserInputError

__all__ = ["DeconvUpsample"]


def _bilinear_(weight: torch.Tensor) -> None:
    """Fill a ``[C_in, C_out, k, k]`` transposed-conv weight with bilinear upsampling, channel to
    the same channel (other channel pairs 0), so the neck starts by interpolating."""
    k = weight.shape[-1]
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float32)
    filt = 1 - (og - centre).abs() / factor  # [k]
    with torch.no_grad():
        weight.zero_()
        for c in range(min(weight.shape[0], weight.shape[1])):
            weight[c, c] = filt[:, None] * filt[None, :]


class _DeformConv(nn.Module):
    """A 3×3 deformable conv whose offsets come from a plain 3×3 conv initialised at zero (so it
    starts as an ordinary conv)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(in_channels, 2 * 9, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.offset(x))


class _UpStage(nn.Module):
    """[optional 3×3 (deformable) conv–BN–ReLU] → 4×4 stride-2 transposed conv–BN–ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dcn: bool) -> None:
        super().__init__()
        self.pre: nn.Module = nn.Identity()
        if dcn:
            self.pre = nn.Sequential(
                _DeformConv(in_channels, out_channels), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)
            )
            in_channels = out_channels
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
        _bilinear_(self.up.weight)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.up(self.pre(x))))


class DeconvUpsample(nn.Module):
    """Upsample the backbone's last feature map by 2 per stage: stride s → s / 2^len(channels).

    Args:
        in_channels: channels of the backbone's last output (one entry, or the list of
            ``feature_info`` channels: only the last is used).
        in_stride: the stride of that output (32 for a ResNet's C5).
        channels: output channels of each stage (CenterNet: 256, 128, 64 for ResNets).
        dcn: a deformable 3×3 conv before each transposed conv (CenterNet's ``resnet_dcn``).

    Shapes: ``forward([..., [B, C_in, H/s, W/s]]) -> [[B, C_last, H·2^n/s, W·2^n/s]]`` — one level,
    at :attr:`strides` ``[s / 2^n]``.
    """

    def __init__(self, in_channels: int | Sequence[int], in_stride: int, channels: Sequence[int] = (256, 128, 64),
                 *, dcn: bool = False) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or any(c < 1 for c in channels):
            raise UserInputError(f"upsampling channels {channels} must be one or more positive numbers")
        if in_stride % (2 ** len(channels)):
            raise UserInputError(f"{len(channels)} upsampling stages do not divide stride {in_stride}")
        last = in_channels if isinstance(in_channels, int) else list(in_channels)[-1]
        stages = []
        for c in channels:
            stages.append(_UpStage(last, c, dcn))
            last = c
        self.stages = nn.Sequential(*stages)
        self.out_channels = last
        self.strides = [in_stride // 2 ** len(channels)]

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.stages(features[-1])]  # [B, C_last, H/4, W/4] for a ResNet
