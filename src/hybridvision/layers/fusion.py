"""Conv–BatchNorm folding for inference: each BN that directly follows a conv becomes part of it.

In eval mode a BatchNorm is an affine map per channel, so ``bn(conv(x))`` equals one conv with
weight ``w · γ/√(σ²+ε)`` and bias ``β + (b − μ) · γ/√(σ²+ε)`` (``torch.nn.utils.fusion.fuse_conv_bn_eval``).
Folding saves a pass over every activation of the backbone: on a CPU that pass is memory-bound
and costs about a tenth of ResNet-50's time.

Which conv a BN follows is declared, not guessed: a module lists its ``(conv, norm)`` attribute
pairs in ``conv_bn_pairs()`` (the ResNet stem, the post-activation residual blocks) and its
``downsample`` may be ``Sequential(conv, BatchNorm2d)``; pre-activation blocks (norm before conv)
declare nothing. :func:`fuse_conv_bn` works on a copy; the model's parameters, its state dict and
its training are untouched.
"""

from __future__ import annotations

import copy

import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fuse_conv_bn"]


def _fusable(conv: nn.Module, norm: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
            and norm.track_running_stats and norm.running_mean is not None)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every declared conv→BatchNorm pair folded into the conv
    (the BN replaced by ``nn.Identity``); outputs equal the original's up to float rounding."""
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        pairs = module.conv_bn_pairs() if hasattr(module, "conv_bn_pairs") else ()
        for conv_name, norm_name in pairs:
            conv, norm = getattr(module, conv_name), getattr(module, norm_name)
            if _fusable(conv, norm):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(module, norm_name, nn.Identity())
        down = getattr(module, "downsample", None)
        if pairs and isinstance(down, nn.Sequential) and len(down) == 2 and _fusable(down[0], down[1]):
            module.downsample = nn.Sequential(fuse_conv_bn_eval(down[0], down[1]), nn.Identity())
    return fused
