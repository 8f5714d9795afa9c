"""Cost measurements for studies and benchmarks: parameters, FLOPs/MACs, latency, peak memory.

No model imports it (detectron2's FLOP counter, ``utils/analysis.py``, is the model): the
counters walk a model from outside. :func:`model_macs` is thesis B's MAC counter for the hybrid
classifiers (what each SAN layer computes comes from the layer itself,
:meth:`~hybridvision.layers.san.SelfAttention2d.elementwise_macs`); the studies and ``hybridvision
bench`` (:mod:`hybridvision.bench`) build on the rest.

Conventions:
    * FLOPs = 2 · MACs (one multiply-accumulate = one multiply + one add), the convention of
      ``torch.utils.flop_counter`` and of most papers' "FLOPs"; thesis B reports MACs, so use
      :func:`count_macs` (or :func:`model_macs`, thesis B's own counter) to compare with it.
    * Only matrix products are counted (convolutions, linear layers, (b)mm, attention), as in
      fvcore / ``FlopCounterMode``; element-wise ops (norms, activations, softmax) are not.
    * Peak memory is the peak of live tensor bytes *above* what was allocated when ``fn``
      started, so inputs and parameters that exist beforehand are not counted.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
from typing import Any, Literal
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from hybridvision.errors import UserInputError
from hybridvision.layers.san import SelfAttention2d

__all__ = [
    "count_params",
    "count_flops",
    "count_macs",
    "model_macs",
    "gflops",
    "measure_latency",
    "measure_peak_memory",
    "sync",
]

aten = torch.ops.aten

MacConvention = Literal["thesis", "flop_counter"]


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once); buffers are not parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# FlopCounterMode (torch 2.14) has formulas for the CUDA SDPA kernels but not for the CPU
# flash kernel, so a fused attention block would count 0 attention FLOPs on CPU.
def _cpu_sdpa_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flop(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


_EXTRA_FLOP_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}


def _call(model: Callable[..., Any], inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def count_flops(model: Callable[..., Any], inputs: Any) -> int:
    """FLOPs (= 2 · MACs) of one forward pass ``model(inputs)``, with gradients off.

    Args:
        model: a module or any callable.
        inputs: a tensor, a tuple/list of positional arguments or a dict of keyword arguments.

    Uses ``torch.utils.flop_counter.FlopCounterMode``, which counts at the aten level, so it
    sees what actually runs (including SDPA kernels); divide by 1e9 for GFLOPs (:func:`gflops`).
    """
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
    with torch.no_grad(), counter:
        _call(model, inputs)
    return int(counter.get_total_flops())


def count_macs(model: Callable[..., Any], inputs: Any) -> int:
    """Multiply-accumulates of one forward pass: ``count_flops(...) // 2``."""
    return count_flops(model, inputs) // 2


