"""Oracles for hybridvision.evaluation.cost and hybridvision.bench: hand-counted parameters and FLOPs, known
allocation sizes for peak memory, a known sleep for latency."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridvision.bench import build_bench_target, compare_models
from hybridvision.evaluation.cost import (
    count_flops,
    count_macs,
    count_params,
    gflops,
    measure_latency,
    measure_peak_memory,
)
from hybridvision.layers.attention import NonLocal2d

MB = 1_000_000


# ---------------------------------------------------------------- parameters
def test_count_params_hand_sum():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3))
    expected = (3 * 4 + 4) + (4 + 4) + (4 * 2 * 9 + 2)  # running stats are buffers
    assert count_params(model) == expected


def test_count_params_shared_once_and_trainable_only():
    lin = nn.Linear(5, 5)
    model = nn.Sequential(lin, nn.ReLU(), lin, nn.Linear(5, 2))
    assert count_params(model) == 30 + 12
    model[3].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 30 + 2


# ---------------------------------------------------------------- FLOPs
def test_flops_linear_is_two_in_out_batch():
    lin = nn.Linear(10, 20)
    x = torch.randn(7, 10)
    assert count_flops(lin, x) == 2 * 10 * 20 * 7
    assert count_macs(lin, x) == 10 * 20 * 7
    assert gflops(lin, x) == pytest.approx(2 * 10 * 20 * 7 / 1e9)


def test_flops_conv_hand_count_and_input_forms():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    x = torch.randn(2, 3, 16, 12)
    expected = 2 * (3 * 9) * 8 * (8 * 6) * 2  # 2 · (Cin·k²) · Cout · Hout·Wout · B
    assert count_flops(conv, x) == expected
    assert count_flops(conv, (x,)) == expected
    assert count_flops(lambda inp: conv(inp), {"inp": x}) == expected


def test_flops_cpu_sdpa_is_counted():
    # torch's FlopCounterMode lacks the CPU flash kernel; we add it: 2·B·N·M·(d + dv).
    q, k, v = torch.randn(2, 1, 40, 8), torch.randn(2, 1, 10, 8), torch.randn(2, 1, 10, 8)
    flops = count_flops(lambda a, b, c: F.scaled_dot_product_attention(a, b, c), (q, k, v))
    assert flops == 2 * 2 * 40 * 10 * (8 + 8)


def test_flops_fused_and_naive_nonlocal_agree():
    block = NonLocal2d(16, mode="embedded_gaussian", zero_init=False).eval()
    x = torch.randn(1, 16, 6, 8)
    block.fused = True
    fused = count_flops(block, x)
    block.fused = False
    naive = count_flops(block, x)
    n, d, c = 48, 8, 16
    convs = 2 * n * (3 * c * d + d * c)  # θ, φ, g and W
    attn = 2 * n * n * d * 2  # θφᵀ and A·g
    assert fused == naive == convs + attn


# ---------------------------------------------------------------- latency
def test_measure_latency_counts_calls_and_times_a_sleep():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.02)

    res = measure_latency(fn, warmup=2, runs=3, device="cpu")
    assert len(calls) == 5
    assert len(res["runs_ms"]) == 3
    assert res["median_ms"] == sorted(res["runs_ms"])[1]
    assert 20.0 <= res["median_ms"] < 200.0  # sleep lower bound; loose upper bound (busy CI)


# ---------------------------------------------------------------- peak memory
def test_peak_memory_single_allocation():
    def fn():
        t = torch.empty(8 * MB, dtype=torch.uint8)
        t.fill_(1)

    peak = measure_peak_memory(fn, "cpu")
    assert 8 * MB <= peak < 8 * MB + 64 * 1024


def test_peak_memory_sequential_vs_overlapping():
    def sequential():
        a = torch.ones(8 * MB, dtype=torch.uint8)
        del a
        b = torch.ones(8 * MB, dtype=torch.uint8)
        del b

    def overlapping():
        a = torch.ones(8 * MB, dtype=torch.uint8)
        b = torch.ones(8 * MB, dtype=torch.uint8)
        del a, b

    seq = measure_peak_memory(sequential, "cpu")
    ovl = measure_peak_memory(overlapping, "cpu")
    assert 8 * MB <= seq < 9 * MB
    assert 16 * MB <= ovl < 17 * MB


def test_peak_memory_counts_kernel_outputs_and_is_relative_to_start():
    a = torch.randn(500, 1000)  # 2 MB, allocated before fn: not counted
    peak = measure_peak_memory(lambda: a @ a.t(), "cpu")  # output 500² floats = 1 MB
    assert 1 * MB <= peak < 2 * MB

    big = [torch.ones(4 * MB, dtype=torch.uint8)]

    def free_then_small():
        big.clear()  # frees 4 MB that existed before fn
        torch.ones(1 * MB, dtype=torch.uint8)

    # CUDA sees the older free (peak above the start level: 0); the CPU profiler cannot, so
    # there the result is the peak of what fn itself allocated (documented upper bound).
    assert measure_peak_memory(free_then_small, "cpu") == 1 * MB


def test_peak_memory_autograd_saved_tensors():
    # exp saves its output for backward: the forward keeps 2 tensors of 4 MB alive at once
    # (x.exp() and its square's input), and backward adds gradients on top.
    x = torch.randn(MB, requires_grad=True)

    def fwd_bwd():
        y = x.exp()
        (y * y).sum().backward()

    peak = measure_peak_memory(fwd_bwd, "cpu")
    assert 8 * MB <= peak < 24 * MB


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_memory_cuda_single_allocation():
    def fn():
        torch.empty(8 * MB, dtype=torch.uint8, device="cuda")

    peak = measure_peak_memory(fn, "cuda")
    assert 8 * MB <= peak < 8 * MB + 2 * 1024 * 1024  # caching allocator rounds to 2 MiB


def test_compare_models_rows_and_reference_ratio():
    from hybridvision.factory import create_model

    targets = [build_bench_target(n, size=64, num_classes=3) for n in ("fcos_demo", "nl_fcos_small")]
    rows = compare_models(targets, runs=3, warmup=1)
    assert [r["name"] for r in rows] == ["fcos_demo", "nl_fcos_small"]
    assert rows[0]["ratio"] == 1.0 and all(len(r["runs_ms"]) == 3 for r in rows)
    for r in rows:
        assert r["params"] == count_params(create_model(r["name"], num_classes=3))
        assert r["task"] == "detection" and r["gflops"] > 0 and r["peak_mb"] > 0
    # the non-local head blocks add parameters and multiply-adds to the same detector
    assert rows[1]["params"] > rows[0]["params"] and rows[1]["gflops"] > rows[0]["gflops"]


def test_torchvision_peer_matches_torchvision_published_counts():
    """ResNet-18 built through ``torchvision:`` has the parameters and MACs that torchvision
    publishes for it (weights metadata; nothing is downloaded)."""
    import torchvision

    meta = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta
    (row,) = compare_models([build_bench_target("torchvision:resnet18", size=224)], runs=1,
                            warmup=0, memory=False)
    assert row["params"] == meta["num_params"] == 11_689_512
    assert row["gflops"] / 2 == pytest.approx(meta["_ops"], rel=1e-3)  # torchvision's "GFLOPS" are MACs
    assert row["peak_mb"] is None and row["task"] == "classification"


def test_unknown_torchvision_model_is_a_user_error():
    from hybridvision.errors import UserInputError

    with pytest.raises(UserInputError, match="torchvision:nope"):
        build_bench_target("torchvision:nope", size=64)
