"""Residual blocks: ResNet basic and bottleneck blocks, post- and pre-activation.

* Post-activation (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016), the
  "v1.5" layout torchvision uses: the stride sits on the 3×3 conv of the bottleneck, expansion 4,
  and a projection shortcut (1×1 conv + norm) whenever the shape changes.
* Pre-activation (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016): norm-ReLU
  *before* each conv and nothing after the sum, so the identity path is clean. When the shape
  changes, the shortcut is a plain 1×1 conv applied to the pre-activated input (the paper's
  choice: the projection sees the same normalised signal as the residual branch).

Convs that are followed by a norm have no bias (the norm's shift replaces it), so parameter counts
match torchvision's ``resnet*``.

Symbols: B batch, C_in / C_out channels, H×W spatial size, s stride.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

__all__ = ["BasicBlock", "Bottleneck", "conv1x1", "conv3x3", "NormLayer", "group_norm", "init_weights",
           "KEEPS_OWN_INIT"]

NormLayer = Callable[[int], nn.Module]

# Attribute set on modules that initialise themselves (attention blocks made by ``create_attn``,
# e.g. the non-local block's zero-initialised output): :func:`init_weights` leaves them alone.
KEEPS_OWN_INIT = "keeps_own_init"


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count ≤ ``max_groups`` that divides ``channels``.

    32 groups (Wu & He, ECCV 2018) whenever C is a multiple of 32; small CPU presets (e.g. 48
    channels) still get a valid, as-fine-as-possible grouping.
    """
    groups = max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def init_weights(module: nn.Module) -> None:
    """He init (fan-out, ReLU) for convs with zero biases, unit/zero affine norms — torchvision's
    ResNet init — for every submodule except those marked :data:`KEEPS_OWN_INIT`.

    Visits modules in ``named_modules`` order, so the random draws are those of a plain loop.
    """
    if getattr(module, KEEPS_OWN_INIT, False):
        return
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    for child in module.children():
        init_weights(child)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, *, bias: bool = False) -> nn.Conv2d:
    """3×3 conv with padding 1 (keeps H×W at stride 1)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1, *, bias: bool = False) -> nn.Conv2d:
    """1×1 conv (channel projection, optionally strided)."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)


class _ResidualBlock(nn.Module):
    """Shared shortcut logic of :class:`BasicBlock` and :class:`Bottleneck`."""

    expansion: int = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        preact: bool,
        norm_layer: NormLayer,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.preact = preact

    def _make_shortcut(self, norm_layer: NormLayer) -> nn.Module | None:
        # Called last in the subclasses so parameter order matches torchvision's state dicts.
        if self.stride == 1 and self.in_channels == self.out_channels:
            return None
        if self.preact:
            # He et al. 2016b: the projection consumes the pre-activated input, no norm after it.
            return conv1x1(self.in_channels, self.out_channels, self.stride)
        return nn.Sequential(
            conv1x1(self.in_channels, self.out_channels, self.stride), norm_layer(self.out_channels)
        )

    def _last_norm(self) -> nn.Module | None:  # overridden
        return None

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        """``(conv, norm)`` attributes where the norm directly follows the conv in ``forward`` (the
        post-activation form; none in the pre-activation form), for :mod:`hybridvision.layers.fusion`."""
        if self.preact:
            return ()
        return tuple((f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(self, f"conv{i}"))

    def _last_conv(self) -> nn.Conv2d:  # overridden
        raise NotImplementedError

    def zero_init_last(self) -> None:
        """Make the residual branch start at zero, so the block starts as identity (Goyal et al. 2017).

        Post-activation blocks zero the last norm's scale; pre-activation blocks end in a conv,
        whose weight is zeroed instead.
        """
        norm = self._last_norm()
        if norm is not None and getattr(norm, "weight", None) is not None:
            nn.init.zeros_(norm.weight)
        else:
            nn.init.zeros_(self._last_conv().weight)


class BasicBlock(_ResidualBlock):
    """ResNet basic block: two 3×3 convs (ResNet-18/34).

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out (expansion 1: also the width of both convs).
        stride: stride of the first 3×3 conv.
        preact: pre-activation form (norm-ReLU before each conv, He et al. 2016b).
        norm_layer: norm constructor ``f(channels) -> nn.Module``.

    Shapes: ``[B, C_in, H, W] -> [B, C_out, H/s, W/s]``.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        preact: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(in_channels, out_channels, stride, preact, norm_layer)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.relu = nn.ReLU(inplace=True)
        if preact:
            self.bn1 = norm_layer(in_channels)  # before conv1
            self.bn2 = norm_layer(out_channels)  # before conv2
        else:
            self.bn1 = norm_layer(out_channels)  # after conv1
            self.bn2 = norm_layer(out_channels)  # after conv2
        self.downsample = self._make_shortcut(norm_layer)

    def _last_norm(self) -> nn.Module | None:
        return None if self.preact else self.bn2

    def _last_conv(self) -> nn.Conv2d:
        return self.conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            act = self.relu(self.bn1(x))  # relu(inplace) on a fresh tensor, x stays intact
            shortcut = x if self.downsample is None else self.downsample(act)
            out = self.conv1(act)
            out = self.conv2(self.relu(self.bn2(out)))
            return out.add_(shortcut)  # in place: conv backward does not need its output
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out.add_(shortcut))  # in place: BN backward needs its input, not output


class Bottleneck(_ResidualBlock):
    """ResNet v1.5 bottleneck: 1×1 reduce → 3×3 (with the stride) → 1×1 expand.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out; the inner width is ``C_out // 4`` (expansion 4).
        stride: stride of the 3×3 conv (v1.5; v1 put it on the first 1×1).
        preact: pre-activation form (norm-ReLU before each conv, He et al. 2016b).
        norm_layer: norm constructor ``f(channels) -> nn.Module``.

    Shapes: ``[B, C_in, H, W] -> [B, C_out, H/s, W/s]``.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        preact: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__(in_channels, out_channels, stride, preact, norm_layer)
        mid = out_channels // self.expansion
        if mid < 1:
            raise ValueError(f"Bottleneck out_channels={out_channels} must be >= {self.expansion}")
        self.mid_channels = mid
        self.conv1 = conv1x1(in_channels, mid)
        self.conv2 = conv3x3(mid, mid, stride)
        self.conv3 = conv1x1(mid, out_channels)
        self.relu = nn.ReLU(inplace=True)
        if preact:
            self.bn1 = norm_layer(in_channels)
            self.bn2 = norm_layer(mid)
            self.bn3 = norm_layer(mid)
        else:
            self.bn1 = norm_layer(mid)
            self.bn2 = norm_layer(mid)
            self.bn3 = norm_layer(out_channels)
        self.downsample = self._make_shortcut(norm_layer)

    def _last_norm(self) -> nn.Module | None:
        return None if self.preact else self.bn3

    def _last_conv(self) -> nn.Conv2d:
        return self.conv3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            act = self.relu(self.bn1(x))  # [B, C_in, H, W]
            shortcut = x if self.downsample is None else self.downsample(act)
            out = self.conv1(act)  # [B, mid, H, W]
            out = self.conv2(self.relu(self.bn2(out)))  # [B, mid, H/s, W/s]
            out = self.conv3(self.relu(self.bn3(out)))  # [B, C_out, H/s, W/s]
            return out.add_(shortcut)
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))  # [B, mid, H, W]
        out = self.relu(self.bn2(self.conv2(out)))  # [B, mid, H/s, W/s]
        out = self.bn3(self.conv3(out))  # [B, C_out, H/s, W/s]
        return self.relu(out.add_(shortcut))
