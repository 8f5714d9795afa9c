"""SAN local vector self-attention (Zhao, Jia & Koltun, "Exploring Self-attention for Image
Recognition", CVPR 2020): pairwise and patchwise self-attention, the SAN residual bottleneck and
the SAN transition.

    y_i = Σ_{j ∈ R(i)} α_ij ⊙ β(x_j)          R(i): the k×k window around i

* pairwise:  α_ij = softmax_j γ([φ(x_i) − ψ(x_j), p_i − p_j])   (p: encoded pixel position)
* patchwise: α_i  = γ([φ(x_i), ψ(x_j) for all j ∈ R(i)])          (no softmax)

The weight vector α_ij has only C_w = C_v / share_planes channels; weight channel w scales the
value channels w, w + C_w, w + 2·C_w, … (the "share planes" of the paper's CUDA kernels).
Borders use reflection padding, as the paper's ``*_refpad`` kernels do.

Symbols (used in the shape comments):
    B batch, C block width, C_r = C / r1 relation channels (r1 = 16), C_v = C / r2 value channels
    (r2 = 4), S = share_planes, C_w = C_v / S weight channels, k window side, K = k² neighbours
    (j = dy·k + dx), H×W spatial size, L = H·W, P = k // 2 padding.

Aggregation. ``method="unfold"`` is the textbook formulation: unfold the padded values into
``[B, C_v·K, L]`` and contract with the weights — it materialises K copies of the values (and
autograd keeps them). ``method="shift"`` (the default) loops over the K window offsets and
accumulates ``weight[:, :, j] * shifted slice of the padded values``; forward and backward run in a
custom autograd function that keeps only the padded values and the weights, so the memory is
O(C_v·H·W) instead of O(C_v·K·H·W). ``benchmarks/bench_san.py`` measures both.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from hybridvision.errors import UserInputError
from hybridvision.layers.registry import register_attn

__all__ = [
    "reflect_pad2d",
    "position_grid",
    "neighbourhoods",
    "san_aggregate",
    "SelfAttention2d",
    "PairwiseSelfAttention",
    "PatchwiseSelfAttention",
    "SANBlock",
    "SANTransition",
]

Aggregation = Literal["shift", "unfold"]
SAType = Literal["pairwise", "patchwise"]


# --------------------------------------------------------------------------------------------
# Functional pieces
# --------------------------------------------------------------------------------------------


def _reflect_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a reflection-padded axis of length ``n + 2·pad`` that stay valid for any pad.

    Mirror without repeating the edge (…2 1 [0 1 2 … n−1] n−2 …), period 2(n−1); reflecting as
    often as needed lets a 7×7 window run on a 2×2 map (tiny CPU presets), where one reflection
    (``F.pad(mode="reflect")``) would fail.
    """
    idx = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def reflect_pad2d(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflection-pad the last two dims by ``pad``: ``[..., H, W] -> [..., H+2P, W+2P]``.

    Uses ``F.pad(mode="reflect")`` when it is defined (``pad < H, W``) and an index gather
    with repeated reflection otherwise; both agree wherever the first is defined.
    """
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    if pad < h and pad < w:
        return F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = x.index_select(-2, _reflect_index(h, pad, x.device))
    return x.index_select(-1, _reflect_index(w, pad, x.device))


def position_grid(
    height: int, width: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Pixel coordinates in [−1, 1]: ``[1, 2, H, W]``, channel 0 = x (along W), channel 1 = y.

    Same values as ``torch.linspace(-1, 1, n)`` (a single pixel sits at −1), written with
    ``arange`` because the ONNX exporter turns ``linspace`` into float64 constants.
    """

    def axis(n: int) -> torch.Tensor:
        step = 2.0 / (n - 1) if n > 1 else 0.0
        return torch.arange(n, device=device, dtype=dtype) * step - 1.0

    gy, gx = torch.meshgrid(axis(height), axis(width), indexing="ij")  # [H, W] each
    return torch.stack([gx, gy]).unsqueeze(0)


def neighbourhoods(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Every k×k reflection-padded window: ``[B, C, H, W] -> [B, C, K, H, W]`` (j = dy·k + dx)."""
    b, c, h, w = x.shape
    cols = F.unfold(reflect_pad2d(x, kernel_size // 2), kernel_size)  # [B, C·K, L], channel-major
    return cols.view(b, c, kernel_size * kernel_size, h, w)


class _ShiftAggregation(torch.autograd.Function):
    """y[b, s, w] = Σ_j weight[b, w, j] · value_padded[b, s, w, shifted by offset j].

    Saves only its two inputs; the K-fold expansion of the values never exists.
    """

    @staticmethod
    def forward(
        ctx, value_padded: torch.Tensor, weight: torch.Tensor, kernel_size: int
    ) -> torch.Tensor:
        # value_padded [B, S, C_w, H+2P, W+2P], weight [B, C_w, K, H, W]
        h, w = weight.shape[-2:]
        out = value_padded.new_zeros(value_padded.shape[:3] + (h, w))  # [B, S, C_w, H, W]
        for j in range(kernel_size * kernel_size):
            dy, dx = divmod(j, kernel_size)
            out.addcmul_(value_padded[..., dy : dy + h, dx : dx + w], weight[:, None, :, j])
        ctx.save_for_backward(value_padded, weight)
        ctx.kernel_size = kernel_size
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        value_padded, weight = ctx.saved_tensors
        k = ctx.kernel_size
        h, w = weight.shape[-2:]
        grad_value = grad_weight = None
        if ctx.needs_input_grad[0]:
            # Scatter each offset's contribution back onto the padded grid; the reflection pad's
            # own backward (outside this function) folds the border back into the image.
            grad_value = torch.zeros_like(value_padded)
            for j in range(k * k):
                dy, dx = divmod(j, k)
                grad_value[..., dy : dy + h, dx : dx + w].addcmul_(grad_out, weight[:, None, :, j])
        if ctx.needs_input_grad[1]:
            grad_weight = torch.empty_like(weight)
            for j in range(k * k):
                dy, dx = divmod(j, k)
                # sum over the S value channels that share weight channel w
                shifted = value_padded[..., dy : dy + h, dx : dx + w]
                grad_weight[:, :, j] = (grad_out * shifted).sum(1)
        return grad_value, grad_weight, None


def _aggregate_unfold(value: torch.Tensor, weight: torch.Tensor, kernel_size: int) -> torch.Tensor:
    b, c_v, h, w = value.shape
    c_w = weight.shape[1]
    cols = neighbourhoods(value, kernel_size)  # [B, C_v, K, H, W]
    cols = cols.view(b, c_v // c_w, c_w, kernel_size * kernel_size, h, w)  # channel c = s·C_w + w
    return (cols * weight.unsqueeze(1)).sum(3).view(b, c_v, h, w)


def _aggregate_shift_autograd(
    value_padded: torch.Tensor, weight: torch.Tensor, k: int
) -> torch.Tensor:
    # Same loop written with plain differentiable ops: used where a custom autograd.Function is
    # unwelcome (ONNX export, tracing, torch.compile, double backward). Memory O(C_v·H·W) in the
    # forward, but autograd's slice-backward is slower than _ShiftAggregation.backward.
    h, w = weight.shape[-2:]
    out = None
    for j in range(k * k):
        dy, dx = divmod(j, k)
        term = value_padded[..., dy : dy + h, dx : dx + w] * weight[:, None, :, j]
        out = term if out is None else out + term
    return out


def san_aggregate(
    value: torch.Tensor, weight: torch.Tensor, kernel_size: int, *, method: Aggregation = "shift"
) -> torch.Tensor:
    """SAN aggregation y_i = Σ_j α_ij ⊙ β(x_j) over reflection-padded k×k windows.

    Args:
        value: β(x), ``[B, C_v, H, W]``.
        weight: α, ``[B, C_w, K, H, W]`` with ``C_v % C_w == 0``; weight channel w applies to value
            channels w, w + C_w, w + 2·C_w, ….
        kernel_size: window side k (odd).
        method: ``"shift"`` (lean: loop over the K offsets, O(C_v·H·W) memory) or ``"unfold"``
            (reference: materialises ``[B, C_v·K, L]``).

    Returns:
        ``[B, C_v, H, W]``.
    """
    b, c_v, h, w = value.shape
    c_w = weight.shape[1]
    if kernel_size % 2 != 1:
        raise ValueError(f"SAN kernel_size must be odd, got {kernel_size}")
    if c_v % c_w or weight.shape != (b, c_w, kernel_size * kernel_size, h, w):
        raise ValueError(
            f"weight {tuple(weight.shape)} does not fit value {tuple(value.shape)} "
            f"and k={kernel_size}"
        )
    if method == "unfold":
        return _aggregate_unfold(value, weight, kernel_size)
    if method != "shift":
        raise ValueError(f"unknown SAN aggregation {method!r}; use 'shift' or 'unfold'")
    # One dtype for the in-place accumulation (under autocast the softmax weights are float32
    # while the values are half); the unfold path gets the same promotion from broadcasting.
    dtype = torch.promote_types(value.dtype, weight.dtype)
    value, weight = value.to(dtype), weight.to(dtype)
    padded = reflect_pad2d(value, kernel_size // 2)  # [B, C_v, H+2P, W+2P]
    value_padded = padded.reshape(b, c_v // c_w, c_w, *padded.shape[-2:])  # c = s·C_w + w
    if _plain_autograd_wanted():
        out = _aggregate_shift_autograd(value_padded, weight, kernel_size)
    else:
        out = _ShiftAggregation.apply(value_padded, weight, kernel_size)
    return out.reshape(b, c_v, h, w)


def _plain_autograd_wanted() -> bool:
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
    )


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class SelfAttention2d(nn.Module):
    """Shared part of the SAN self-attention modules ("SAM"): φ, ψ, β and the aggregation.

    Args:
        in_channels: input channels C.
        rel_channels: relation channels C_r of φ and ψ (C/16 in SAN).
        out_channels: value channels C_v of β, also the output width (C/4 in SAN).
        share_planes: S; the weight net predicts C_w = C_v / S channels.
        kernel_size: window side k.
        aggregation: ``"shift"`` (lean, default) or ``"unfold"`` (reference).

    Shapes: ``[B, C, H, W] -> [B, C_v, H, W]``.
    """

    sa_type: SAType

    def __init__(
        self,
        in_channels: int,
        rel_channels: int,
        out_channels: int,
        share_planes: int = 8,
        kernel_size: int = 7,
        *,
        aggregation: Aggregation = "shift",
    ) -> None:
        super().__init__()
        if rel_channels < 1 or out_channels % share_planes or out_channels < share_planes:
            raise UserInputError(
                f"SAN needs C/16 >= 1 relation channels and C/4 value channels divisible by "
                f"share_planes; got C={in_channels}, C_r={rel_channels}, C_v={out_channels}, "
                f"S={share_planes} (use a width that is a multiple of 32)"
            )
        if kernel_size % 2 != 1:
            raise UserInputError(f"SAN kernel_size must be odd, got {kernel_size}")
        if aggregation not in ("shift", "unfold"):
            raise UserInputError(
                f"unknown SAN aggregation {aggregation!r}; use 'shift' or 'unfold'"
            )
        self.in_channels = in_channels
        self.rel_channels = rel_channels
        self.out_channels = out_channels
        self.share_planes = share_planes
        self.weight_channels = out_channels // share_planes
        self.kernel_size = kernel_size
        self.aggregation = aggregation
        # φ, ψ (relation) and β (value); all with bias as in the paper's code
        self.conv1 = nn.Conv2d(in_channels, rel_channels, 1)
        self.conv2 = nn.Conv2d(in_channels, rel_channels, 1)
        self.conv3 = nn.Conv2d(in_channels, out_channels, 1)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """α: ``[B, C, H, W] -> [B, C_w, K, H, W]``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.attention_weights(x)  # [B, C_w, K, H, W]
        return san_aggregate(self.conv3(x), weight, self.kernel_size, method=self.aggregation)

    def elementwise_macs(self, height: int, width: int) -> int:
        """Multiply-adds per image that FLOP counters miss (they see no conv/matmul here).

        Counted the way the SAN authors' counter (``util/complexity.py`` of hszhao/SAN, reused by
        the thesis) does: the aggregation costs C_v·K per pixel.
        """
        return self.out_channels * self.kernel_size**2 * height * width

    def extra_repr(self) -> str:
        return (
            f"{self.sa_type}, C={self.in_channels}, C_r={self.rel_channels}, "
            f"C_v={self.out_channels}, share={self.share_planes}, k={self.kernel_size}, "
            f"aggregation={self.aggregation}"
        )


class PairwiseSelfAttention(SelfAttention2d):
    """Pairwise SAN self-attention: α_ij = softmax_j γ([φ(x_i) − ψ(x_j), enc(p_i) − enc(p_j)]).

    γ = BN → ReLU → 1×1 (C_r + 2 → C_r, no bias) → BN → ReLU → 1×1 (C_r → C_w); the position
    encoding is a 1×1 conv 2 → 2 of the [−1, 1] pixel grid. Softmax over the K neighbours.
    """

    sa_type = "pairwise"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        c_r, c_w = self.rel_channels, self.weight_channels
        self.conv_w = nn.Sequential(
            nn.BatchNorm2d(c_r + 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_r + 2, c_r, 1, bias=False),
            nn.BatchNorm2d(c_r),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_r, c_w, 1),
        )
        self.conv_p = nn.Conv2d(2, 2, 1)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        k2 = self.kernel_size**2
        # δ = φ(x_i) − ψ(x_j) for every neighbour j
        neigh = neighbourhoods(self.conv2(x), self.kernel_size)  # [B, C_r, K, H, W]
        rel = self.conv1(x).unsqueeze(2) - neigh  # [B, C_r, K, H, W]
        pos = self.conv_p(position_grid(h, w, device=x.device, dtype=x.dtype))  # [1, 2, H, W]
        pos = pos.unsqueeze(2) - neighbourhoods(pos, self.kernel_size)  # [1, 2, K, H, W]
        feats = torch.cat([rel, pos.expand(b, -1, -1, -1, -1)], 1)  # [B, C_r+2, K, H, W]
        # γ is a stack of 1×1 convs: run it on the [K, L] "image" of each sample
        logits = self.conv_w(feats.view(b, -1, k2, h * w))  # [B, C_w, K, L]
        return logits.softmax(dim=2).view(b, -1, k2, h, w)

    def elementwise_macs(self, height: int, width: int) -> int:
        # + the two subtractions (features C_r·K, positions 2·K per pixel), as SAN's counter does
        subtractions = (self.rel_channels + 2) * self.kernel_size**2 * height * width
        return super().elementwise_macs(height, width) + subtractions


class PatchwiseSelfAttention(SelfAttention2d):
    """Patchwise SAN self-attention: α_i = γ([φ(x_i), ψ(x_j) ∀ j ∈ R(i)]), no softmax.

    γ = BN → ReLU → 1×1 (C_r·(K+1) → C_w, no bias) → BN → ReLU → 1×1 (C_w → K·C_w); output channel
    ``c·K + j`` is weight channel c at neighbour j (the paper code's layout).
    """

    sa_type = "patchwise"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        c_r, c_w, k2 = self.rel_channels, self.weight_channels, self.kernel_size**2
        self.conv_w = nn.Sequential(
            nn.BatchNorm2d(c_r * (k2 + 1)),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_r * (k2 + 1), c_w, 1, bias=False),
            nn.BatchNorm2d(c_w),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_w, k2 * c_w, 1),
        )

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        k2 = self.kernel_size**2
        centre = self.conv1(x)  # [B, C_r, H, W]
        patch = neighbourhoods(self.conv2(x), self.kernel_size)  # [B, C_r, K, H, W]
        patch = patch.view(b, -1, h, w)  # [B, C_r·K, H, W], channel c·K + j
        weight = self.conv_w(torch.cat([centre, patch], 1))  # [B, C_w·K, H, W]
        return weight.view(b, -1, k2, h, w)


