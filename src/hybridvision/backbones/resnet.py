"""ResNet-18/34/50/101 backbones, trained from scratch, with interleaved attention blocks.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (v1.5 bottleneck: stride on
the 3×3), and the pre-activation form of He et al., "Identity Mappings in Deep Residual Networks",
ECCV 2016. The module layout and parameter names follow torchvision's ``resnet*`` (``conv1``,
``bn1``, ``layer1..4``), so parameter counts match it exactly at ``width=1``. (Thesis B's ResNet26 is the registered
``resnet26`` of ``backbones/hybrid.py``.)

The backbone contract (timm's ``features_only``): with ``features_only=True`` the network has no
classifier and ``forward(x)`` returns ``forward_features(x)``, a ``list[Tensor]`` with one map per
entry of ``out_indices``, described by ``feature_info`` (``channels``, ``stride`` of each).

Feature indices follow timm's ``features_only`` convention:

====== ========= ====== ==================
index  module    stride name in papers
====== ========= ====== ==================
0      stem      2      (after conv1-bn-relu)
1      layer1    4      C2
2      layer2    8      C3
3      layer3    16     C4
4      layer4    32     C5
====== ========= ====== ==================

Attention (e.g. the non-local block of Wang et al., CVPR 2018) is inserted *after* given blocks,
interleaved like timm's ``byobnet``: ``attn_at=[(3, 1), (3, 3)]`` puts one block after blocks 1
and 3 of ``layer3``. Inside a stage, the attention modules are named ``attn{i}`` (after block
``i``) so block parameter names stay torchvision's.

Symbols: B batch, C channels, H×W input size.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any
from collections.abc import Sequence

import torch
import torch.nn as nn

from hybridvision.backbones.base import FeatureInfo, coarsest_stride, resolve_out_indices
from hybridvision.errors import UserInputError
from hybridvision.layers.blocks import BasicBlock, Bottleneck, NormLayer, init_weights
from hybridvision.layers.registry import create_attn

__all__ = ["ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "RESNET_DEPTHS"]

# depth -> (block type, blocks per stage)
RESNET_DEPTHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}

_STAGE_BASE_WIDTHS = (64, 128, 256, 512)  # inner widths; output = inner × block expansion


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class ResNet(nn.Module):
    """ResNet classifier, or backbone with ``features_only=True``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        width: multiplier on every channel count (stem and stages); ``0.25`` gives a tiny CPU
            model (ResNet-18: 16/32/64/128 channels).
        in_chans: input channels.
        out_indices: which features ``forward_features`` returns (0 = stem, 1..4 = ``layer1..4``).
        preact: pre-activation blocks; the stem then has no norm-ReLU and a norm-ReLU follows the
            last stage (as in He et al. 2016b / thesis B).
        norm_layer: norm constructor ``f(channels)`` used everywhere.
        attn: name of an attention block in ``hybridvision.layers`` (``create_attn``), or None.
        attn_at: ``(stage, block)`` positions, stage in 1..4, block a (possibly negative) index
            into that stage; the attention block is inserted right after it.
        attn_kwargs: keyword arguments for ``create_attn``.
        num_classes: classifier outputs (global average pooling + linear).
        features_only: no classifier; ``forward`` returns the feature list.
        zero_init_last: start every residual branch at zero (Goyal et al. 2017).

    Outputs: ``forward_features(x)`` returns ``list[Tensor]``, one
    ``[B, feature_info[i]["channels"], H / stride, W / stride]`` per entry of ``out_indices``;
    ``forward(x)`` returns that list with ``features_only``, else logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        width: float = 1.0,
        in_chans: int = 3,
        out_indices: Sequence[int] = (2, 3, 4),
        preact: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
        attn: str | None = None,
        attn_at: Sequence[tuple[int, int]] = (),
        attn_kwargs: dict[str, Any] | None = None,
        num_classes: int = 1000,
        features_only: bool = False,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 16:
            raise UserInputError(f"ResNet width={width!r} must be a number in (0, 16], a channel "
                                 "multiplier (e.g. 0.25)")
        if len(layers) != 4:
            raise UserInputError(f"ResNet needs 4 stage depths, got layers={tuple(layers)}")
        out_indices = resolve_out_indices(out_indices, 5, "ResNet", "0 = stem, 1..4 = layer1..4")
        if attn is None and attn_at:
            raise UserInputError(f"ResNet attn_at={tuple(attn_at)} given without attn=<block name>")
        self.out_indices = out_indices
        self.preact = preact
        self.num_classes = num_classes
        self.features_only = features_only

        stem_width = _scaled(64, width)
        self.conv1 = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
        # Pre-activation nets normalise at the start of each block instead (thesis B's layout).
        self.bn1: nn.Module = nn.Identity() if preact else norm_layer(stem_width)
        self.relu: nn.Module = nn.Identity() if preact else nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        attn_by_stage = self._parse_attn_at(attn_at, layers)
        attn_kwargs = dict(attn_kwargs or {})
        info = [dict(channels=stem_width, stride=2)]
        in_ch, stride = stem_width, 4
        for s, (n_blocks, base) in enumerate(zip(layers, _STAGE_BASE_WIDTHS), start=1):
            out_ch = _scaled(base, width) * block.expansion
            first_stride = 1 if s == 1 else 2  # layer1 follows the max-pool: no extra stride
            stride *= first_stride
            mods: OrderedDict[str, nn.Module] = OrderedDict()
            for b in range(n_blocks):
                mods[str(b)] = block(
                    in_ch if b == 0 else out_ch,
                    out_ch,
                    first_stride if b == 0 else 1,
                    preact=preact,
                    norm_layer=norm_layer,
                )
                if b in attn_by_stage.get(s, ()):
                    mods[f"attn{b}"] = create_attn(attn, out_ch, **attn_kwargs)  # type: ignore[arg-type]
            self.add_module(f"layer{s}", nn.Sequential(mods))
            info.append(dict(channels=out_ch, stride=stride))
            in_ch = out_ch
        self.num_features = in_ch
        # Pre-activation: the last block's output is un-normalised, so normalise before use.
        self.final_act: nn.Module = (
            nn.Sequential(norm_layer(in_ch), nn.ReLU(inplace=True)) if preact else nn.Identity()
        )
        self.feature_info: list[FeatureInfo] = [info[i] for i in out_indices]  # type: ignore[misc]
        self.size_divisible = coarsest_stride(self.feature_info)

        if not features_only:
            if num_classes < 1:
                raise UserInputError(f"ResNet num_classes={num_classes} must be >= 1 (or pass features_only=True)")
            self.global_pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(in_ch, num_classes)
        # One init for every network of the package; attention blocks keep their own.
        init_weights(self)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last()

    @staticmethod
    def _parse_attn_at(
        attn_at: Sequence[tuple[int, int]], layers: Sequence[int]
    ) -> dict[int, set[int]]:
        out: dict[int, set[int]] = {}
        for pos in attn_at:
            try:
                stage, idx = (int(v) for v in pos)
            except (TypeError, ValueError):
                raise UserInputError(
                    f"ResNet attn_at entry {pos!r} must be a (stage, block) pair, e.g. (3, 1)"
                ) from None
            if not 1 <= stage <= 4:
                raise UserInputError(f"ResNet attn_at stage {stage} must be in 1..4 (layer1..4)")
            n = layers[stage - 1]
            if not -n <= idx < n:
                raise UserInputError(
                    f"ResNet attn_at block {idx} is out of range for stage {stage} ({n} blocks)"
                )
            out.setdefault(stage, set()).add(idx % n)
        return out

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))  # [B, C0, H/2, W/2]

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        """The stem's conv→norm (:mod:`hybridvision.layers.fusion`); none in the pre-activation form."""
        return () if self.preact else (("conv1", "bn1"),)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at ``out_indices``: ``list[[B, C_i, H / s_i, W / s_i]]``."""
        feats: list[torch.Tensor] = []
        x = self.stem(x)
        if 0 in self.out_indices:
            feats.append(x)
        last = max(self.out_indices)
        x = self.maxpool(x)
        for s in range(1, last + 1):
            x = getattr(self, f"layer{s}")(x)
            if s == 4:
                x = self.final_act(x)
            if s in self.out_indices:
                feats.append(x)
        return feats

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled logits ``[B, num_classes]`` from the last stage's map ``[B, C, h, w]``."""
        return self.fc(torch.flatten(self.global_pool(x), 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        if self.features_only:
            return self.forward_features(x)
        x = self.maxpool(self.stem(x))
        x = self.final_act(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        return self.forward_head(x)  # [B, num_classes]


def _resnet(depth: int, **kwargs: Any) -> ResNet:
    block, layers = RESNET_DEPTHS[depth]
    return ResNet(block, layers, **kwargs)  # type: ignore[arg-type]


def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (basic blocks [2, 2, 2, 2]); keyword arguments go to :class:`ResNet`."""
    return _resnet(18, **kwargs)


def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34 (basic blocks [3, 4, 6, 3]); keyword arguments go to :class:`ResNet`."""
    return _resnet(34, **kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (bottlenecks [3, 4, 6, 3]); keyword arguments go to :class:`ResNet`."""
    return _resnet(50, **kwargs)


def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101 (bottlenecks [3, 4, 23, 3]); keyword arguments go to :class:`ResNet`."""
    return _resnet(101, **kwargs)
