"""FCOS presets (Tian et al. 2019): FCOS and NL-FCOS on a ResNet, and FCOS on a registered
classification backbone.

``fcos_hib_patch_2_2_nl`` puts thesis B's best sketch backbone (HIB patch 2-2 with non-local
blocks) under FCOS, joining the two theses: SAN and non-local attention inside the detector's
backbone rather than in its head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch.nn as nn

import hybridvision.backbones.hybrid  # noqa: F401  registers the classification backbones
from hybridvision.detectors.fcos import FCOS, FCOSHead
from hybridvision.detectors.presets.common import DEMO_SIZE_RANGES, build_neck, preset_options, resnet_features
from hybridvision.options import check_model_options
from hybridvision.registry import build_model, register_model

__all__ = ["build_fcos", "fcos_on_backbone", "SMALL_FCOS", "NL_HEAD_ATTN"]


def build_fcos(
    *,
    num_classes: int,
    depth: int = 50,
    width: float = 1.0,
    neck: str = "fpn",
    neck_channels: int = 256,
    num_levels: int = 5,
    extra_from: str = "p5",
    backbone_preact: bool = False,
    backbone_norm: Callable[[int], nn.Module] | None = None,
    backbone_attn: str | None = None,
    backbone_attn_at: Sequence[tuple[int, int]] = (),
    backbone_attn_kwargs: dict[str, Any] | None = None,
    **fcos_kwargs: Any,
) -> FCOS:
    """Build an FCOS from a ResNet-``depth`` (C3–C5), an FPN or PANet, and FCOS options.

    Args:
        num_classes: K.
        depth: 18, 34, 50 or 101.
        width: ResNet channel multiplier.
        neck: ``"fpn"`` or ``"panet"``.
        neck_channels: channels of every pyramid level.
        num_levels: 5 (P3–P7) or 3 (P3–P5).
        extra_from: FPN's P6 source, ``"p5"`` or ``"c5"`` (PANet always builds N6 from N5).
        backbone_preact, backbone_norm: ResNet block form and norm layer (BatchNorm2d).
        backbone_attn, backbone_attn_at, backbone_attn_kwargs: attention inside the ResNet
            (see :class:`~hybridvision.backbones.resnet.ResNet`).
        **fcos_kwargs: :class:`FCOS` and :class:`~hybridvision.detectors.fcos.FCOSHead` options.
    """
    backbone = resnet_features(depth, out_indices=(2, 3, 4), owner="FCOS", width=width, preact=backbone_preact,
                               norm_layer=backbone_norm or nn.BatchNorm2d, attn=backbone_attn,
                               attn_at=backbone_attn_at, attn_kwargs=backbone_attn_kwargs)
    neck_mod = build_neck(neck, backbone, neck_channels, num_levels, extra_from)
    return FCOS(backbone, neck_mod, num_classes, **fcos_kwargs)


def fcos_on_backbone(backbone_name: str, *, num_classes: int, backbone_kwargs: dict[str, Any] | None = None,
                     neck: str = "fpn", neck_channels: int = 256, num_levels: int = 5,
                     **fcos_kwargs: Any) -> FCOS:
    """FCOS on the last three stages (strides 8/16/32) of a registered classification model;
    ``backbone_kwargs`` are checked against that model's options."""
    checked = check_model_options(backbone_name, backbone_kwargs or {})
    backbone = build_model(backbone_name, out_indices=(-3, -2, -1), features_only=True, **checked)
    neck_mod = build_neck(neck, backbone, neck_channels, num_levels)
    return FCOS(backbone, neck_mod, num_classes, **fcos_kwargs)


OPTIONS = preset_options(build_fcos, FCOS, FCOSHead)
ON_BACKBONE_OPTIONS = preset_options(fcos_on_backbone, FCOS, FCOSHead)


@register_model(task="detection", options=OPTIONS)
def fcos_r18_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """FCOS, ResNet-18, FPN P3–P7, 256 channels. ``kwargs`` go to :func:`build_fcos`."""
    return build_fcos(**{"num_classes": num_classes, "depth": 18, **kwargs})


@register_model(task="detection", options=OPTIONS)
def fcos_r50_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """FCOS, ResNet-50, FPN P3–P7 (Tian et al. 2019). ``kwargs`` go to :func:`build_fcos`."""
    return build_fcos(**{"num_classes": num_classes, "depth": 50, **kwargs})


@register_model(task="detection", options=OPTIONS)
def fcos_r101_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """FCOS, ResNet-101, FPN P3–P7. ``kwargs`` go to :func:`build_fcos`."""
    return build_fcos(**{"num_classes": num_classes, "depth": 101, **kwargs})


# The demo preset: trains on the built-in digits at ~128×128 in minutes on 2 CPU cores.
@register_model(task="detection", options=OPTIONS)
def fcos_demo(
    *,
    num_classes: int = 10,
    depth: int = 18,
    width: float = 0.25,
    neck: str = "fpn",
    neck_channels: int = 64,
    num_levels: int = 3,
    num_convs: int = 2,
    size_ranges: Sequence[tuple[float, float]] | None = DEMO_SIZE_RANGES,
    center_sampling_radius: float = 1.5,
    **kwargs: Any,
) -> FCOS:
    """Tiny CPU FCOS: ResNet-18 at width 0.25 (16/32/64/128 ch), FPN 64 ch, 2-conv towers, P3–P5.

    Size ranges are scaled for ~128 px images; with ``num_levels=5`` and no explicit
    ``size_ranges`` the paper's ranges are used. Every knob is a keyword argument.
    """
    if num_levels != 3 and size_ranges is DEMO_SIZE_RANGES:
        size_ranges = None
    return build_fcos(**{
        "num_classes": num_classes, "depth": depth, "width": width, "neck": neck,
        "neck_channels": neck_channels, "num_levels": num_levels, "num_convs": num_convs,
        "size_ranges": size_ranges, "center_sampling_radius": center_sampling_radius, **kwargs,
    })


