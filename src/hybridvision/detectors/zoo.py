"""Detector presets: every registered FCOS / NL-FCOS builder, FCOS on other backbones,
CenterNet / NL-CenterNet, CornerNet / NL-CornerNet, and the anchor-based RetinaNet baseline.

A preset composes a backbone (the backbone contract: ``features_only`` + ``out_indices`` →
``list[Tensor]``, ``feature_info``), a neck (FPN or PANet) and a detector with its head options.
Builders take keyword-only arguments that override the preset's (``create_model(name, **kw)``).

``fcos_hib_patch_2_2_nl`` puts seed 001's best sketch backbone (HIB patch 2-2 with non-local
blocks) under FCOS, joining the two theses: SAN and non-local attention inside the detector's
backbone rather than in its head.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Sequence

import torch.nn as nn

import hybridvision.backbones.hybrid  # noqa: F401  registers the classification backbones
from hybridvision.backbones.resnet import RESNET_DEPTHS, ResNet
from hybridvision.backbones.hourglass import HOURGLASS_104, StackedHourglass
from hybridvision.detectors.centernet import CenterNet, CenterNetHead
from hybridvision.detectors.cornernet import CornerNet
from hybridvision.detectors.fcos import FCOS, FCOSHead, default_size_ranges
from hybridvision.detectors.retinanet import RetinaNet, anchor_sizes_for
from hybridvision.errors import UserInputError
from hybridvision.necks.fpn import FPN, FinestLevels
from hybridvision.necks.panet import PANet
from hybridvision.necks.upsample import DeconvUpsample
from hybridvision.options import keyword_parameters
from hybridvision.registry import build_model, register_model

__all__ = ["build_fcos", "build_centernet", "build_retinanet", "build_cornernet", "build_cornerfcos",
           "fcos_on_backbone", "build_neck", "DEMO_SIZE_RANGES", "SMALL_FCOS", "SMALL_CENTERNET", "NL_HEAD_ATTN",
           "NL_CENTERNET_ATTN"]

INF = float("inf")


def _preset(*, on: Callable[..., Any], detector: type = FCOS, head: type | None = FCOSHead):
    """Register a detector preset whose ``**kwargs`` go to ``on`` (e.g. :func:`build_fcos`), then
    to ``detector`` and its ``head`` (None: the detector builds its head from its own options):
    the builder declares all of those as its ``options``, so an unknown one is refused, with the
    valid ones, before anything is built."""
    head_options = {} if head is None else keyword_parameters(head.__init__, exclude=("in_channels", "num_classes",
                                                                                     "num_levels"))
    detector_options = keyword_parameters(detector.__init__, exclude=("backbone", "neck", "num_classes", "head"))
    # name -> annotated parameter (on's where names repeat): hybridvision.options checks values by it
    options = {**head_options, **detector_options, **keyword_parameters(on, exclude=("backbone_name",))}

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.options = {k: options[k] for k in sorted(options)}
        return register_model(fn, task="detection")

    return wrap


def _fcos_preset(*, on: Callable[..., Any]):
    return _preset(on=on, detector=FCOS, head=FCOSHead)


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
    if depth not in RESNET_DEPTHS:
        raise UserInputError(f"FCOS depth={depth} is not a ResNet depth; use one of {sorted(RESNET_DEPTHS)}")
    block, layers = RESNET_DEPTHS[depth]
    backbone = ResNet(
        block,  # type: ignore[arg-type]
        layers,
        width=width,
        out_indices=(2, 3, 4),
        features_only=True,
        preact=backbone_preact,
        norm_layer=backbone_norm or nn.BatchNorm2d,
        attn=backbone_attn,
        attn_at=backbone_attn_at,
        attn_kwargs=backbone_attn_kwargs,
    )
    neck_mod = build_neck(neck, backbone, neck_channels, num_levels, extra_from)
    return FCOS(backbone, neck_mod, num_classes, **fcos_kwargs)


def fcos_on_backbone(backbone_name: str, *, num_classes: int, backbone_kwargs: dict[str, Any] | None = None,
                     neck: str = "fpn", neck_channels: int = 256, num_levels: int = 5,
                     **fcos_kwargs: Any) -> FCOS:
    """FCOS on the last three stages (strides 8/16/32) of a registered classification model."""
    backbone = build_model(backbone_name, out_indices=(-3, -2, -1), features_only=True,
                           **(backbone_kwargs or {}))
    neck_mod = build_neck(neck, backbone, neck_channels, num_levels)
    return FCOS(backbone, neck_mod, num_classes, **fcos_kwargs)


# ---------------------------------------------------------------------------------------------
# FCOS (Tian et al. 2019)
# ---------------------------------------------------------------------------------------------


@_fcos_preset(on=build_fcos)
def fcos_r18_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """FCOS, ResNet-18, FPN P3–P7, 256 channels. ``kwargs`` go to :func:`build_fcos`."""
    return build_fcos(**{"num_classes": num_classes, "depth": 18, **kwargs})


@_fcos_preset(on=build_fcos)
def fcos_r50_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """FCOS, ResNet-50, FPN P3–P7 (Tian et al. 2019). ``kwargs`` go to :func:`build_fcos`."""
    return build_fcos(**{"num_classes": num_classes, "depth": 50, **kwargs})


@_fcos_preset(on=build_fcos)
def fcos_r101_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """FCOS, ResNet-101, FPN P3–P7. ``kwargs`` go to :func:`build_fcos`."""
    return build_fcos(**{"num_classes": num_classes, "depth": 101, **kwargs})


# The demo preset: trains on the built-in digits at ~128×128 in minutes on 2 CPU cores.
DEMO_SIZE_RANGES = ((0, 32), (32, 64), (64, INF))


@_fcos_preset(on=build_fcos)
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
# NL-FCOS (seed 000, Sec. 3.3.3): a non-local block at the start of the cls and/or reg tower,
# shared across levels; NL-FCOS-PANet adds the bottom-up path. The block defaults to the
# thesis's own form (``nonlocal_thesis_a``); pass ``head_attn="nonlocal"`` for Wang et al.'s.
# ---------------------------------------------------------------------------------------------

NL_HEAD_ATTN = "nonlocal_thesis_a"


def _nl(branch: str, overrides: dict[str, Any], **defaults: Any) -> FCOS:
    return build_fcos(**{"head_attn": NL_HEAD_ATTN, "head_attn_branch": branch, **defaults, **overrides})


@_fcos_preset(on=build_fcos)
def nl_fcos_r50_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS: ResNet-50 FPN, a non-local block at the start of both towers."""
    return _nl("both", kwargs, num_classes=num_classes, depth=50)


