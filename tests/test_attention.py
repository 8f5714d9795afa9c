"""Oracles for the non-local family (hybridvision.layers.attention).

The naive path (explicit [B, N, M] matrix, concatenation literally as a 1×1 conv on paired
features) is the reference for the fused kernels; presets are checked against hand counts
and a hand-written forward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from hybridvision.errors import UserInputError
from hybridvision.evaluation.cost import measure_peak_memory
from hybridvision.layers import create_attn, list_attn
from hybridvision.layers.attention import NL_MODES, NonLocal2d

B, C, H, W = 2, 16, 6, 8


def _block(mode: str, **kw) -> NonLocal2d:
    # Kaiming init and no zero-init so the attention term is O(1), not hidden by the residual;
    # g_reduction != reduction exercises SDPA's padding to equal head dims.
    torch.manual_seed(0)
    defaults = dict(
        mode=mode,
        reduction=2,
        g_reduction=4,
        zero_init=False,
        init="kaiming",
        norm="bn",
        scale=mode == "embedded_gaussian",
    )
    return NonLocal2d(C, **{**defaults, **kw}).double()


def _input(*shape: int) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(*(shape or (B, C, H, W)), dtype=torch.float64)


def _run(block: NonLocal2d, x: torch.Tensor, fused: bool, grad_out: torch.Tensor):
    block.fused = fused
    x = x.clone().requires_grad_(True)
    block.zero_grad(set_to_none=True)
    y = block(x)
    y.backward(grad_out)
    grads = {n: p.grad.clone() for n, p in block.named_parameters()}
    return y.detach(), x.grad.clone(), grads


@pytest.mark.parametrize("reduce", [False, True], ids=["full", "reduce"])
@pytest.mark.parametrize("sub_sample", [False, True], ids=["dense", "subsample"])
@pytest.mark.parametrize("mode", NL_MODES)
def test_fused_matches_naive_forward_backward(mode, sub_sample, reduce):
    block = _block(mode, sub_sample=sub_sample, reduce=reduce).train()
    x = _input()
    torch.manual_seed(2)
    grad_out = torch.randn_like(x)
    y_f, gx_f, gp_f = _run(block, x, True, grad_out)
    y_n, gx_n, gp_n = _run(block, x, False, grad_out)
    # The attention term must matter, or the comparison would be vacuous.
    assert (y_n - x).abs().max() > 1e-2
    torch.testing.assert_close(y_f, y_n, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(gx_f, gx_n, atol=1e-10, rtol=1e-9)
    assert gp_f.keys() == gp_n.keys()
    for name in gp_n:
        torch.testing.assert_close(gp_f[name], gp_n[name], atol=1e-10, rtol=1e-9, msg=name)


@pytest.mark.parametrize("mode", NL_MODES)
def test_fused_matches_naive_float32(mode):
    block = _block(mode, sub_sample=True).float().eval()
    x = _input().float()
    with torch.no_grad():
        block.fused = True
        y_f = block(x)
        block.fused = False
        y_n = block(x)
    torch.testing.assert_close(y_f, y_n, atol=1e-5, rtol=1e-5)


def test_concatenation_case_has_active_and_inactive_pairs():
    # The sorted-prefix-sum path is only tested if some ReLU(a_i + b_j) are 0 and some not.
    block = _block("concatenation")
    f = block.attention_matrix(_input())
    frac = (f > 0).double().mean().item()
    assert 0.1 < frac < 0.9


@pytest.mark.parametrize("mode", ["embedded_gaussian", "gaussian"])
def test_softmax_modes_run_on_flash_kernel(mode):
    # Restricting SDPA to the flash backend raises if the inputs would fall back to the math
    # kernel (which builds the full matrix): shapes, strides and head dims must qualify.
    block = _block(mode, sub_sample=True).float()
    x = _input().float().requires_grad_(True)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        block(x).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("mode", NL_MODES)
def test_fused_does_not_materialise_the_matrix(mode):
    # N = M = 64·64 = 4096: one float32 [1, N, M] matrix is 64 MiB; fused must stay far below.
    block = NonLocal2d(8, mode=mode, zero_init=False).eval()
    x = torch.randn(1, 8, 64, 64)
    n = 64 * 64
    matrix_bytes = n * n * 4
    with torch.no_grad():
        if mode != "concatenation":  # its naive path needs [1, 2d, N, M] features: 512 MiB
            block.fused = False
            assert measure_peak_memory(lambda: block(x)) >= matrix_bytes
        block.fused = True
        fused = measure_peak_memory(lambda: block(x))
    assert fused < matrix_bytes / 16


NL_PRESETS = [n for n in list_attn() if n.startswith("nonlocal")]


def test_presets_registered():
    expected = {"nonlocal", "nonlocal_thesis_a", "nonlocal_thesis_b"}
    expected |= {f"nonlocal_{m}" for m in NL_MODES}
    assert expected <= set(NL_PRESETS)


@pytest.mark.parametrize("name", NL_PRESETS)
@pytest.mark.parametrize("size", [(6, 8), (5, 7)], ids=["even", "odd"])
def test_presets_build_and_keep_shape(name, size):
    block = create_attn(name, C)
    x = torch.randn(B, C, *size, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    # reduce (the thesis-A "CornerNet-64" variant) with odd sizes as well
    block = create_attn(name, C, reduce=True)
    assert block(x).shape == x.shape


@pytest.mark.parametrize(
    "name, kw",
    [
        ("nonlocal", {}),
        *[(f"nonlocal_{m}", {}) for m in NL_MODES],
        ("nonlocal", {"reduce": True}),
        ("nonlocal", {"norm": "gn"}),
        ("nonlocal_thesis_a", {"zero_init": True}),
        ("nonlocal_thesis_b", {"zero_init": True}),
    ],
)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_zero_init_is_identity(name, kw, train):
    block = create_attn(name, C, **kw).train(train)
    x = torch.randn(B, C, 5, 7)
    with torch.no_grad():
        assert torch.equal(block(x), x)


def test_thesis_presets_are_not_identity():
    x = torch.randn(B, C, H, W)
    for name in ("nonlocal_thesis_a", "nonlocal_thesis_b"):
        with torch.no_grad():
            assert not torch.allclose(create_attn(name, C)(x), x)


def test_thesis_b_parameter_count_c256():
    c = 256
    bn = lambda n: 2 * n  # noqa: E731  γ and β (running stats are buffers)
    conv = lambda i, o: i * o + o  # noqa: E731  1×1 conv with bias
    expected = bn(c) + conv(c, c // 8) * 2 + conv(c, c // 4) + bn(c // 4) + conv(c // 4, c)
    assert expected == 50176
    block = create_attn("nonlocal_thesis_b", c)
    assert sum(p.numel() for p in block.parameters()) == expected


def test_thesis_a_parameter_count_c256():
    c = 256
    expected = 3 * (c * c // 2 + c // 2) + (c // 2 * c + c)
    block = create_attn("nonlocal_thesis_a", c)
    assert sum(p.numel() for p in block.parameters()) == expected


def test_thesis_b_forward_matches_hand_written_structure():
    """SPEC §B: BN-ReLU; θ,φ C→C/8, g C→C/4; pool φ,g; f = θᵀφ/N_keys; W = BN-ReLU-conv."""
    torch.manual_seed(0)
    c = 32
    block = create_attn("nonlocal_thesis_b", c).double().eval()
    # non-trivial BN statistics and affine parameters
    for bn in (block.pre[0], block.W[0]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(2, c, 6, 8, dtype=torch.float64)

    def bn_relu(t, bn):
        t = F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False)
        return F.relu(t)

    p = bn_relu(x, block.pre[0])
    theta = F.conv2d(p, block.theta.weight, block.theta.bias).flatten(2)  # [B, C/8, N]
    phi = F.max_pool2d(F.conv2d(p, block.phi.weight, block.phi.bias), 2).flatten(2)
    g = F.max_pool2d(F.conv2d(p, block.g.weight, block.g.bias), 2).flatten(2)  # [B, C/4, M]
    assert theta.shape[1] == c // 8 and g.shape[1] == c // 4 and g.shape[2] == 12
    f = theta.transpose(1, 2) @ phi / phi.shape[-1]  # [B, N, M], no softmax
    y = (f @ g.transpose(1, 2)).transpose(1, 2).reshape(2, c // 4, 6, 8)
    z = F.conv2d(bn_relu(y, block.W[0]), block.W[2].weight, block.W[2].bias) + x
    for fused in (True, False):
        block.fused = fused
        with torch.no_grad():
            torch.testing.assert_close(block(x), z, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("reduce", [False, True], ids=["full", "reduce"])
@pytest.mark.parametrize("sub_sample", [False, True], ids=["dense", "subsample"])
@pytest.mark.parametrize("mode", NL_MODES)
def test_attention_map_is_row_of_naive_matrix(mode, sub_sample, reduce):
    block = _block(mode, sub_sample=sub_sample, reduce=reduce)
    x = _input()
    mat = block.attention_matrix(x)  # [B, N, M]
    h, w = (H // 2, W // 2) if reduce else (H, W)
    hk, wk = ((h + 1) // 2, (w + 1) // 2) if sub_sample else (h, w)
    assert mat.shape == (B, h * w, hk * wk)
    assert block.key_stride == 2 ** (reduce + sub_sample)
    for qy, qx in [(0, 0), (3, 5), (H - 1, W - 1)]:
        amap = block.attention_map(x, (qy, qx))
        assert amap.shape == (B, hk, wk)
        # with reduce, input pixel (y, x) reads reduced cell (y // 2, x // 2) (even sizes)
        row = (qy // 2) * w + qx // 2 if reduce else qy * w + qx
        torch.testing.assert_close(amap.flatten(1), mat[:, row], atol=1e-12, rtol=1e-10)
        if mode in ("embedded_gaussian", "gaussian"):
            torch.testing.assert_close(amap.sum((1, 2)), torch.ones(B, dtype=torch.float64))


def test_attention_matrix_softmax_rows_sum_to_one_and_match_manual():
    block = _block("embedded_gaussian", scale=True)
    x = _input()
    with torch.no_grad():
        th = block.theta(x).flatten(2).transpose(1, 2)
        ph = block.phi(x).flatten(2)
        manual = torch.softmax(th @ ph / (block.inter_channels**0.5), dim=-1)
    torch.testing.assert_close(block.attention_matrix(x), manual)


def test_attention_map_rejects_out_of_range_query():
    block = _block("embedded_gaussian")
    with pytest.raises(UserInputError, match="outside"):
        block.attention_map(_input(), (H, 0))


@pytest.mark.parametrize(
    "kw",
    [{"mode": "softmax"}, {"norm": "ln"}, {"reduction": 0}, {"mode": "dot_product", "scale": True}],
)
def test_bad_options_raise_user_error(kw):
    with pytest.raises(UserInputError):
        NonLocal2d(C, **kw)
