"""SAN self-attention (Zhao et al., CVPR 2020) against explicit neighbourhood loops.

The oracles below walk pixels and window offsets in plain Python, reflect indices by hand and
apply the weight network one (pixel, neighbour) pair at a time, so they share no indexing code
with ``hybridvision.layers.san``. Everything runs in float64 on maps of a few pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridvision.layers import create_attn
from hybridvision.layers.san import (
    PairwiseSelfAttention,
    PatchwiseSelfAttention,
    SANBlock,
    SANTransition,
    _aggregate_shift_autograd,
    neighbourhoods,
    position_grid,
    reflect_pad2d,
    san_aggregate,
)

DT = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _reflect(i: int, n: int) -> int:
    """Mirror index i into [0, n) without repeating the edge, as often as needed."""
    if n == 1:
        return 0
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def _window(k: int):
    """(j, dy, dx) for the k² offsets in row-major order, centred: dy, dx in [-k//2, k//2]."""
    p = k // 2
    return [(dy * k + dx, dy - p, dx - p) for dy in range(k) for dx in range(k)]


def loop_aggregate(value: torch.Tensor, weight: torch.Tensor, k: int) -> torch.Tensor:
    """y[b, c, y, x] = Σ_j weight[b, c mod C_w, j, y, x] · value[b, c, refl(y+dy), refl(x+dx)]."""
    b, c, h, w = value.shape
    c_w = weight.shape[1]
    wch = torch.arange(c) % c_w  # weight channel of every value channel
    rows = []
    for y in range(h):
        cols = []
        for x in range(w):
            acc = 0
            for j, dy, dx in _window(k):
                yy, xx = _reflect(y + dy, h), _reflect(x + dx, w)
                acc = acc + weight[:, wch, j, y, x] * value[:, :, yy, xx]  # [B, C]
            cols.append(acc)
        rows.append(torch.stack(cols, -1))
    return torch.stack(rows, -2)


def _randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine params, so eval-mode BN is a real per-channel map."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g, dtype=DT))
            m.running_var.copy_(torch.rand(n, generator=g, dtype=DT) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g, dtype=DT) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g, dtype=DT) * 0.1)


