"""CenterNet's upsampling neck: transposed convolutions from the backbone's last stage to stride 4
(Xiao et al., "Simple Baselines for Human Pose Estimation", ECCV 2018, used by Zhou et al.,
"Objects as Points", 2019, Sec. 4 for ResNets).

Each stage doubles the resolution: an optional 3×3 deformable conv (Dai et al. 2017, through
:func:`torchvision.ops.deform_conv2d`; off by default so the model runs on CPU and exports to
ONNX) → BN → ReLU, then a 4×4 stride-2 transposed conv, initialised as bilinear upsampling →
BN → ReLU.

``skip=True`` adds, after each stage, the backbone's feature of the same stride through a 1×1
conv + BN (the skip connections of U-Net, and in spirit of CenterNet's DLA-34 "IDA-up"; the
paper's ResNet variant has none). Upsampling from C5 alone must recover positions from a 4×4 map
on a 128-pixel image; the skips give the stride-4 map the fine features back.

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
        in_channels: channels of each backbone output (``feature_info``), finest first; the last
            is upsampled, the others feed the skips.
        in_strides: their strides (the last: 32 for a ResNet's C5).
        channels: output channels of each stage (CenterNet: 256, 128, 64 for ResNets).
        dcn: a deformable 3×3 conv before each transposed conv (CenterNet's ``resnet_dcn``).
        skip: add the backbone output of each stage's stride (1×1 conv + BN) after the stage;
            every stage's stride must then be among ``in_strides``.

    Shapes: ``forward([..., [B, C_in, H/s, W/s]]) -> [[B, C_last, H·2^n/s, W·2^n/s]]`` — one level,
    at :attr:`strides` ``[s / 2^n]``.
    """

    def __init__(self, in_channels: Sequence[int], in_strides: Sequence[int],
                 channels: Sequence[int] = (256, 128, 64), *, dcn: bool = False, skip: bool = False) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        in_channels, in_strides = [int(c) for c in in_channels], [int(s) for s in in_strides]
        if not channels or any(c < 1 for c in channels):
            raise UserInputError(f"upsampling channels {channels} must be one or more positive numbers")
        if in_strides[-1] % (2 ** len(channels)):
            raise UserInputError(f"{len(channels)} upsampling stages do not divide stride {in_strides[-1]}")
        last = in_channels[-1]
        stages, laterals, self.skip_from = [], [], []
        stride = in_strides[-1]
        for c in channels:
            stages.append(_UpStage(last, c, dcn))
            last, stride = c, stride // 2
            if skip:
                if stride not in in_strides:
                    raise UserInputError(f"skip=True needs a backbone output at stride {stride}; "
                                         f"the backbone gives strides {in_strides}")
                i = in_strides.index(stride)
                laterals.append(nn.Sequential(nn.Conv2d(in_channels[i], c, 1, bias=False), nn.BatchNorm2d(c)))
                self.skip_from.append(i)
        self.stages = nn.ModuleList(stages)
        self.laterals = nn.ModuleList(laterals)
        self.out_channels = last
        self.strides = [stride]

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        x = features[-1]  # [B, C_in, H/s, W/s]
        for k, stage in enumerate(self.stages):
            x = stage(x)  # [B, C_k, 2·h, 2·w]
            if self.laterals:
                lateral = self.laterals[k](features[self.skip_from[k]])
                # An input that is no multiple of 32: the coarse path rounded up, so crop it.
                x = x[..., : lateral.shape[-2], : lateral.shape[-1]] + lateral
        return [x]  # [B, C_last, H/4, W/4] for a ResNet
