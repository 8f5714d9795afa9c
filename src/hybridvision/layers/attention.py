"""Non-local self-attention blocks (Wang et al., CVPR 2018, "Non-local Neural Networks").

Symbols used in shapes below:
    B   batch size
    C   block channels (input = output)
    H,W input spatial size;  h,w the query grid (H,W, or about half with ``reduce``)
    N   query positions = h·w
    M   key positions (N, or about N/4 with ``sub_sample``)
    d   θ/φ channels (C / reduction; C for the ``gaussian`` mode)
    dv  g channels (C / g_reduction)

The block computes y_i = (1/C(x)) Σ_j f(x_i, x_j) g(x_j) followed by z = W(y) + x:

=====================  ====================================  ==========================
mode                   f(x_i, x_j)                           normaliser C(x)
=====================  ====================================  ==========================
``embedded_gaussian``  exp(s · θ(x_i)ᵀ φ(x_j))               Σ_j f   (softmax)
``gaussian``           exp(s · x_iᵀ x_j)                     Σ_j f   (softmax)
``dot_product``        θ(x_i)ᵀ φ(x_j)                        M       (number of keys)
``concatenation``      ReLU(w_fᵀ [θ(x_i); φ(x_j)])            M
=====================  ====================================  ==========================

``fused=True`` never builds the [B, N, M] matrix where the maths allows it:

* softmax modes go through ``torch.nn.functional.scaled_dot_product_attention`` (flash or
  memory-efficient kernels on CPU and CUDA);
* ``dot_product`` uses associativity, θ (φᵀ g) / M — O(N·d·dv) time, O(d·dv) extra memory;
* ``concatenation`` is exact in O((N + M) log M): a 1×1 conv on [θ_i; φ_j] splits into
  a_i + b_j, and ReLU(a_i + b_j) > 0 iff b_j > −a_i, so y_i = (a_i Σ_{b_j>−a_i} g_j +
  Σ_{b_j>−a_i} b_j g_j) / M is two prefix sums over keys sorted by b, read at a binary-search
  position.

``fused=False`` is the naive reference (explicit matrix), kept for tests and
:meth:`NonLocal2d.attention_matrix`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridvision.errors import UserInputError
from hybridvision.layers.blocks import group_norm
from hybridvision.layers.registry import register_attn

__all__ = ["NonLocal2d", "NL_MODES"]

NL_MODES = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")
_SOFTMAX_MODES = ("embedded_gaussian", "gaussian")
_NORMS = (None, "bn", "gn")
_INITS = ("normal", "kaiming", "torch")


def _make_norm(kind: str | None, channels: int) -> nn.Module | None:
    if kind is None:
        return None
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    return group_norm(channels)


def _tokens(t: torch.Tensor) -> torch.Tensor:
    """[B, c, h, w] -> contiguous [B, h·w, c] (SDPA kernels need a unit last-dim stride)."""
    return t.flatten(2).transpose(1, 2).contiguous()


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    """softmax(s·q kᵀ) v for q [B, N, d], k/v [B, M, d] (equal d) via SDPA, one head."""
    return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=scale)[:, 0]


class NonLocal2d(nn.Module):
    """Non-local block of Wang et al. (CVPR 2018) with the variants the theses use.

    Maps ``[B, C, H, W] -> [B, C, H, W]`` as ``z = W(y) + x`` (see the module docstring).

    Args:
        channels: C, input and output channels.
        mode: pairwise function, one of ``embedded_gaussian``, ``gaussian``, ``dot_product``,
            ``concatenation`` (Wang et al. §3.2).
        reduction: θ/φ have ``C // reduction`` channels (Wang et al.: 2; thesis B: 8).
        g_reduction: g has ``C // g_reduction`` channels; defaults to ``reduction``
            (thesis B: 4).
        sub_sample: 2×2 max-pool on φ and g (keys and values) only (Wang et al. §4). Odd
            sizes keep their last row/column (``ceil_mode``), so no pixel is dropped and 1×1
            maps still work.
        reduce: a stride-2 1×1 conv (C→C, with bias) on the input before θ/φ/g (thesis A,
            "CornerNet-64"); W's output is nearest-upsampled back to H×W before the sum.
        norm: ``None``, ``"bn"`` or ``"gn"`` in the output projection W.
        zero_init: start as the identity: zero the last norm's γ (Wang et al.) or, without a
            norm after the conv (``norm=None`` or ``out_act``), W's conv weight and bias.
        preact: BN-ReLU on the input before everything else (thesis B, pre-activation); the
            residual still adds the raw input.
        scale: for softmax modes, ``True`` multiplies logits by 1/√d (Wang et al.'s code
            ``USE_SCALE``; mmcv ``use_scale``), a float uses that factor, ``False`` uses 1.
        out_act: W = [norm]-ReLU-1×1 conv (with bias) instead of 1×1 conv-[norm] (thesis B).
        fused: compute without the [B, N, M] matrix where exact (module docstring).
        init: ``"normal"`` (std 0.01, zero biases: Wang et al. / mmcv), ``"kaiming"``
            (He normal, fan_out, as thesis B's code), ``"torch"`` (PyTorch's defaults,
            as thesis A's code).
        qkv_bias: bias on the θ/φ/g convs (all reference codes have it).
    """

    def __init__(
        self,
        channels: int,
        *,
        mode: Literal["embedded_gaussian", "gaussian", "dot_product", "concatenation"] = (
            "embedded_gaussian"
        ),
        reduction: int = 2,
        g_reduction: int | None = None,
        sub_sample: bool = False,
        reduce: bool = False,
        norm: Literal["bn", "gn"] | None = None,
        zero_init: bool = True,
        preact: bool = False,
        scale: bool | float = False,
        out_act: bool = False,
        fused: bool = True,
        init: Literal["normal", "kaiming", "torch"] = "normal",
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if mode not in NL_MODES:
            raise UserInputError(
                f"NonLocal2d: unknown mode {mode!r}; use one of {', '.join(NL_MODES)}"
            )
        if norm not in _NORMS:
            raise UserInputError(f"NonLocal2d: unknown norm {norm!r}; use None, 'bn' or 'gn'")
        if init not in _INITS:
            raise UserInputError(f"NonLocal2d: unknown init {init!r}; use one of {_INITS}")
        g_reduction = reduction if g_reduction is None else g_reduction
        if channels < 1 or reduction < 1 or g_reduction < 1:
            raise UserInputError(
                f"NonLocal2d: channels={channels}, reduction={reduction}, "
                f"g_reduction={g_reduction} must all be >= 1"
            )
        if scale is not False and mode not in _SOFTMAX_MODES:
            raise UserInputError(
                f"NonLocal2d: scale only applies to softmax modes {_SOFTMAX_MODES}, not {mode!r}"
            )
        self.channels = channels
        self.mode = mode
        self.sub_sample = sub_sample
        self.reduce = reduce
        self.fused = fused
        self.inter_channels = max(1, channels // reduction)  # d
        self.g_channels = max(1, channels // g_reduction)  # dv
        d, dv = self.inter_channels, self.g_channels

        self.pre = (
            nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            if preact
            else nn.Identity()
        )
        self.down = nn.Conv2d(channels, channels, 1, stride=2) if reduce else None
        if mode == "gaussian":
            # f uses the (possibly reduced) input itself as query and key.
            self.theta = self.phi = None
            d = self.inter_channels = channels
        else:
            self.theta = nn.Conv2d(channels, d, 1, bias=qkv_bias)
            self.phi = nn.Conv2d(channels, d, 1, bias=qkv_bias)
        self.g = nn.Conv2d(channels, dv, 1, bias=qkv_bias)
        # w_f of Wang et al. eq. (4); mmcv has it without bias.
        self.concat_project = (
            nn.Conv2d(2 * d, 1, 1, bias=False) if mode == "concatenation" else None
        )
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if sub_sample else nn.Identity()
        if scale is True:
            self.scale = 1.0 / math.sqrt(d)
        elif scale is False:
            self.scale = 1.0
        else:
            self.scale = float(scale)

        if out_act:
            n = _make_norm(norm, dv)
            layers = [n] if n is not None else []
            # not in place: without a norm, y can be a view of SDPA's output, saved for backward
            self.W = nn.Sequential(*layers, nn.ReLU(), nn.Conv2d(dv, channels, 1))
        else:
            n = _make_norm(norm, channels)
            conv = nn.Conv2d(dv, channels, 1, bias=n is None)
            self.W = nn.Sequential(conv, n) if n is not None else nn.Sequential(conv)
        self._init_weights(init, zero_init)

    def _init_weights(self, init: str, zero_init: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and init != "torch":
                if init == "normal":
                    nn.init.normal_(m.weight, std=0.01)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init:
            last = self.W[-1]
            # With a norm last, γ = 0 (β is 0) makes W(y) ≡ 0; otherwise zero the conv.
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode}, d={self.inter_channels}, dv={self.g_channels}, "
            f"sub_sample={self.sub_sample}, reduce={self.reduce}, scale={self.scale:.4g}, "
            f"fused={self.fused}"
        )

    # ------------------------------------------------------------------ pieces
    def _embed(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int], tuple[int, int]]:
        """Pre-activation, reduction and projections.

        Returns q [B, N, d], k [B, M, d], v [B, M, dv], the query grid (h, w) and the key
        grid (hk, wk).
        """
        x = self.pre(x)
        if self.down is not None:
            x = self.down(x)  # [B, C, h, w]
        h, w = x.shape[-2:]
        theta = x if self.theta is None else self.theta(x)  # [B, d, h, w]
        phi = self.pool(x if self.phi is None else self.phi(x))  # [B, d, hk, wk]
        g = self.pool(self.g(x))  # [B, dv, hk, wk]
        hk, wk = phi.shape[-2:]
        return _tokens(theta), _tokens(phi), _tokens(g), (h, w), (hk, wk)

    def _concat_ab(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split w_fᵀ[θ_i; φ_j] into a_i + b_j: a [B, N], b [B, M]."""
        wf = self.concat_project.weight.flatten()  # [2d]
        d = q.shape[-1]
        return q @ wf[:d], k @ wf[d:]

    def _weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Naive normalised pairwise weights f/C(x): [B, n, M] for queries q [B, n, d]."""
        m = k.shape[1]
        if self.mode in _SOFTMAX_MODES:
            logits = q @ k.transpose(1, 2)  # [B, n, M]
            if self.scale != 1.0:  # skip a second [B, n, M] buffer when there is no scale
                logits = logits * self.scale
            return torch.softmax(logits, dim=-1)
        if self.mode == "dot_product":
            return q @ k.transpose(1, 2) / m
        # concatenation, literally as Wang et al. / mmcv: the 1×1 conv w_f on the
        # concatenated pair features [θ_i; φ_j] for every (i, j).
        n = q.shape[1]
        qi = q.transpose(1, 2)[:, :, :, None].expand(-1, -1, n, m)  # [B, d, n, M]
        kj = k.transpose(1, 2)[:, :, None, :].expand(-1, -1, n, m)  # [B, d, n, M]
        f = F.relu(self.concat_project(torch.cat([qi, kj], dim=1)))  # [B, 1, n, M]
        return f.squeeze(1) / m

    def _aggregate_fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """y [B, N, dv] without the [B, N, M] matrix."""
        m, dv = k.shape[1], v.shape[-1]
        if self.mode in _SOFTMAX_MODES:
            # SDPA kernels need equal head dims; zero channels change neither q·k nor the
            # first dv output channels, and cost O((N + M)·|d − dv|) memory.
            dh = max(q.shape[-1], dv)
            if q.shape[-1] < dh:
                q, k = F.pad(q, (0, dh - q.shape[-1])), F.pad(k, (0, dh - k.shape[-1]))
            if dv < dh:
                v = F.pad(v, (0, dh - dv))
            return _softmax_attention(q, k, v, self.scale)[:, :, :dv]  # [B, N, dv]
        if self.mode == "dot_product":
            # (θ φᵀ) g = θ (φᵀ g): [B, d, dv] instead of [B, N, M].
            return q @ (k.transpose(1, 2) @ v) / m
        return self._concat_sorted(q, k, v)

    def _concat_sorted(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Exact concatenation-mode aggregation in O((N + M) log M) (module docstring)."""
        a, b = self._concat_ab(q, k)  # [B, N], [B, M]
        m, dv = k.shape[1], v.shape[-1]
        # Ascending −b = descending b; ReLU(a_i + b_j) > 0  <=>  −b_j < a_i exactly in IEEE
        # arithmetic, so the active keys of query i are the first cnt_i sorted ones.
        neg_b, order = torch.sort(-b, dim=1)  # [B, M]
        v_s = v.gather(1, order[:, :, None].expand(-1, -1, dv))  # [B, M, dv]
        zero = v_s.new_zeros(v_s.shape[0], 1, dv)
        cum_v = torch.cat([zero, v_s.cumsum(1)], 1)  # [B, M+1, dv]
        cum_bv = torch.cat([zero, (-neg_b[:, :, None] * v_s).cumsum(1)], 1)  # [B, M+1, dv]
        cnt = torch.searchsorted(neg_b.detach().contiguous(), a.detach().contiguous())  # [B, N]
        idx = cnt[:, :, None].expand(-1, -1, dv)
        # ReLU'(0) = 0 in PyTorch and ties (a_i + b_j = 0) are excluded here too, so the
        # gradients match the naive path as well as the values.
        return (a[:, :, None] * cum_v.gather(1, idx) + cum_bv.gather(1, idx)) / m

    # ------------------------------------------------------------------ API
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> z [B, C, H, W]."""
        q, k, v, (h, w), _ = self._embed(x)
        if self.fused:
            y = self._aggregate_fused(q, k, v)  # [B, N, dv]
        else:
            y = self._weights(q, k) @ v  # [B, N, M] @ [B, M, dv]
        del q, k, v  # let W and the sum reuse their memory (autograd keeps what it needs)
        y = y.transpose(1, 2).reshape(x.shape[0], self.g_channels, h, w)
        out = self.W(y)  # [B, C, h, w]
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="nearest")
        return x + out

    @torch.no_grad()
    def attention_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """The naive normalised weights [B, N, M] (queries on the h×w grid, keys hk×wk).

        Memory is O(N·M): for small inputs, tests and plots only.
        """
        q, k, _, _, _ = self._embed(x)
        return self._weights(q, k)

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor, query_yx: tuple[int, int]) -> torch.Tensor:
        """Attention weights of one query pixel over all keys: ``[B, hk, wk]``.

        Args:
            x: input ``[B, C, H, W]``.
            query_yx: (row, col) of the query in *input* coordinates. With ``reduce`` it is
                mapped to the reduced cell whose output the nearest upsampling copies there.

        The key grid is the input grid divided by :attr:`key_stride` (2 per ``reduce`` and per
        ``sub_sample``); key cell (p, q) covers input pixels
        ``[p·s, (p+1)·s) × [q·s, (q+1)·s)``
        with s = ``key_stride``. Softmax modes sum to 1; the others are f/M as used in y.
        """
        H, W = x.shape[-2:]
        qy, qx = (int(c) for c in query_yx)
        if not (0 <= qy < H and 0 <= qx < W):
            raise UserInputError(
                f"attention_map: query (y={qy}, x={qx}) is outside the {H}x{W} feature map; "
                f"pick 0 <= y < {H} and 0 <= x < {W}"
            )
        q, k, _, (h, w), (hk, wk) = self._embed(x)
        if (h, w) != (H, W):
            # Same index arithmetic as forward's nearest upsampling, by upsampling indices.
            cells = torch.arange(h * w, dtype=torch.float64, device=x.device).view(1, 1, h, w)
            i = int(F.interpolate(cells, size=(H, W), mode="nearest")[0, 0, qy, qx])
        else:
            i = qy * w + qx
        return self._weights(q[:, i : i + 1], k).reshape(x.shape[0], hk, wk)

    @property
    def key_stride(self) -> int:
        """Input pixels per key cell along each axis."""
        return 2 ** (int(self.reduce) + int(self.sub_sample))


# ---------------------------------------------------------------------- presets
def _preset(name: str, **defaults: Any):
    def factory(channels: int, **kw: Any) -> NonLocal2d:
        return NonLocal2d(channels, **{**defaults, **kw})

    factory.__name__ = name
    factory.__doc__ = f"``NonLocal2d`` preset {name!r}: {defaults} (keyword overrides allowed)."
    return register_attn(name)(factory)


# Wang et al. 2018 / mmcv NonLocal2d defaults: C/2, max-pool sub-sampling of φ and g, 1/√d,
# BN on W with γ = 0 (identity at start), N(0, 0.01) convs.
_WANG = dict(reduction=2, sub_sample=True, norm="bn", zero_init=True, init="normal")
_preset("nonlocal", mode="embedded_gaussian", scale=True, **_WANG)
for _mode in NL_MODES:
    _preset(f"nonlocal_{_mode}", mode=_mode, scale=_mode == "embedded_gaussian", **_WANG)

# Thesis A (Código 3.4): θ, φ, g 1×1 to C/2, softmax without scale, W 1×1 conv to
# C, no norm, PyTorch default init (not identity at start); ``reduce=True`` gives its
# "CornerNet-64" variant (Código 3.5).
_preset(
    "nonlocal_thesis_a",
    mode="embedded_gaussian",
    reduction=2,
    sub_sample=False,
    norm=None,
    zero_init=False,
    scale=False,
    init="torch",
)

# Thesis B (Fig. 3.5; SPEC §B): BN-ReLU on the input; θ, φ: C→C/8, g: C→C/4 (with
# bias); 2×2 max-pool on φ and g; f = θᵀφ / N_keys; W = BN-ReLU-1×1 conv C/4→C (bias);
# Kaiming init.
_preset(
    "nonlocal_thesis_b",
    mode="dot_product",
    reduction=8,
    g_reduction=4,
    sub_sample=True,
    preact=True,
    norm="bn",
    out_act=True,
    zero_init=False,
    init="kaiming",
)