def loop_pairwise(m: PairwiseSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Pairwise SAM pixel by pixel: softmax_j γ([φ(x_i) − ψ(x_j), p_i − p_j]) ⊙ β(x_j)."""
    b, _, h, w = x.shape
    k = m.kernel_size
    phi, psi, beta = m.conv1(x), m.conv2(x), m.conv3(x)
    # position grid by hand: channel 0 = x coordinate, channel 1 = y coordinate, both in [-1, 1]
    grid = torch.zeros(1, 2, h, w, dtype=x.dtype)
    for y in range(h):
        for xx in range(w):
            grid[0, 0, y, xx] = -1 + 2 * xx / (w - 1)
            grid[0, 1, y, xx] = -1 + 2 * y / (h - 1)
    pos = m.conv_p(grid)
    c_w = m.weight_channels
    wch = torch.arange(m.out_channels) % c_w
    out = torch.zeros(b, m.out_channels, h, w, dtype=x.dtype)
    for y in range(h):
        for xx in range(w):
            feats, vals = [], []
            for _, dy, dx in _window(k):
                yy, xj = _reflect(y + dy, h), _reflect(xx + dx, w)
                delta = phi[:, :, y, xx] - psi[:, :, yy, xj]  # [B, C_r]
                dpos = (pos[:, :, y, xx] - pos[:, :, yy, xj]).expand(b, -1)  # [B, 2]
                feats.append(torch.cat([delta, dpos], 1))  # [B, C_r + 2]
                vals.append(beta[:, :, yy, xj])
            # γ is per (i, j) pair: run it on the K pairs of pixel i side by side
            logits = m.conv_w(torch.stack(feats, -1)[..., None])[..., 0]  # [B, C_w, K]
            alpha = torch.softmax(logits, dim=-1)
            for j, v in enumerate(vals):
                out[:, :, y, xx] = out[:, :, y, xx] + alpha[:, wch, j] * v
    return out


def loop_patchwise(m: PatchwiseSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Patchwise SAM pixel by pixel: γ([φ(x_i), ψ(x_j) ∀j]) → K weights per channel, no softmax."""
    b, _, h, w = x.shape
    k = m.kernel_size
    k2 = k * k
    phi, psi, beta = m.conv1(x), m.conv2(x), m.conv3(x)
    c_w = m.weight_channels
    wch = torch.arange(m.out_channels) % c_w
    out = torch.zeros(b, m.out_channels, h, w, dtype=x.dtype)
    for y in range(h):
        for xx in range(w):
            coords = [(_reflect(y + dy, h), _reflect(xx + dx, w)) for _, dy, dx in _window(k)]
            # concatenation: φ(x_i), then ψ channel by channel over the K neighbours
            patch = [psi[:, c, yy, xj] for c in range(m.rel_channels) for yy, xj in coords]
            feat = torch.cat([phi[:, :, y, xx], torch.stack(patch, 1)], 1)  # [B, C_r·(K+1)]
            alpha = _conv1x1_seq(m.conv_w, feat).view(b, c_w, k2)  # channel c·K + j
            for j, (yy, xj) in enumerate(coords):
                out[:, :, y, xx] = out[:, :, y, xx] + alpha[:, wch, j] * beta[:, :, yy, xj]
    return out


def _conv1x1_seq(seq: nn.Sequential, v: torch.Tensor) -> torch.Tensor:
    """Run the BN/ReLU/1×1-conv weight net γ on one vector per sample (eval-mode BN)."""
    return seq(v[:, :, None, None])[:, :, 0, 0]


# ----------------------------------------------------------------------------- padding


@pytest.mark.parametrize("h,w,pad", [(5, 6, 1), (5, 6, 2), (2, 2, 3), (1, 3, 3), (3, 1, 2)])
def test_reflect_pad_matches_numpy(h, w, pad):
    """numpy's 'reflect' keeps reflecting for pads wider than the axis: our tiny-map fallback."""
    x = torch.randn(2, 3, h, w, dtype=DT)
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    np.testing.assert_array_equal(reflect_pad2d(x, pad).numpy(), ref)


def test_position_grid_corners():
    g = position_grid(3, 5, dtype=DT)
    assert g.shape == (1, 2, 3, 5)
    assert g[0, 0, 0].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]  # x along W
    assert g[0, 1, :, 0].tolist() == [-1.0, 0.0, 1.0]  # y along H


def test_neighbourhoods_layout():
    x = torch.arange(2 * 4 * 5, dtype=DT).view(1, 2, 4, 5)
    nb = neighbourhoods(x, 3)  # [1, 2, 9, 4, 5]
    for c in range(2):
        for y in range(4):
            for xx in range(5):
                for j, dy, dx in _window(3):
                    assert nb[0, c, j, y, xx] == x[0, c, _reflect(y + dy, 4), _reflect(xx + dx, 5)]


# --------------------------------------------------------------------------- aggregation


@pytest.mark.parametrize("method", ["shift", "unfold"])
@pytest.mark.parametrize("k,h,w,c_v,c_w", [(3, 4, 5, 8, 2), (5, 5, 6, 6, 3), (7, 2, 3, 4, 1)])
def test_aggregation_matches_loop(method, k, h, w, c_v, c_w):
    torch.manual_seed(0)
    value = torch.randn(2, c_v, h, w, dtype=DT, requires_grad=True)
    weight = torch.randn(2, c_w, k * k, h, w, dtype=DT, requires_grad=True)
    g = torch.randn(2, c_v, h, w, dtype=DT)

    ref = loop_aggregate(value, weight, k)
    ref_gv, ref_gw = torch.autograd.grad((ref * g).sum(), (value, weight))
    out = san_aggregate(value, weight, k, method=method)
    gv, gw = torch.autograd.grad((out * g).sum(), (value, weight))

    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gv, ref_gv)
    torch.testing.assert_close(gw, ref_gw)


