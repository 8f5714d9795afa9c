"""What every detector family's presets share: a ResNet as a feature extractor, the neck over a
backbone's ``feature_info``, the demo's size ranges, and :func:`preset_options`, which gives a
preset the validated options it forwards through ``**kwargs``::

    @register_model(task="detection", options=preset_options(build_fcos, FCOS, FCOSHead))
    def fcos_r18_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
        \"\"\"FCOS, ResNet-18, FPN P3–P7, 256 channels.\"\"\"
        return build_fcos(**{"num_classes": num_classes, "depth": 18, **kwargs})
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch.nn as nn

from hybridvision.backbones.resnet import RESNET_DEPTHS, ResNet
from hybridvision.errors import UserInputError
from hybridvision.necks.fpn import FPN
from hybridvision.necks.panet import PANet
from hybridvision.options import keyword_parameters

__all__ = ["preset_options", "resnet_features", "build_neck", "DEMO_SIZE_RANGES"]

INF = float("inf")

# The demo's size ranges (P3–P5), for ~128-px images: FCOS's targets and CornerFCOS's "normal" ones.
DEMO_SIZE_RANGES = ((0, 32), (32, 64), (64, INF))

# What a builder fills in itself, so no preset forwards it: the detector's parts and the head's
# shape (the builder's own required positional arguments, e.g. a backbone's name, likewise).
_DETECTOR_PARTS = ("backbone", "neck", "num_classes", "head")
_HEAD_PARTS = ("in_channels", "num_classes", "num_levels")


def preset_options(builder: Callable[..., Any], detector: type, head: type | None = None,
                   ) -> dict[str, inspect.Parameter]:
    """The options a detector preset forwards through ``**kwargs``, as annotated parameters, for
    ``register_model(options=...)``: those of ``builder`` (e.g. ``build_fcos``), then of
    ``detector``'s and ``head``'s ``__init__`` (None: the detector builds its head from its own
    options), the builder's where names repeat; sorted by name. ``create_model`` checks every
    option against them (an unknown name, or a value of the wrong type, is one error naming the
    valid ones) before anything is built.
    """
    required = [n for n, p in inspect.signature(builder).parameters.items()
                if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty]
    options = keyword_parameters(builder, exclude=required)
    for taker, filled in ((detector.__init__, _DETECTOR_PARTS), (head.__init__ if head else None, _HEAD_PARTS)):
        for name, parameter in keyword_parameters(taker, exclude=filled).items():
            options.setdefault(name, parameter)
    return {name: options[name] for name in sorted(options)}


def resnet_features(depth: int, *, out_indices: Sequence[int], owner: str, width: float = 1.0,
                    **resnet_kwargs: Any) -> ResNet:
    """A ResNet-``depth`` that returns the stages ``out_indices`` (2, 3, 4: C3–C5) as a list.

    Args:
        depth: 18, 34, 50 or 101; another is one error naming ``owner`` (e.g. ``"FCOS"``).
        width: the channel multiplier.
        **resnet_kwargs: further :class:`~hybridvision.backbones.resnet.ResNet` options
            (``preact``, ``norm_layer``, ``attn``, ...).
    """
    if depth not in RESNET_DEPTHS:
        raise UserInputError(f"{owner} depth={depth} is not a ResNet depth; use one of {sorted(RESNET_DEPTHS)}")
    block, layers = RESNET_DEPTHS[depth]
    return ResNet(block, layers, width=width, out_indices=out_indices, features_only=True,  # type: ignore[arg-type]
                  **resnet_kwargs)


def build_neck(kind: str, backbone: nn.Module, channels: int, num_levels: int,
               extra_from: str = "p5") -> nn.Module:
    """An FPN (P3–P7) or PANet (N3–N7) over a backbone's ``feature_info``; ``num_levels`` 3 or 5."""
    if num_levels not in (3, 5):
        raise UserInputError(f"num_levels={num_levels} must be 3 (P3–P5) or 5 (P3–P7)")
    chans = [f["channels"] for f in backbone.feature_info]
    strides = [f["stride"] for f in backbone.feature_info]
    if kind == "fpn":
        return FPN(chans, strides, channels, num_extra=num_levels - 3, extra_from=extra_from)
    if kind == "panet":  # PANet always builds N6 from N5
        return PANet(chans, strides, channels, num_extra=num_levels - 3)
    raise UserInputError(f"neck={kind!r} is unknown; use 'fpn' or 'panet'")