_SA_TYPES: dict[str, type[SelfAttention2d]] = {
    "pairwise": PairwiseSelfAttention,
    "patchwise": PatchwiseSelfAttention,
}


class SANBlock(nn.Module):
    """SAN residual bottleneck: BN-ReLU → SAM (C → C/4) → BN-ReLU → 1×1 conv C/4 → C (bias) → + x.

    Pre-activation by construction (the paper's design), so it is the same block in the thesis'
    "post-act" and "pre-act" model families.

    Args:
        channels: block width C (input = output).
        sa_type: ``"pairwise"`` or ``"patchwise"``.
        kernel_size: window side k (3 in SAN's first stage, 7 after).
        rel_reduction: r1, C_r = C / r1.
        value_reduction: r2, C_v = C / r2.
        share_planes: S, C_w = C_v / S.
        aggregation: ``"shift"`` (default) or ``"unfold"``.

    Shapes: ``[B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(
        self,
        channels: int,
        sa_type: SAType = "patchwise",
        kernel_size: int = 7,
        *,
        rel_reduction: int = 16,
        value_reduction: int = 4,
        share_planes: int = 8,
        aggregation: Aggregation = "shift",
    ) -> None:
        super().__init__()
        if sa_type not in _SA_TYPES:
            raise UserInputError(f"unknown SAN sa_type {sa_type!r}; use 'pairwise' or 'patchwise'")
        mid = channels // value_reduction
        self.channels = channels
        self.bn1 = nn.BatchNorm2d(channels)
        self.sam = _SA_TYPES[sa_type](
            channels,
            channels // rel_reduction,
            mid,
            share_planes,
            kernel_size,
            aggregation=aggregation,
        )
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv = nn.Conv2d(mid, channels, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))  # [B, C, H, W]
        out = self.relu(self.bn2(self.sam(out)))  # [B, C/4, H, W]
        return self.conv(out) + x  # [B, C, H, W]


class SANTransition(nn.Sequential):
    """SAN transition: BN-ReLU → 2×2 max-pool stride 2 → 1×1 conv (no bias) to the new width.

    Shapes: ``[B, C_in, H, W] -> [B, C_out, H/2, W/2]``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )
        self.in_channels = in_channels
        self.out_channels = out_channels


@register_attn("san_pairwise")
def san_pairwise(channels: int, **kw) -> SANBlock:
    """SAN pairwise bottleneck ``[B, C, H, W] -> [B, C, H, W]``; ``kw`` go to :class:`SANBlock`."""
    return SANBlock(channels, "pairwise", **kw)


@register_attn("san_patchwise")
def san_patchwise(channels: int, **kw) -> SANBlock:
    """SAN patchwise bottleneck ``[B, C, H, W] -> [B, C, H, W]``; ``kw`` to :class:`SANBlock`."""
    return SANBlock(channels, "patchwise", **kw)
