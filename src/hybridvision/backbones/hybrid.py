"""Hybrid convolution/attention classification networks of thesis B (Tables 2.3,
3.1–3.3): ResNet26, SAN10 (Zhao et al., CVPR 2020), PureNL and the "HIB c-a" mixes, each with its
"(nl)" variant, post- or pre-activation.

One generic staged network, :class:`HybridNet`, builds all of them from a stem and a list of
:class:`StageSpec`:

* ``"res"`` stage — ResNet v1.5 bottlenecks; the first block downsamples (stride 2, or 1 in the
  first stage) and widens.
* ``"san"`` stage — SAN transition (BN-ReLU → 2×2 max-pool → 1×1 conv) + SAN bottlenecks
  (pairwise or patchwise; window 3 in SAN10's first stage, 7 elsewhere).
* ``"nl"`` stage — SAN transition + thesis-B non-local blocks (post-act: BN-ReLU before each).
* ``nl_blocks`` — the "(nl)" variants: non-local blocks interleaved from the end of a stage
  (6 blocks + 2 NL → b b b NL b b NL b; as many NL as blocks → NL b NL b). A res stage whose
  first block is preceded by a NL block gets a SAN transition to downsample and widen instead.

Post-activation (``preact=False``, Table 3.1): ResNet stem 7×7/2 conv-BN-ReLU + 3×3/2 max-pool,
post-act bottlenecks, post-act NL blocks (W = 1×1 conv + BN, identity at start), BN-ReLU after
the last stage when it is a SAN or NL stage. Pre-activation (``preact=True``): stem without
BN-ReLU, pre-act bottlenecks and NL blocks, BN-ReLU after the last stage. SAN blocks are
pre-activated in both.

Every model exposes ``forward_features(x) -> list[Tensor]`` (the ``out_indices`` stage outputs),
``feature_info`` (``channels``, ``stride`` of each), and ``forward(x) -> logits`` (or the feature
list with ``features_only=True``, for detection necks).

Symbols: B batch, C channels, H×W spatial size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn as nn

from hybridvision.backbones.base import FeatureInfo, coarsest_stride, resolve_out_indices
from hybridvision.errors import UserInputError
from hybridvision.layers.blocks import Bottleneck, init_weights
from hybridvision.layers.registry import create_attn
from hybridvision.layers.san import SANBlock, SANTransition
from hybridvision.registry import register_model

__all__ = [
    "StageSpec",
    "HybridNet",
    "nl_positions",
    "HYBRID_MODELS",
]

StageKind = Literal["res", "san", "nl"]


@dataclass(frozen=True)
class StageSpec:
    """One stage of a :class:`HybridNet`.

    Attributes:
        kind: ``"res"``, ``"san"`` or ``"nl"``.
        width: output channels of the stage.
        blocks: residual (res) or SAN blocks, or NL blocks for an ``"nl"`` stage (may be 0:
            the stage is then only its transition, as PureNL's dropped 112×112 stage).
        nl_blocks: non-local blocks interleaved into a res/san stage (the "(nl)" variants).
        kernel_size: SAN window side.
    """

    kind: StageKind
    width: int
    blocks: int
    nl_blocks: int = 0
    kernel_size: int = 7


def nl_positions(blocks: int, nl_blocks: int) -> set[int]:
    """Indices of the blocks that get a NL block right before them (thesis B's interleaving).

    From the end of the stage, every other block (``2·nl <= blocks``) or the last ``nl`` blocks
    otherwise: (6, 2) → {3, 5} = b b b NL b b NL b; (2, 2) → {0, 1} = NL b NL b.
    """
    if not 0 <= nl_blocks <= blocks:
        raise UserInputError(f"a stage with {blocks} blocks cannot take {nl_blocks} NL blocks")
    if 2 * nl_blocks <= blocks:
        return {blocks - 1 - 2 * i for i in range(nl_blocks)}
    return set(range(blocks - nl_blocks, blocks))


def _round_width(channels: float, divisor: int = 32) -> int:
    # Multiples of 32 keep every SAN/NL reduction integral: C/16 ≥ 1 (φ, ψ), C/4 divisible by
    # share_planes = 8 (β), C/8 (θ, φ of the NL block).
    return max(divisor, int(round(channels / divisor)) * divisor)


class HybridNet(nn.Module):
    """Staged convolution / SAN / non-local classification network (thesis B, Fig. 3.2).

    Args:
        stages: the stages, in order.
        stem: ``"res"`` (7×7/2 conv [+ BN-ReLU] + 3×3/2 max-pool, stride 4) or ``"san"``
            (1×1 conv, stride 1; the first transition normalises it).
        num_classes: classifier outputs (thesis B counts parameters at 250, TU-Berlin).
        in_chans: input channels (1 for grayscale sketches).
        preact: pre-activation family (thesis B §3.4.1) instead of post-activation.
        sa_type: ``"pairwise"`` or ``"patchwise"`` SAN blocks.
        stem_width: stem output channels.
        out_indices: which stage outputs ``forward_features`` returns (default: all).
        features_only: no classifier; ``forward`` returns ``forward_features``.
        aggregation: SAN aggregation, ``"shift"`` (lean) or ``"unfold"`` (reference).
        nl_block: registered attention block used for NL blocks.
        nl_kwargs: keyword overrides for ``nl_block``.

    Shapes: ``[B, in_chans, H, W] -> [B, num_classes]``.
    """

    def __init__(
        self,
        stages: Sequence[StageSpec],
        *,
        stem: Literal["res", "san"] = "res",
        num_classes: int = 250,
        in_chans: int = 3,
        preact: bool = False,
        sa_type: Literal["pairwise", "patchwise"] = "patchwise",
        stem_width: int = 64,
        out_indices: Sequence[int] | None = None,
        features_only: bool = False,
        aggregation: Literal["shift", "unfold"] = "shift",
        nl_block: str = "nonlocal_thesis_b",
        nl_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if stem not in ("res", "san"):
            raise UserInputError(f"unknown stem {stem!r}; use 'res' or 'san'")
        self.preact = preact
        self.sa_type = sa_type
        self.aggregation = aggregation
        self.num_classes = num_classes
        self.in_chans = in_chans
        self._nl_block = nl_block
        # Post-act thesis NL block (nl.py NLBlockND): W = 1×1 conv + BN with γ = 0, no input
        # BN-ReLU; pre-act (Fig. 3.5): BN-ReLU on the input, W = BN-ReLU-1×1 conv, Kaiming init.
        post = dict(preact=False, out_act=False, zero_init=True)
        default = post if not preact and nl_block == "nonlocal_thesis_b" else {}
        self._nl_kwargs = {**default, **(nl_kwargs or {})}

        if stem == "res":
            layers: list[nn.Module] = [
                nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
            ]
            if not preact:
                layers += [nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
            self.stem = nn.Sequential(*layers)
            stride = 4
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_width, 1, bias=False))
            stride = 1

        self.stages = nn.ModuleList()
        info: list[dict[str, int]] = []
        in_ch = stem_width
        for i, spec in enumerate(stages):
            stage, stage_stride = self._make_stage(spec, in_ch, first=i == 0)
            stride *= stage_stride
            self.stages.append(stage)
            info.append(dict(channels=spec.width, stride=stride))
            in_ch = spec.width
        if not self.stages:
            raise UserInputError("HybridNet needs at least one stage")

        # SAN's code ends with BN-ReLU after its (pre-act) last stage; a pre-act network always
        # needs it, a post-act res stage already ends in ReLU.
        last_kind = stages[-1].kind
        if preact or last_kind in ("san", "nl"):
            self.stages[-1].append(nn.BatchNorm2d(in_ch))
            self.stages[-1].append(nn.ReLU(inplace=True))

        n = len(self.stages)
        self.out_indices = resolve_out_indices(out_indices, n, "HybridNet", f"{n} stages")
        self.feature_info: list[FeatureInfo] = [info[i] for i in self.out_indices]  # type: ignore[misc]
        self.size_divisible = coarsest_stride(self.feature_info)
        self.num_features = in_ch
        self.features_only = features_only
        if features_only:
            self.head = None
        else:
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(in_ch, num_classes)
            )
        # One init for every network of the package (He init); the NL blocks keep their own.
        init_weights(self)

    # ------------------------------------------------------------------------------ building
    def _nl(self, channels: int) -> nn.Module:
        return create_attn(self._nl_block, channels, **self._nl_kwargs)  # initialises itself

    def _make_stage(self, spec: StageSpec, in_ch: int, *, first: bool) -> tuple[nn.Sequential, int]:
        c = spec.width
        layers: list[nn.Module] = []
        if spec.kind == "nl":
            if spec.nl_blocks:
                raise UserInputError("an 'nl' stage cannot take extra nl_blocks")
            layers.append(SANTransition(in_ch, c))
            for _ in range(spec.blocks):
                if not self.preact:  # thesis NLLayer2D: BN-ReLU before each post-act NL block
                    layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                layers.append(self._nl(c))
            return nn.Sequential(*layers), 2

        before = nl_positions(spec.blocks, spec.nl_blocks)
        if spec.kind == "san":
            layers.append(SANTransition(in_ch, c))
            for j in range(spec.blocks):
                if j in before:
                    layers.append(self._nl(c))
                layers.append(
                    SANBlock(c, self.sa_type, spec.kernel_size, aggregation=self.aggregation)
                )
            return nn.Sequential(*layers), 2

        if spec.kind != "res":
            raise UserInputError(f"unknown stage kind {spec.kind!r}; use 'res', 'san' or 'nl'")
        if spec.blocks < 1:
            raise UserInputError("a 'res' stage needs at least one block")
        stride = 1 if first else 2
        if 0 in before:
            # The first (downsampling) bottleneck sits behind a NL block: a SAN transition
            # downsamples and widens instead (thesis B §3.4.1), every bottleneck keeps C.
            if first:
                raise UserInputError("the first res stage cannot start with a NL block")
            layers.append(SANTransition(in_ch, c))
            in_ch, block_stride = c, 1
        else:
            block_stride = stride
        for j in range(spec.blocks):
            if j in before:
                layers.append(self._nl(c))
            layers.append(Bottleneck(in_ch, c, block_stride, preact=self.preact))
            in_ch, block_stride = c, 1
        return nn.Sequential(*layers), stride

    # ------------------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs for ``out_indices``: ``[B, C_i, H/s_i, W/s_i]`` (see ``feature_info``)."""
        x = self.stem(x)
        outs = []
        last = max(self.out_indices)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
            if i == last:  # later stages feed nothing that is returned
                break
        return outs

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage features ``[B, C, h, w]`` → logits ``[B, num_classes]``."""
        if self.head is None:
            raise RuntimeError("built with features_only=True: there is no classifier head")
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_features(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)  # [B, num_classes]


# ------------------------------------------------------------------------------ the models
_RES_WIDTHS = (256, 512, 1024, 2048)
_SAN_WIDTHS = (64, 256, 512, 1024, 2048)


def _res(blocks: Sequence[int], nl: Sequence[int] | None = None) -> list[StageSpec]:
    nl = nl or [0] * len(blocks)
    return [StageSpec("res", w, b, n) for w, b, n in zip(_RES_WIDTHS, blocks, nl)]


def _hib(
    kinds: Sequence[StageKind], blocks: Sequence[int], nl: Sequence[int] | None = None
) -> list[StageSpec]:
    nl = nl or [0] * len(blocks)
    return [StageSpec(k, w, b, n, 7) for k, w, b, n in zip(kinds, _RES_WIDTHS, blocks, nl)]


def _san10(
    nl: Sequence[int] | None = None, blocks: Sequence[int] = (2, 1, 2, 4, 1)
) -> list[StageSpec]:
    nl = nl or [0] * 5
    return [
        StageSpec("san", w, b, n, 3 if i == 0 else 7)
        for i, (w, b, n) in enumerate(zip(_SAN_WIDTHS, blocks, nl))
    ]


_NL_RES = dict(blocks=(1, 1, 2, 1), nl=(0, 1, 2, 0))  # "(nl)": 3 blocks replaced by NL blocks
_R2A2: tuple[StageKind, ...] = ("res", "res", "san", "san")
_R3A1: tuple[StageKind, ...] = ("res", "res", "res", "san")

# name -> (stem, stages, sa_type); the registry builders below read this table.
HYBRID_MODELS: dict[str, tuple[str, list[StageSpec], str]] = {
    "resnet26": ("res", _res((1, 2, 4, 1)), "patchwise"),
    "resnet26_nl": ("res", _res(_NL_RES["blocks"], _NL_RES["nl"]), "patchwise"),
    "san10_pair": ("san", _san10(), "pairwise"),
    "san10_pair_nl": ("san", _san10((0, 0, 1, 2, 0), (2, 1, 1, 2, 1)), "pairwise"),
    "san10_patch": ("san", _san10(), "patchwise"),
    "san10_patch_nl": ("san", _san10((0, 0, 1, 2, 0), (2, 1, 1, 2, 1)), "patchwise"),
    "hib_pair_2_2": ("res", _hib(_R2A2, (1, 2, 4, 1)), "pairwise"),
    "hib_pair_2_2_nl": ("res", _hib(_R2A2, _NL_RES["blocks"], _NL_RES["nl"]), "pairwise"),
    "hib_patch_2_2": ("res", _hib(_R2A2, (1, 2, 4, 1)), "patchwise"),
    "hib_patch_2_2_nl": ("res", _hib(_R2A2, _NL_RES["blocks"], _NL_RES["nl"]), "patchwise"),
    "hib_pair_3_1": ("res", _hib(_R3A1, (1, 2, 4, 1)), "pairwise"),
    "hib_pair_3_1_nl": ("res", _hib(_R3A1, _NL_RES["blocks"], _NL_RES["nl"]), "pairwise"),
    "hib_patch_3_1": ("res", _hib(_R3A1, (1, 2, 4, 1)), "patchwise"),
    "hib_patch_3_1_nl": ("res", _hib(_R3A1, _NL_RES["blocks"], _NL_RES["nl"]), "patchwise"),
    # PureNL (Table 3.2): SAN stem, the 112×112 stage reduced to its transition (memory), then
    # NL stages [3, 2, 4, 1].
    "pure_nl": (
        "san",
        [StageSpec("nl", w, b) for w, b in zip(_SAN_WIDTHS, (0, 3, 2, 4, 1))],
        "patchwise",
    ),
    "hib_nl_2_2": ("res", _hib(("res", "res", "nl", "nl"), (1, 2, 4, 1)), "patchwise"),
    "hib_nl_3_1": ("res", _hib(("res", "res", "res", "nl"), (1, 2, 4, 1)), "patchwise"),
}


def _build(
    name: str,
    *,
    num_classes: int = 250,
    preact: bool = False,
    in_chans: int = 3,
    width: float = 1.0,
    out_indices: Sequence[int] | None = None,
    features_only: bool = False,
    aggregation: Literal["shift", "unfold"] = "shift",
) -> HybridNet:
    """The model ``name`` of :data:`HYBRID_MODELS` (every registered builder below calls this)."""
    stem, stages, sa_type = HYBRID_MODELS[name]
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 16:
        raise UserInputError(
            f"{name}: width must be a number in (0, 16] (a channel multiplier, e.g. 0.25), got {width!r}"
        )
    stem_width = 64
    if width != 1.0:
        stages = [replace(s, width=_round_width(s.width * width)) for s in stages]
        stem_width = _round_width(64 * width)
    return HybridNet(
        stages,
        stem=stem,  # type: ignore[arg-type]
        num_classes=num_classes,
        in_chans=in_chans,
        preact=preact,
        sa_type=sa_type,  # type: ignore[arg-type]
        stem_width=stem_width,
        out_indices=out_indices,
        features_only=features_only,
        aggregation=aggregation,
    )


_OPTIONS_DOC = (
    "Keyword-only: ``num_classes`` (250 = TU-Berlin), ``preact`` (pre-activation family), "
    "``in_chans`` (1 for grayscale sketches), ``width`` (channel multiplier, widths rounded "
    "to multiples of 32: 0.25 gives a CPU-sized preset), ``out_indices`` / "
    "``features_only`` (backbone use: e.g. ``out_indices=(-3, -2, -1)`` for strides "
    "8/16/32), ``aggregation`` (SAN: 'shift' or 'unfold')."
)


def _takes_build_options(fn: Callable[..., HybridNet]) -> Callable[..., HybridNet]:
    """Give a one-line builder ``def NAME(**options): return _build("NAME", **options)`` the
    keyword-only signature of :func:`_build` (its options, types and defaults, as the registry
    and ``hybridvision models`` read them) and the options' paragraph after its description."""
    params = list(inspect.signature(_build).parameters.values())[1:]  # all but ``name``
    fn.__signature__ = inspect.Signature(params, return_annotation=HybridNet)  # type: ignore[attr-defined]
    fn.__annotations__ = {k: v for k, v in _build.__annotations__.items() if k != "name"}
    fn.__doc__ = f"{fn.__doc__}\n\n{_OPTIONS_DOC}"
    return fn


# The registered models of Table 3.1: each a literal ``def`` whose docstring is its description.


@register_model(task="classification")
@_takes_build_options
def resnet26(**options: Any) -> HybridNet:
    """ResNet26: ResNet-50 v1.5 with blocks [1, 2, 4, 1] (thesis B, Table 3.1)."""
    return _build("resnet26", **options)



@register_model(task="classification")
@_takes_build_options
def resnet26_nl(**options: Any) -> HybridNet:
    """ResNet26 (nl): blocks [1, 1, 2, 1] + NL blocks [0, 1, 2, 0] (thesis B, Table 3.1)."""
    return _build("resnet26_nl", **options)


@register_model(task="classification")
@_takes_build_options
def san10_pair(**options: Any) -> HybridNet:
    """SAN10 pairwise: SAN stem, 5 SAN stages [2, 1, 2, 4, 1] (thesis B, Table 3.1)."""
    return _build("san10_pair", **options)


@register_model(task="classification")
@_takes_build_options
def san10_pair_nl(**options: Any) -> HybridNet:
    """SAN10 pairwise (nl): blocks [2, 1, 1, 2, 1] + NL blocks [0, 0, 1, 2, 0] (thesis B, Table 3.1)."""
    return _build("san10_pair_nl", **options)


@register_model(task="classification")
@_takes_build_options
def san10_patch(**options: Any) -> HybridNet:
    """SAN10 patchwise: SAN stem, 5 SAN stages [2, 1, 2, 4, 1] (thesis B, Table 3.1)."""
    return _build("san10_patch", **options)


@register_model(task="classification")
@_takes_build_options
def san10_patch_nl(**options: Any) -> HybridNet:
    """SAN10 patchwise (nl): blocks [2, 1, 1, 2, 1] + NL blocks [0, 0, 1, 2, 0] (thesis B, Table 3.1)."""
    return _build("san10_patch_nl", **options)


@register_model(task="classification")
@_takes_build_options
def hib_pair_2_2(**options: Any) -> HybridNet:
    """HIB pair 2-2: 2 ResNet26 stages, then 2 SAN pairwise stages (thesis B, Table 3.1)."""
    return _build("hib_pair_2_2", **options)


@register_model(task="classification")
@_takes_build_options
def hib_pair_2_2_nl(**options: Any) -> HybridNet:
    """HIB pair 2-2 (nl): blocks [1, 1, 2, 1] + NL blocks [0, 1, 2, 0] (thesis B, Table 3.1)."""
    return _build("hib_pair_2_2_nl", **options)


@register_model(task="classification")
@_takes_build_options
def hib_patch_2_2(**options: Any) -> HybridNet:
    """HIB patch 2-2: 2 ResNet26 stages, then 2 SAN patchwise stages (thesis B, Table 3.1)."""
    return _build("hib_patch_2_2", **options)


@register_model(task="classification")
@_takes_build_options
def hib_patch_2_2_nl(**options: Any) -> HybridNet:
    """HIB patch 2-2 (nl): blocks [1, 1, 2, 1] + NL blocks [0, 1, 2, 0] (thesis B, Table 3.1)."""
    return _build("hib_patch_2_2_nl", **options)


@register_model(task="classification")
@_takes_build_options
def hib_pair_3_1(**options: Any) -> HybridNet:
    """HIB pair 3-1: 3 ResNet26 stages, then 1 SAN pairwise stage (thesis B, Table 3.1)."""
    return _build("hib_pair_3_1", **options)


@register_model(task="classification")
@_takes_build_options
def hib_pair_3_1_nl(**options: Any) -> HybridNet:
    """HIB pair 3-1 (nl): blocks [1, 1, 2, 1] + NL blocks [0, 1, 2, 0] (thesis B, Table 3.1)."""
    return _build("hib_pair_3_1_nl", **options)


@register_model(task="classification")
@_takes_build_options
def hib_patch_3_1(**options: Any) -> HybridNet:
    """HIB patch 3-1: 3 ResNet26 stages, then 1 SAN patchwise stage (thesis B, Table 3.1)."""
    return _build("hib_patch_3_1", **options)


@register_model(task="classification")
@_takes_build_options
def hib_patch_3_1_nl(**options: Any) -> HybridNet:
    """HIB patch 3-1 (nl): blocks [1, 1, 2, 1] + NL blocks [0, 1, 2, 0] (thesis B, Table 3.1)."""
    return _build("hib_patch_3_1_nl", **options)


@register_model(task="classification")
@_takes_build_options
def pure_nl(**options: Any) -> HybridNet:
    """PureNL: SAN stem and transitions, NL stages [3, 2, 4, 1] (thesis B, Table 3.1)."""
    return _build("pure_nl", **options)


@register_model(task="classification")
@_takes_build_options
def hib_nl_2_2(**options: Any) -> HybridNet:
    """HIB NL 2-2: 2 ResNet26 stages, then 2 non-local stages (thesis B, Table 3.1)."""
    return _build("hib_nl_2_2", **options)


@register_model(task="classification")
@_takes_build_options
def hib_nl_3_1(**options: Any) -> HybridNet:
    """HIB NL 3-1: 3 ResNet26 stages, then 1 non-local stage (thesis B, Table 3.1)."""
    return _build("hib_nl_3_1", **options)