def gflops(model: Callable[..., Any], inputs: Any) -> float:
    """:func:`count_flops` in units of 10⁹."""
    return count_flops(model, inputs) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    runs: int = 7,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Wall-clock time of ``fn()``: median over ``runs`` calls after ``warmup`` calls.

    On CUDA the device is synchronised before and after each call, so queued kernels are
    timed and not just launched.

    Returns:
        ``{"median_ms": float, "runs_ms": list[float]}``.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "runs_ms": times}


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2, where kineto's C++ code prints profiler start/stop lines."""
    for stream in (sys.stderr, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to hide
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak of live CPU tensor bytes during ``fn`` from the profiler's allocator events.

    ``torch.profiler`` with ``profile_memory=True`` records one event per allocation and per
    free of the c10 CPU allocator (+bytes / −bytes, nanosecond timestamps), including
    temporaries that kernels allocate internally. Their running sum in time order is the
    live-byte curve relative to the start; its maximum is the peak. This is exact at the
    allocator level, unlike RSS (page granularity, allocator caching, other threads) and unlike
    tracking op outputs in a dispatch mode (which misses kernel workspaces).

    Caveats: the profiler cannot see the size of blocks allocated before it started, so frees
    of such memory during ``fn`` are ignored (and c10 warns once about it): the result is the
    peak of memory *allocated during* ``fn``, an upper bound of the CUDA-style figure when
    ``fn`` frees older tensors (free ``.grad`` etc. before calling). Memory allocated by
    helper threads that the profiler does not observe is not counted.
    """
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    events = [
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    events.sort(key=lambda t: t[0])  # stable: ties keep recording order
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def measure_peak_memory(fn: Callable[[], Any], device: str | torch.device = "cpu") -> int:
    """Peak bytes of tensor memory allocated during ``fn()`` above the level at its start.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the
    memory already allocated. CPU: the profiler's allocator events (see ``_cpu_peak_bytes``;
    there, frees of tensors allocated before ``fn`` are not seen).
    Results returned by ``fn`` are freed before this function returns, but they count in the
    peak while alive.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    if device.type != "cpu":
        raise ValueError(f"measure_peak_memory supports cpu and cuda devices, not {device}")
    return _cpu_peak_bytes(fn)


# ------------------------------------------------------------------ thesis B's MAC counter


def model_macs(
    model: nn.Module,
    input_size: Sequence[int] = (1, 224, 224),
    *,
    convention: MacConvention = "thesis",
) -> int:
    """Multiply-accumulates of one forward pass on one image of ``input_size`` (C, H, W).

    Runs wherever the model's parameters are; build the model under ``torch.device("meta")``
    to count without memory or compute.

    * ``"thesis"`` reproduces thesis B's Table 3.1 counter (``util/complexity.py`` of hszhao/SAN,
      reused by the thesis; a copy of ``ptflops``): module hooks counting conv and linear MACs
      *plus* conv biases (1 per output), BN (2 per element), ReLU and pooling (1 per element),
      and SAN's subtraction and aggregation ops (:meth:`SelfAttention2d.elementwise_macs`). It
      does *not* count the NL blocks' matrix products (plain tensor code, no module to hook).
      Table 3.1 was measured on 1×224×224 grayscale sketches: ResNet26 gives 2.28 G at 1
      channel, 2.36 G at 3.
    * ``"flop_counter"``: ``FlopCounterMode`` FLOPs / 2 (:func:`count_macs`:
      convolutions, linear layers and the matrix products that actually run) plus the SAN
      elementwise multiply-adds, which the flop counter cannot see.
    """
    param = next(model.parameters())
    x = torch.zeros(1, *input_size, device=param.device, dtype=param.dtype)
    extra = 0

    def san_hook(m: SelfAttention2d, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal extra
        extra += m.elementwise_macs(*inp[0].shape[-2:])

    def ptflops_hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal extra
        if isinstance(m, nn.Conv2d):
            k = math.prod(m.kernel_size) * m.in_channels // m.groups
            extra += out[0].numel() * (k + (m.bias is not None))
        elif isinstance(m, nn.Linear):
            extra += m.in_features * m.out_features
        elif isinstance(m, nn.BatchNorm2d):
            extra += inp[0][0].numel() * (2 if m.affine else 1)
        elif isinstance(m, nn.ReLU):
            extra += out[0].numel()
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            extra += inp[0][0].numel()

    if convention not in ("thesis", "flop_counter"):
        raise UserInputError(
            f"unknown MAC convention {convention!r}; use 'thesis' or 'flop_counter'"
        )
    hooks = []
    was_training = model.training
    model.eval()
    try:
        for m in model.modules():
            if isinstance(m, SelfAttention2d):
                hooks.append(m.register_forward_hook(san_hook))
            elif convention == "thesis":
                hooks.append(m.register_forward_hook(ptflops_hook))
        if convention == "flop_counter":
            return count_macs(model, x) + extra
        with torch.no_grad():
            model(x)
        return extra
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