def test_shift_aggregation_gradcheck():
    torch.manual_seed(0)
    value = torch.randn(1, 4, 3, 4, dtype=DT, requires_grad=True)
    weight = torch.randn(1, 2, 9, 3, 4, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, w: san_aggregate(v, w, 3), (value, weight), fast_mode=True
    )


def test_lean_equals_unfold_and_plain_autograd():
    torch.manual_seed(1)
    k = 7
    value = torch.randn(2, 16, 9, 8, dtype=DT, requires_grad=True)
    weight = torch.randn(2, 2, k * k, 9, 8, dtype=DT, requires_grad=True)
    g = torch.randn(2, 16, 9, 8, dtype=DT)
    outs, grads = [], []
    for fn in (
        lambda v, w: san_aggregate(v, w, k, method="shift"),
        lambda v, w: san_aggregate(v, w, k, method="unfold"),
        # the export/compile-friendly loop (plain autograd), on the same padded layout
        lambda v, w: _aggregate_shift_autograd(
            reflect_pad2d(v, k // 2).view(2, 8, 2, 15, 14), w, k
        ).reshape(2, 16, 9, 8),
    ):
        out = fn(value, weight)
        outs.append(out)
        grads.append(torch.autograd.grad((out * g).sum(), (value, weight)))
    for o, gr in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(o, outs[0])
        torch.testing.assert_close(gr[0], grads[0][0])
        torch.testing.assert_close(gr[1], grads[0][1])


def test_mixed_dtypes_and_memory_formats():
    """Autocast gives float32 softmax weights with half values; channels_last values happen."""
    torch.manual_seed(0)
    value = torch.randn(2, 8, 5, 5).to(memory_format=torch.channels_last)
    weight = torch.randn(2, 2, 9, 5, 5, dtype=DT)
    out = san_aggregate(value, weight, 3)
    assert out.dtype == DT
    torch.testing.assert_close(out, san_aggregate(value, weight, 3, method="unfold"))
    torch.testing.assert_close(out, loop_aggregate(value.to(DT), weight, 3))


@pytest.mark.parametrize("method", ["shift", "unfold"])
def test_share_planes_interleaving(method):
    """A weight non-zero only in channel w affects exactly value channels w, w+C_w, w+2C_w, …"""
    c_v, c_w, k = 12, 4, 3
    value = torch.randn(1, c_v, 4, 4, dtype=DT)
    for wc in range(c_w):
        weight = torch.zeros(1, c_w, k * k, 4, 4, dtype=DT)
        weight[:, wc] = torch.rand(k * k, 4, 4, dtype=DT) + 0.1
        out = san_aggregate(value, weight, k, method=method)
        touched = {c for c in range(c_v) if out[0, c].abs().sum() > 0}
        assert touched == set(range(wc, c_v, c_w))


def test_aggregation_rejects_bad_shapes():
    v = torch.randn(1, 6, 4, 4)
    with pytest.raises(ValueError):
        san_aggregate(v, torch.randn(1, 4, 9, 4, 4), 3)  # 6 % 4 != 0
    with pytest.raises(ValueError):
        san_aggregate(v, torch.randn(1, 2, 9, 4, 4), 4)  # even window
    with pytest.raises(ValueError):
        san_aggregate(v, torch.randn(1, 2, 9, 4, 4), 3, method="im2col")


# ------------------------------------------------------------------ self-attention modules


@pytest.mark.parametrize(
    "cls,loop",
    [(PairwiseSelfAttention, loop_pairwise), (PatchwiseSelfAttention, loop_patchwise)],
)
@pytest.mark.parametrize("k,h,w", [(3, 4, 5), (5, 3, 4)])
def test_sam_matches_pixel_loop(cls, loop, k, h, w):
    """Whole SAM (weights net + softmax/none + aggregation), forward and all gradients."""
    torch.manual_seed(0)
    m = cls(16, 2, 8, share_planes=4, kernel_size=k).to(DT).eval()
    _randomise_bn(m)
    x = torch.randn(2, 16, h, w, dtype=DT, requires_grad=True)
    g = torch.randn(2, 8, h, w, dtype=DT)
    params = [x, *m.parameters()]

    out = m(x)
    grads = torch.autograd.grad((out * g).sum(), params)
    ref = loop(m, x)
    ref_grads = torch.autograd.grad((ref * g).sum(), params)

    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_pairwise_weights_are_a_softmax_patchwise_not():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 5, 5)
    w = PairwiseSelfAttention(32, 2, 8, 8, 3).attention_weights(x)  # [B, C_w, K, H, W]
    torch.testing.assert_close(w.sum(2), torch.ones(2, 1, 5, 5))
    assert (w > 0).all()
    w = PatchwiseSelfAttention(32, 2, 8, 8, 3).attention_weights(x)
    assert not torch.allclose(w.sum(2), torch.ones_like(w.sum(2)))