# ---------------------------------------------------------------------------------------------
# NL-FCOS (thesis A, Sec. 3.3.3): a non-local block at the start of the cls and/or reg tower,
# shared across levels; NL-FCOS-PANet adds the bottom-up path. The block defaults to the
# thesis's own form (``nonlocal_thesis_a``); pass ``head_attn="nonlocal"`` for Wang et al.'s.
# ---------------------------------------------------------------------------------------------

NL_HEAD_ATTN = "nonlocal_thesis_a"


def _nl(branch: str, overrides: dict[str, Any], **defaults: Any) -> FCOS:
    return build_fcos(**{"head_attn": NL_HEAD_ATTN, "head_attn_branch": branch, **defaults, **overrides})


@register_model(task="detection", options=OPTIONS)
def nl_fcos_r50_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS: ResNet-50 FPN, a non-local block at the start of both towers."""
    return _nl("both", kwargs, num_classes=num_classes, depth=50)


@register_model(task="detection", options=OPTIONS)
def nl_fcos_r50_fpn_cls(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS-cls: the non-local block only at the start of the classification tower."""
    return _nl("cls", kwargs, num_classes=num_classes, depth=50)


@register_model(task="detection", options=OPTIONS)
def nl_fcos_r50_fpn_reg(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS-reg: the non-local block only at the start of the regression tower."""
    return _nl("reg", kwargs, num_classes=num_classes, depth=50)


@register_model(task="detection", options=OPTIONS)
def nl_fcos_r101_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS-101: ResNet-101 FPN, non-local blocks on both towers."""
    return _nl("both", kwargs, num_classes=num_classes, depth=101)


@register_model(task="detection", options=OPTIONS)
def nl_fcos_r50_panet(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS-PANet: ResNet-50, FPN + PANet bottom-up path (N3–N7), NL on both towers."""
    return _nl("both", kwargs, num_classes=num_classes, depth=50, neck="panet")


# Small CPU analogues of the study's rows. They start from the demo's settings but are frozen
# here, so retuning ``fcos_demo`` does not silently change the study.
SMALL_FCOS: dict[str, Any] = dict(
    depth=18, width=0.25, neck_channels=64, num_levels=3, num_convs=2, size_ranges=DEMO_SIZE_RANGES
)


@register_model(task="detection", options=OPTIONS)
def fcos_small(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small FCOS baseline (ResNet-18 ×0.25, FPN 64 ch, P3–P5, 2-conv towers) for CPU studies."""
    return build_fcos(**{"num_classes": num_classes, **SMALL_FCOS, **kwargs})


@register_model(task="detection", options=OPTIONS)
def nl_fcos_small(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small NL-FCOS (non-local on both towers)."""
    return _nl("both", kwargs, num_classes=num_classes, **SMALL_FCOS)


@register_model(task="detection", options=OPTIONS)
def nl_fcos_small_cls(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small NL-FCOS-cls."""
    return _nl("cls", kwargs, num_classes=num_classes, **SMALL_FCOS)


@register_model(task="detection", options=OPTIONS)
def nl_fcos_small_reg(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small NL-FCOS-reg."""
    return _nl("reg", kwargs, num_classes=num_classes, **SMALL_FCOS)


@register_model(task="detection", options=OPTIONS)
def nl_fcos_small_panet(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small NL-FCOS-PANet."""
    return _nl("both", kwargs, num_classes=num_classes, **{**SMALL_FCOS, "neck": "panet"})


@register_model(task="detection", options=OPTIONS)
def nl_fcos_small_deep(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small analogue of NL-FCOS-101: the deeper ResNet-34 ×0.25 backbone, NL on both towers."""
    return _nl("both", kwargs, num_classes=num_classes, **{**SMALL_FCOS, "depth": 34})


# ---------------------------------------------------------------------------------------------
# FCOS on the hybrid backbones of thesis B
# ---------------------------------------------------------------------------------------------


@register_model(task="detection", options=ON_BACKBONE_OPTIONS)
def fcos_hib_patch_2_2_nl(*, num_classes: int = 80, backbone_kwargs: dict[str, Any] | None = None,
                          **kwargs: Any) -> FCOS:
    """FCOS on HIB patch 2-2 (nl): ResNet stages 1–2, SAN patchwise stages 3–4 with NL blocks."""
    return fcos_on_backbone("hib_patch_2_2_nl", num_classes=num_classes,
                            backbone_kwargs=backbone_kwargs, **kwargs)


@register_model(task="detection", options=ON_BACKBONE_OPTIONS)
def fcos_hib_patch_2_2_nl_small(*, num_classes: int = 10, width: float = 0.25, **kwargs: Any) -> FCOS:
    """CPU preset of :func:`fcos_hib_patch_2_2_nl`: backbone at ``width``, 64-channel P3–P5, 2-conv towers."""
    defaults = dict(neck_channels=64, num_levels=3, num_convs=2, size_ranges=DEMO_SIZE_RANGES)
    return fcos_on_backbone("hib_patch_2_2_nl", num_classes=num_classes,
                            backbone_kwargs={"width": width}, **{**defaults, **kwargs})