@_fcos_preset(on=build_fcos)
def nl_fcos_r50_fpn_cls(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS-cls: the non-local block only at the start of the classification tower."""
    return _nl("cls", kwargs, num_classes=num_classes, depth=50)


@_fcos_preset(on=build_fcos)
def nl_fcos_r50_fpn_reg(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS-reg: the non-local block only at the start of the regression tower."""
    return _nl("reg", kwargs, num_classes=num_classes, depth=50)


@_fcos_preset(on=build_fcos)
def nl_fcos_r101_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS-101: ResNet-101 FPN, non-local blocks on both towers."""
    return _nl("both", kwargs, num_classes=num_classes, depth=101)


@_fcos_preset(on=build_fcos)
def nl_fcos_r50_panet(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS-PANet: ResNet-50, FPN + PANet bottom-up path (N3–N7), NL on both towers."""
    return _nl("both", kwargs, num_classes=num_classes, depth=50, neck="panet")


# Small CPU analogues of the study's rows. They start from the demo's settings but are frozen
# here, so retuning ``fcos_demo`` does not silently change the study.
SMALL_FCOS: dict[str, Any] = dict(
    depth=18, width=0.25, neck_channels=64, num_levels=3, num_convs=2, size_ranges=DEMO_SIZE_RANGES
)


@_fcos_preset(on=build_fcos)
def fcos_small(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small FCOS baseline (ResNet-18 ×0.25, FPN 64 ch, P3–P5, 2-conv towers) for CPU studies."""
    return build_fcos(**{"num_classes": num_classes, **SMALL_FCOS, **kwargs})


@_fcos_preset(on=build_fcos)
def nl_fcos_small(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small NL-FCOS (non-local on both towers)."""
    return _nl("both", kwargs, num_classes=num_classes, **SMALL_FCOS)


@_fcos_preset(on=build_fcos)
def nl_fcos_small_cls(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small NL-FCOS-cls."""
    return _nl("cls", kwargs, num_classes=num_classes, **SMALL_FCOS)


@_fcos_preset(on=build_fcos)
def nl_fcos_small_reg(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small NL-FCOS-reg."""
    return _nl("reg", kwargs, num_classes=num_classes, **SMALL_FCOS)


@_fcos_preset(on=build_fcos)
def nl_fcos_small_panet(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small NL-FCOS-PANet."""
    return _nl("both", kwargs, num_classes=num_classes, **{**SMALL_FCOS, "neck": "panet"})


@_fcos_preset(on=build_fcos)
def nl_fcos_small_deep(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small analogue of NL-FCOS-101: the deeper ResNet-34 ×0.25 backbone, NL on both towers."""
    return _nl("both", kwargs, num_classes=num_classes, **{**SMALL_FCOS, "depth": 34})


# ---------------------------------------------------------------------------------------------
# FCOS on the hybrid backbones of seed 001
# ---------------------------------------------------------------------------------------------


@_fcos_preset(on=fcos_on_backbone)
def fcos_hib_patch_2_2_nl(*, num_classes: int = 80, backbone_kwargs: dict[str, Any] | None = None,
                          **kwargs: Any) -> FCOS:
    """FCOS on HIB patch 2-2 (nl): ResNet stages 1–2, SAN patchwise stages 3–4 with NL blocks."""
    return fcos_on_backbone("hib_patch_2_2_nl", num_classes=num_classes,
                            backbone_kwargs=backbone_kwargs, **kwargs)


@_fcos_preset(on=fcos_on_backbone)
def fcos_hib_patch_2_2_nl_small(*, num_classes: int = 10, width: float = 0.25, **kwargs: Any) -> FCOS:
    """CPU preset of :func:`fcos_hib_patch_2_2_nl`: backbone at ``width``, 64-channel P3–P5, 2-conv towers."""
    defaults = dict(neck_channels=64, num_levels=3, num_convs=2, size_ranges=DEMO_SIZE_RANGES)
    return fcos_on_backbone("hib_patch_2_2_nl", num_classes=num_classes,
                            backbone_kwargs={"width": width}, **{**defaults, **kwargs})


# ---------------------------------------------------------------------------------------------
# CenterNet (Zhou et al. 2019) and NL-CenterNet
# ---------------------------------------------------------------------------------------------


def build_centernet(
    *,
    num_classes: int,
    depth: int = 18,
    width: float = 1.0,
    up_channels: Sequence[int] = (256, 128, 64),
    dcn: bool = False,
    skip: bool = False,
    **centernet_kwargs: Any,
) -> CenterNet:
    """Build a CenterNet: ResNet-``depth`` C5 → 3 transposed-conv stages to stride 4 → heads.

    Args:
        num_classes: K.
        depth: 18, 34, 50 or 101.
        width: ResNet channel multiplier.
        up_channels: channels of the upsampling stages (the paper's 256, 128, 64).
        dcn: a deformable 3×3 conv before each upsampling (the paper's ``resnet_dcn``; off by
            default so the model runs on CPU and exports to ONNX).
        skip: add C4, C3, C2 to the upsampled maps of their stride (1×1 conv + BN), as U-Net /
            DLA-34's IDA-up; the paper's ResNet variant has none.
        **centernet_kwargs: :class:`CenterNet` and :class:`CenterNetHead` options.
    """
    if depth not in RESNET_DEPTHS:
        raise UserInputError(f"CenterNet depth={depth} is not a ResNet depth; use one of {sorted(RESNET_DEPTHS)}")
    block, layers = RESNET_DEPTHS[depth]
    out_indices = (1, 2, 3, 4) if skip else (4,)
    backbone = ResNet(block, layers, width=width, out_indices=out_indices, features_only=True)  # type: ignore[arg-type]
    info = backbone.feature_info
    neck = DeconvUpsample([f["channels"] for f in info], [f["stride"] for f in info], up_channels, dcn=dcn,
                          skip=skip)
    return CenterNet(backbone, neck, num_classes, **centernet_kwargs)


def _centernet_preset(fn: Callable[..., Any]) -> Callable[..., Any]:
    return _preset(on=build_centernet, detector=CenterNet, head=CenterNetHead)(fn)


# The non-local block of NL-CenterNet: Wang et al.'s form (identity at the start, sub-sampled keys),
# which keeps the stride-4 map's 1024 (CPU preset) to 16384 (512² input) queries affordable.
NL_CENTERNET_ATTN = "nonlocal"


@_centernet_preset
def centernet_r18(*, num_classes: int = 80, **kwargs: Any) -> CenterNet:
    """CenterNet, ResNet-18, upsampling 256/128/64 to stride 4, 64-channel heads."""
    return build_centernet(**{"num_classes": num_classes, "depth": 18, **kwargs})


@_centernet_preset
def centernet_r101(*, num_classes: int = 80, **kwargs: Any) -> CenterNet:
    """CenterNet, ResNet-101, upsampling 256/128/64 to stride 4, 64-channel heads."""
    return build_centernet(**{"num_classes": num_classes, "depth": 101, **kwargs})


@_centernet_preset
def nl_centernet_r18(*, num_classes: int = 80, **kwargs: Any) -> CenterNet:
    """NL-CenterNet-R18: a non-local block on the stride-4 feature, before the heads."""
    return build_centernet(**{"num_classes": num_classes, "depth": 18, "head_attn": NL_CENTERNET_ATTN,
                              "head_attn_at": "neck", **kwargs})


@_centernet_preset
def nl_centernet_r18_heads(*, num_classes: int = 80, **kwargs: Any) -> CenterNet:
    """NL-CenterNet-R18 (heads): a non-local block at the start of each of the three heads."""
    return build_centernet(**{"num_classes": num_classes, "depth": 18, "head_attn": NL_CENTERNET_ATTN,
                              "head_attn_at": "heads", **kwargs})


# The CPU preset: the demo's backbone (ResNet-18 ×0.25) with a narrow neck and heads, and skip
# connections: on the built-in amounts (128 px) C5 is 4×4, too coarse to place 14-px digits on
# the 32×32 heatmap alone (6.8 AP after 8 of the demo's 28 epochs without skips).
SMALL_CENTERNET: dict[str, Any] = dict(depth=18, width=0.25, up_channels=(64, 64, 64), head_channels=32, skip=True)


@_centernet_preset
def centernet_small(*, num_classes: int = 10, **kwargs: Any) -> CenterNet:
    """Small CenterNet for CPU (ResNet-18 ×0.25, 64-channel upsampling with skips, 32-channel heads)."""
    return build_centernet(**{"num_classes": num_classes, **SMALL_CENTERNET, **kwargs})


@_centernet_preset
def nl_centernet_small(*, num_classes: int = 10, **kwargs: Any) -> CenterNet:
    """Small NL-CenterNet: a non-local block on the stride-4 feature."""
    return build_centernet(**{"num_classes": num_classes, **SMALL_CENTERNET, "head_attn": NL_CENTERNET_ATTN,
                              "head_attn_at": "neck", **kwargs})


@_centernet_preset
def nl_centernet_small_heads(*, num_classes: int = 10, **kwargs: Any) -> CenterNet:
    """Small NL-CenterNet (heads): a non-local block at the start of each head."""
    return build_centernet(**{"num_classes": num_classes, **SMALL_CENTERNET, "head_attn": NL_CENTERNET_ATTN,
                              "head_attn_at": "heads", **kwargs})


# ---------------------------------------------------------------------------------------------
# RetinaNet (Lin et al. 2017): the anchor-based baseline, torchvision's head and anchors
# ---------------------------------------------------------------------------------------------


def build_retinanet(
    *,
    num_classes: int,
    depth: int = 50,
    width: float = 1.0,
    neck_channels: int = 256,
    num_levels: int = 5,
    anchor_base: float = 4.0,
    **retinanet_kwargs: Any,
) -> RetinaNet:
    """Build a RetinaNet from a ResNet-``depth`` (C3–C5), an FPN (P3–P7 or P3–P5) and options.

    Args:
        num_classes: K.
        depth: 18, 34, 50 or 101.
        width: ResNet channel multiplier.
        neck_channels: channels of the pyramid (and of the head's towers).
        num_levels: 5 (P3–P7) or 3 (P3–P5).
        anchor_base: anchor size in strides at scale 2⁰ (4: 32 px at P3, the paper's).
        **retinanet_kwargs: :class:`~hybridvision.detectors.retinanet.RetinaNet` options.
    """
    if depth not in RESNET_DEPTHS:
        raise UserInputError(f"RetinaNet depth={depth} is not a ResNet depth; use one of {sorted(RESNET_DEPTHS)}")
    block, layers = RESNET_DEPTHS[depth]
    backbone = ResNet(block, layers, width=width, out_indices=(2, 3, 4), features_only=True)  # type: ignore[arg-type]
    neck = build_neck("fpn", backbone, neck_channels, num_levels)
    if "anchor_sizes" not in retinanet_kwargs:
        retinanet_kwargs["anchor_sizes"] = anchor_sizes_for(neck.strides, anchor_base)
    return RetinaNet(backbone, neck, num_classes, **retinanet_kwargs)


def _retinanet_preset(fn: Callable[..., Any]) -> Callable[..., Any]:
    return _preset(on=build_retinanet, detector=RetinaNet, head=None)(fn)


@_retinanet_preset
def retinanet_r50_fpn(*, num_classes: int = 80, **kwargs: Any) -> RetinaNet:
    """RetinaNet, ResNet-50, FPN P3–P7, 9 anchors per cell (torchvision's ``retinanet_resnet50_fpn``)."""
    return build_retinanet(**{"num_classes": num_classes, "depth": 50, **kwargs})


@_retinanet_preset
def retinanet_small(*, num_classes: int = 10, **kwargs: Any) -> RetinaNet:
    """Small RetinaNet for CPU, matched to ``fcos_small``: ResNet-18 ×0.25, FPN 64 ch, P3–P5,
    anchors 2·stride (16–102 px, for ~128 px images)."""
    return build_retinanet(**{"num_classes": num_classes, "depth": 18, "width": 0.25, "neck_channels": 64,
                              "num_levels": 3, "anchor_base": 2.0, **kwargs})


# ---------------------------------------------------------------------------------------------
# CornerNet (Law & Deng 2018) and NL-CornerNet (seed 000): a non-local block replaces each corner pooling
# ---------------------------------------------------------------------------------------------


def build_cornernet(
    *,
    num_classes: int,
    stacks: int = 2,
    depth: int = HOURGLASS_104["depth"],
    widths: Sequence[int] = HOURGLASS_104["widths"],
    blocks: Sequence[int] = HOURGLASS_104["blocks"],
    stem_channels: int = 128,
    cnv_channels: int = 256,
    **cornernet_kwargs: Any,
) -> CornerNet:
    """Build a CornerNet on a stacked hourglass (default Hourglass-104: 2 stacks, depth 5).

    ``cornernet_kwargs`` go to :class:`~hybridvision.detectors.cornernet.CornerNet` (``pool``,
    ``pool_channels``, ``attn``, ``min_overlap``, decoding options, ...).
    """
    backbone = StackedHourglass(stacks, depth, widths, blocks, stem_channels=stem_channels,
                                cnv_channels=cnv_channels)
    return CornerNet(backbone, num_classes, **cornernet_kwargs)


def _cornernet_preset(fn: Callable[..., Any]) -> Callable[..., Any]:
    return _preset(on=build_cornernet, detector=CornerNet, head=None)(fn)


@_cornernet_preset
def cornernet_hg104(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """CornerNet, Hourglass-104 (2 stacks), corner pooling, 128-channel prediction modules."""
    return build_cornernet(**{"num_classes": num_classes, **kwargs})


@_cornernet_preset
def nl_cornernet_hg104(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """NL-CornerNet (seed 000): a non-local block (thesis A's form) replaces each corner pooling."""
    return build_cornernet(**{"num_classes": num_classes, "pool": "nl", **kwargs})


@_cornernet_preset
def cornernet_64(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """CornerNet-64 (seed 000, Table 4.5): the prediction modules' branches convolve with stride 2,
    so corner pooling runs at 64² for a 128² map, and the pooled map is upsampled back."""
    return build_cornernet(**{"num_classes": num_classes, "pool_stride": 2, **kwargs})


@_cornernet_preset
def nl_cornernet_64(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """NL-CornerNet-64 (seed 000, Código 3.5): the non-local blocks first reduce their input with a
    stride-2 1×1 conv, so attention runs at 64² for a 128² map, and upsample their output back."""
    return build_cornernet(**{"num_classes": num_classes, "pool": "nl", "attn_kwargs": {"reduce": True},
                              **kwargs})


@_cornernet_preset
def centernet_triplets_hg104(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
    """CenterNet keypoint triplets (Duan et al. 2019): Hourglass-104, cascade corner pooling, a
    centre keypoint (centre pooling) and the central-region check in decoding."""
    return build_cornernet(**{"num_classes": num_classes, "pool": "cascade", "center_keypoints": True, **kwargs})


# The CPU preset: one stack of a depth-3 hourglass at widths 32–64 (inputs a multiple of 32). A
# second stack (CornerNet's intermediate supervision; ``stacks=2``) doubles a training step's cost
# on a CPU (0.32 → 0.64 s at batch 16, 128², one thread; fcos_small: 0.17 s).
SMALL_HOURGLASS: dict[str, Any] = dict(stacks=1, depth=3, widths=(32, 32, 48, 64), blocks=(1, 1, 1, 1),
                                       stem_channels=16, cnv_channels=32, pool_channels=32)


@_cornernet_preset
def cornernet_small(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """Small CornerNet for CPU: one stack of a depth-3 hourglass (32–64 ch), corner pooling."""
    return build_cornernet(**{"num_classes": num_classes, **SMALL_HOURGLASS, **kwargs})


@_cornernet_preset
def nl_cornernet_small(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """Small NL-CornerNet: a non-local block replaces each corner pooling."""
    return build_cornernet(**{"num_classes": num_classes, **SMALL_HOURGLASS, "pool": "nl", **kwargs})


@_cornernet_preset
def centernet_triplets_small(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """Small CenterNet keypoint triplets for CPU (the small hourglass)."""
    return build_cornernet(**{"num_classes": num_classes, **SMALL_HOURGLASS, "pool": "cascade",
                              "center_keypoints": True, **kwargs})


@_cornernet_preset
def cornernet_small_64(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """Small CornerNet-64: corner pooling at half the map's resolution."""
    return build_cornernet(**{"num_classes": num_classes, **SMALL_HOURGLASS, "pool_stride": 2, **kwargs})


@_cornernet_preset
def nl_cornernet_small_64(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
    """Small NL-CornerNet-64: the non-local blocks attend at half the map's resolution."""
    return build_cornernet(**{"num_classes": num_classes, **SMALL_HOURGLASS, "pool": "nl",
                              "attn_kwargs": {"reduce": True}, **kwargs})


# ---------------------------------------------------------------------------------------------
# CornerFCOS (seed 000, Sec. 3.3.4): CornerNet prediction modules on an FCOS backbone and FPN
# ---------------------------------------------------------------------------------------------


def build_cornerfcos(
    *,
    num_classes: int,
    mode: str = "multi",
    targets: str = "normal",
    depth: int = 50,
    width: float = 1.0,
    neck_channels: int = 256,
    pool_channels: int = 128,
    num_levels: int = 5,
    size_ranges: Sequence[tuple[float, float]] | None = None,
    **cornernet_kwargs: Any,
) -> CornerNet:
    """CornerFCOS: a ResNet (C3–C5) and FPN, and one CornerNet prediction module pair shared by
    every level (``pool``: ``"nl"`` as the thesis, ``"conv"``, or ``"corner"`` — its future work).

    Args:
        mode: ``"single"`` (P3 only, no P6/P7) or ``"multi"`` (P3–P7).
        targets: ``"normal"`` (each level learns the boxes whose half larger side lies in FCOS's
            size range of the level: FCOS's target max(l, t, r, b) at the box's centre) or
            ``"all"`` (every level learns every box); with one level (single) both mean that P3
            learns every box.
        num_levels: pyramid levels of "multi", 5 (P3–P7) or 3 (P3–P5).
        size_ranges: the "normal" ranges per level (default FCOS's for ``num_levels``).
        **cornernet_kwargs: :class:`~hybridvision.detectors.cornernet.CornerNet` options.
    """
    if mode not in ("single", "multi") or targets not in ("normal", "all"):
        raise UserInputError(f"CornerFCOS mode={mode!r} targets={targets!r}: use mode single|multi, "
                             "targets normal|all")
    if depth not in RESNET_DEPTHS:
        raise UserInputError(f"CornerFCOS depth={depth} is not a ResNet depth; use one of {sorted(RESNET_DEPTHS)}")
    block, layers = RESNET_DEPTHS[depth]
    backbone = ResNet(block, layers, width=width, out_indices=(2, 3, 4), features_only=True)  # type: ignore[arg-type]
    num_levels = num_levels if mode == "multi" else 3
    neck = build_neck("fpn", backbone, neck_channels, num_levels)
    if mode == "single":
        neck = FinestLevels(neck, 1)
    ranges = None
    if mode == "multi" and targets == "normal":
        ranges = default_size_ranges(num_levels) if size_ranges is None else [tuple(r) for r in size_ranges]
    options = {"pool": "nl", "nms_method": "hard", "nms_thresh": 0.6, **cornernet_kwargs}
    return CornerNet(backbone, num_classes, neck=neck, shared_head=True, level_ranges=ranges, decode_all=True,
                     pool_channels=pool_channels, **options)


def _cornerfcos_preset(fn: Callable[..., Any]) -> Callable[..., Any]:
    return _preset(on=build_cornerfcos, detector=CornerNet, head=None)(fn)


def _register_cornerfcos(mode: str, targets: str) -> None:
    def paper(*, num_classes: int = 80, **kwargs: Any) -> CornerNet:
        return build_cornerfcos(**{"num_classes": num_classes, "mode": mode, "targets": targets, **kwargs})

    def small(*, num_classes: int = 10, **kwargs: Any) -> CornerNet:
        # fcos_small's pyramid (P3–P5, ranges for ~128-px images), so the two compare at one budget
        return build_cornerfcos(**{"num_classes": num_classes, "mode": mode, "targets": targets, "depth": 18,
                                   "width": 0.25, "neck_channels": 64, "pool_channels": 32, "num_levels": 3,
                                   "size_ranges": DEMO_SIZE_RANGES, **kwargs})

    for fn, name, what in ((paper, f"cornerfcos_{mode}_{targets}", "ResNet-50 FPN"),
                           (small, f"cornerfcos_{mode}_{targets}_small", "ResNet-18 ×0.25, FPN 64 ch (CPU)")):
        fn.__name__ = fn.__qualname__ = name
        fn.__doc__ = (f"CornerFCOS {mode}/{targets}: {what}, a shared CornerNet module pair per level "
                      "(pool nl | conv | corner).")
        _cornerfcos_preset(fn)


# With one level ("single") the two target rules coincide: P3 learns every box.
for _mode in ("single", "multi"):
    for _targets in ("normal", "all"):
        _register_cornerfcos(_mode, _targets)
