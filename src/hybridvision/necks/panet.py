"""PANet bottom-up path augmentation after an FPN (Liu et al., "Path Aggregation Network for
Instance Segmentation", CVPR 2018), with N6/N7 for FCOS-style five-level heads.

Bottom-up path (Sec. 3.1 of the paper; every conv is followed by a ReLU):

    N_3     = P_3
    N_{i+1} = ReLU(conv3x3(ReLU(conv3x3_stride2(N_i)) + P_{i+1}))

Extra levels, as NL-FCOS-PANet builds them (thesis A): N6 = conv3x3_stride2(N5),
N7 = conv3x3_stride2(ReLU(N6)) — the RetinaNet/FCOS P6/P7 recipe, fed by the last bottom-up level.

Symbols: B batch, C channels, s_i strides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridvision.errors import UserInputError
from hybridvision.necks.fpn import FPN

__all__ = ["PANet"]


def _init_conv(conv: nn.Conv2d) -> nn.Conv2d:
    # Same init as torchvision's FPN convs so both necks start alike.
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)
    return conv


class PANet(nn.Module):
    """FPN (P3–P5) → bottom-up path (N3–N5) → N6, N7.

    Args:
        in_channels: backbone channels per input level, finest first.
        in_strides: backbone strides per input level (must double).
        out_channels: channels C of every level.
        num_extra: 0 or 2 extra stride-2 levels built from the last bottom-up level.
        activation: ReLU after the bottom-up convs (the paper's choice); False gives plain convs.
        norm_layer: optional norm inside the FPN (passed through).

    Shapes: ``forward([[B, C_i, H/s_i, W/s_i]]) -> [[B, C, H/s_j, W/s_j]]`` for :attr:`strides`.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        out_channels: int = 256,
        *,
        num_extra: int = 2,
        activation: bool = True,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if num_extra not in (0, 2):
            raise UserInputError(f"PANet num_extra={num_extra} must be 0 (N3–N5) or 2 (N6, N7)")
        self.fpn = FPN(in_channels, in_strides, out_channels, num_extra=0, norm_layer=norm_layer)
        n = len(in_channels)
        c = out_channels
        # One (downsample, fuse) pair per bottom-up step N_i -> N_{i+1}.
        self.down_convs = nn.ModuleList(_init_conv(nn.Conv2d(c, c, 3, 2, 1)) for _ in range(n - 1))
        self.fuse_convs = nn.ModuleList(_init_conv(nn.Conv2d(c, c, 3, 1, 1)) for _ in range(n - 1))
        self.extra_convs = nn.ModuleList(_init_conv(nn.Conv2d(c, c, 3, 2, 1)) for _ in range(num_extra))
        self.activation = activation
        self.out_channels = out_channels
        base = list(in_strides)
        self.strides: list[int] = base + [base[-1] * 2 ** (k + 1) for k in range(num_extra)]
        self.feature_info = [dict(channels=out_channels, stride=s) for s in self.strides]

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) if self.activation else x

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        p = self.fpn(features)  # [P3, P4, P5], each [B, C, H/s, W/s]
        outs = [p[0]]  # N3 = P3
        for down, fuse, p_next in zip(self.down_convs, self.fuse_convs, p[1:]):
            d = self._act(down(outs[-1]))  # [B, C, H/2s, W/2s]
            # Odd input sizes can make the strided conv one pixel larger; crop to P_{i+1}.
            d = d[..., : p_next.shape[-2], : p_next.shape[-1]]
            outs.append(self._act(fuse(d + p_next)))
        x = outs[-1]
        for k, conv in enumerate(self.extra_convs):
            # ReLU between N6 and N7 as in LastLevelP6P7, not on N6 itself.
            x = conv(F.relu(x) if k > 0 else x)
            outs.append(x)
        return outs