# ------------------------------------------------------------------------- blocks


def _san_block_params(c: int, k: int, sa_type: str) -> int:
    """Hand count of SPEC §B's SAN bottleneck at width C (r1 = 16, r2 = 4, share 8)."""
    r, v = c // 16, c // 4
    w = v // 8
    n = 2 * c  # bn1
    n += 2 * (c * r + r) + (c * v + v)  # φ, ψ, β with bias
    if sa_type == "pairwise":
        n += 2 * (r + 2) + (r + 2) * r + 2 * r + (r * w + w)  # γ
        n += 2 * 2 + 2  # position conv 2 -> 2
    else:
        n += 2 * r * (k * k + 1) + r * (k * k + 1) * w + 2 * w + (w * k * k * w + k * k * w)
    n += 2 * v + (v * c + c)  # bn2, 1×1 conv C/4 -> C with bias
    return n


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
@pytest.mark.parametrize("c,k", [(64, 3), (256, 7)])
def test_san_block_parameter_count(sa_type, c, k):
    block = SANBlock(c, sa_type, k)
    assert sum(p.numel() for p in block.parameters()) == _san_block_params(c, k, sa_type)


@pytest.mark.parametrize("name", ["san_pairwise", "san_patchwise"])
def test_registered_block_is_residual_and_shape_preserving(name):
    torch.manual_seed(0)
    block = create_attn(name, 64, kernel_size=3)
    assert isinstance(block, SANBlock)
    x = torch.randn(2, 64, 6, 7)
    y = block(x)
    assert y.shape == x.shape
    # the last conv's output is the residual branch: zeroing it leaves the identity
    nn.init.zeros_(block.conv.weight)
    nn.init.zeros_(block.conv.bias)
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_block_shift_equals_unfold(sa_type):
    torch.manual_seed(0)
    a = SANBlock(64, sa_type, 7, aggregation="shift").to(DT)
    b = SANBlock(64, sa_type, 7, aggregation="unfold").to(DT)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 64, 5, 6, dtype=DT)
    torch.testing.assert_close(a(x), b(x))  # train-mode BN: same batch statistics
    # tiny maps: a 7×7 window on 2×2 needs repeated reflection
    x = torch.randn(2, 64, 2, 2, dtype=DT)
    torch.testing.assert_close(a(x), b(x))


def test_san_transition():
    t = SANTransition(8, 16).eval()
    x = torch.randn(2, 8, 6, 6)
    bn = t[0]
    ref = F.conv2d(F.max_pool2d(F.relu(bn(x)), 2), t[3].weight)
    torch.testing.assert_close(t(x), ref)
    assert t(x).shape == (2, 16, 3, 3)
    assert t[3].bias is None
