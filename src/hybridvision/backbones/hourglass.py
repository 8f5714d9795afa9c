"""Stacked hourglass network (Newell et al., "Stacked Hourglass Networks for Human Pose
Estimation", ECCV 2016), in the form CornerNet uses (Law & Deng, ECCV 2018, Sec. 4.1):
Hourglass-104.

* Stem: 7×7 stride-2 conv (128 ch)-BN-ReLU, then a stride-2 residual block (256 ch): stride 4.
* Each hourglass of depth n: ``up`` = residual blocks at this resolution; ``low`` = a stride-2
  residual block (no max-pool, CornerNet's change) and more blocks at the next width, the
  hourglass of depth n−1 (residual blocks at the bottom), blocks back to this width, nearest ×2
  upsampling; output ``up + low``. Hourglass-104: depth 5, widths 256, 256, 384, 384, 384, 512,
  blocks 2, 2, 2, 2, 2, 4.
* After each hourglass a 3×3 conv-BN-ReLU gives that stack's output (``cnv_channels``, 256).
  Between stacks (intermediate supervision): the next stack's input is
  ReLU(BN(1×1 conv(stack input)) + BN(1×1 conv(stack output))) through one residual block.

The backbone contract: ``features_only`` → ``forward`` returns one ``[B, cnv_channels, H/4, W/4]``
per stack (``out_indices`` picks which, default all: the detector supervises every stack in
training and decodes the last), and ``feature_info`` describes them. Inputs must be a multiple
of 2^(depth+2) (128 for Hourglass-104), which the detector core pads to.

Symbols: B batch, C channels, H×W input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridvision.backbones.base import FeatureInfo, resolve_out_indices
from hybridvision.errors import UserInputError
from hybridvision.layers.blocks import BasicBlock

__all__ = ["StackedHourglass", "HOURGLASS_104"]

# (depth, widths, blocks per level) of Hourglass-104 (CornerNet's config).
HOURGLASS_104 = dict(depth=5, widths=(256, 256, 384, 384, 384, 512), blocks=(2, 2, 2, 2, 2, 4))


def _blocks(in_channels: int, out_channels: int, n: int, stride: int = 1) -> nn.Sequential:
    """``n`` residual blocks; the first maps ``in_channels`` → ``out_channels`` at ``stride``."""
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(n - 1)]
    return nn.Sequential(*layers)


class Hourglass(nn.Module):
    """One hourglass of ``depth`` levels: ``[B, widths[0], H, W] -> [B, widths[0], H, W]``."""

    def __init__(self, depth: int, widths: Sequence[int], blocks: Sequence[int]) -> None:
        super().__init__()
        here, below = widths[0], widths[1]
        self.up = _blocks(here, here, blocks[0])
        self.down = _blocks(here, below, blocks[0], stride=2)
        self.inner: nn.Module = (Hourglass(depth - 1, widths[1:], blocks[1:]) if depth > 1
                                 else _blocks(below, below, blocks[1]))
        self.back = nn.Sequential(*[BasicBlock(below, below) for _ in range(blocks[0] - 1)],
                                  BasicBlock(below, here))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.back(self.inner(self.down(x)))  # [B, C, H/2, W/2]
        return self.up(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


class StackedHourglass(nn.Module):
    """Stacked hourglass backbone (see the module docstring).

    Args:
        stacks: number of hourglasses (2 in Hourglass-104).
        depth, widths, blocks: each hourglass's levels, widths per level (``depth + 1``
            entries) and residual blocks per level.
        stem_channels: channels of the 7×7 stem conv (128); the stem's residual block gives
            ``widths[0]``.
        cnv_channels: channels of each stack's output (256).
        out_indices: which stacks' outputs ``forward`` returns (default: all).
        features_only: accepted for the backbone contract; the network has no classifier.
    """

    def __init__(self, stacks: int = 2, depth: int = 5, widths: Sequence[int] = HOURGLASS_104["widths"],
                 blocks: Sequence[int] = HOURGLASS_104["blocks"], *, stem_channels: int = 128,
                 cnv_channels: int = 256, out_indices: Sequence[int] | None = None,
                 features_only: bool = True) -> None:
        super().__init__()
        widths, blocks = [int(w) for w in widths], [int(b) for b in blocks]
        if stacks < 1 or depth < 1:
            raise UserInputError(f"hourglass stacks={stacks} and depth={depth} must be at least 1")
        if len(widths) != depth + 1 or len(blocks) != depth + 1:
            raise UserInputError(f"hourglass depth={depth} needs {depth + 1} widths and blocks, got "
                                 f"{len(widths)} and {len(blocks)}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True), BasicBlock(stem_channels, widths[0], stride=2),
        )
        self.hourglasses = nn.ModuleList(Hourglass(depth, widths, blocks) for _ in range(stacks))
        self.cnvs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[0], cnv_channels, 3, padding=1, bias=False),
                          nn.BatchNorm2d(cnv_channels), nn.ReLU(inplace=True))
            for _ in range(stacks))
        self.inters = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[0], widths[0], 1, bias=False), nn.BatchNorm2d(widths[0]))
            for _ in range(stacks - 1))
        self.cnv_inters = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cnv_channels, widths[0], 1, bias=False), nn.BatchNorm2d(widths[0]))
            for _ in range(stacks - 1))
        self.inter_blocks = nn.ModuleList(BasicBlock(widths[0], widths[0]) for _ in range(stacks - 1))
        self.out_indices = resolve_out_indices(out_indices, stacks, "StackedHourglass", f"{stacks} stacks")
        self.feature_info: list[FeatureInfo] = [{"channels": cnv_channels, "stride": 4} for _ in self.out_indices]
        self.size_divisible = 2 ** (depth + 2)  # stem /4, then one halving per level

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)  # [B, widths[0], H/4, W/4]
        outs = []
        for k, (hourglass, cnv) in enumerate(zip(self.hourglasses, self.cnvs)):
            y = cnv(hourglass(x))  # [B, cnv_channels, H/4, W/4]
            outs.append(y)
            if k < len(self.hourglasses) - 1:
                x = self.inter_blocks[k](F.relu(self.inters[k](x) + self.cnv_inters[k](y)))
        return [outs[i] for i in self.out_indices]
