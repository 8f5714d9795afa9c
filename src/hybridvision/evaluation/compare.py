"""``hybridvision bench``: models side by side — params, GFLOPs, latency and peak memory — in one
process, with torchvision's detectors and classifiers as peers (``torchvision:NAME``).

What each model runs and how large its input is comes from its registered task
(``engine/tasks/``): the task is asked, not an if/else here.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import torch
import torch.nn as nn
import torchvision

from hybridvision.errors import UserInputError
from hybridvision.evaluation.cost import count_flops, count_params, measure_peak_memory, sync
from hybridvision.layers.fusion import fuse_conv_bn
from hybridvision.factory import create_model, create_task, model_task

__all__ = ["BenchTarget", "bench_task", "build_bench_target", "compare_models", "TORCHVISION_PREFIX"]

TORCHVISION_PREFIX = "torchvision:"


@dataclass
class BenchTarget:
    """One model ready to time: ``run()`` is its whole inference call on a fixed random batch.

    hybridvision detectors: forward + ``decode``; torchvision detectors: their eval call
    (transform, forward, post-processing) with ``min_size = max_size =`` the input side, so both
    see the same pixels; classifiers: the forward pass.
    """

    name: str
    task: str  # "detection" | "classification"
    model: nn.Module
    run: Callable[[], Any]


def bench_task(name: str) -> str:
    """``"detection"`` or ``"classification"`` for a registered name or ``torchvision:NAME``."""
    if not name.startswith(TORCHVISION_PREFIX):
        return model_task(name)
    tv_name = name[len(TORCHVISION_PREFIX):]
    if tv_name in torchvision.models.list_models(module=torchvision.models.detection):
        return "detection"
    if tv_name in torchvision.models.list_models(module=torchvision.models):
        return "classification"
    raise UserInputError(
        f"{name}: not a torchvision detection or classification model; e.g. "
        "torchvision:fcos_resnet50_fpn, torchvision:retinanet_resnet50_fpn, torchvision:resnet50 "
        "(torchvision.models.list_models() lists them)")


def build_bench_target(name: str, *, size: int, batch: int = 1, num_classes: int | None = None,
                       in_chans: int = 3, device: str | torch.device = "cpu") -> BenchTarget:
    """A registered model, or ``torchvision:NAME``, with random weights in eval mode on ``device``.

    ``num_classes`` defaults to the task's (80 detection, 1000 classification; 91 for
    torchvision's detectors); ``in_chans`` applies to hybridvision classifiers (1 for grey
    sketches); torchvision models always take 3 channels.
    """
    device = torch.device(device)
    task_name = bench_task(name)
    task = create_task(task_name)
    if name.startswith(TORCHVISION_PREFIX):
        detection = task_name == "detection"
        kwargs: dict[str, Any] = {"weights": None,
                                  "num_classes": num_classes or (91 if detection else task.default_num_classes)}
        if detection:  # random weights, nothing downloaded; resize to the bench size
            kwargs.update(weights_backbone=None, min_size=size, max_size=size)
        model = torchvision.models.get_model(name[len(TORCHVISION_PREFIX):], **kwargs).to(device).eval()
        x = torch.rand(batch, 3, size, size, device=device)
        # torchvision detectors take a list and post-process themselves
        return BenchTarget(name, task_name, model, (lambda: model(list(x))) if detection else (lambda: model(x)))
    model = create_model(name, num_classes=num_classes or task.default_num_classes,
                         **task.input_kwargs(in_chans)).to(device).eval()
    x = torch.rand(batch, task.input_channels(model), size, size, device=device)
    # timed as inference runs it (BN folded into the convs); parameters counted on the model
    return BenchTarget(name, task_name, model, task.inference(fuse_conv_bn(model), x))


def compare_models(targets: list[BenchTarget], *, runs: int = 7, warmup: int = 2,
                   device: str | torch.device = "cpu", memory: bool = True) -> list[dict[str, Any]]:
    """Params, GFLOPs, latency and peak memory of each target, in one process, side by side.

    Timed calls are interleaved — run ``i`` visits the targets in an order rotated by ``i`` — so
    a load change on a shared machine hits every model alike. Latency is the median of ``runs``
    calls after ``warmup`` calls each; ``ratio`` is that median over the first target's.

    Returns one dict per target: ``name, task, params, gflops, median_ms, runs_ms, ratio,
    peak_mb`` (``peak_mb`` is None when ``memory`` is False).
    """
    if not targets:
        raise ValueError("compare_models needs at least one target")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    device = torch.device(device)
    times: list[list[float]] = [[] for _ in targets]
    with torch.inference_mode():
        for t in targets:
            for _ in range(warmup):
                t.run()
        for i in range(runs):
            for k in range(len(targets)):
                j = (i + k) % len(targets)
                sync(device)
                t0 = time.perf_counter()
                targets[j].run()
                sync(device)
                times[j].append((time.perf_counter() - t0) * 1e3)
        peaks = [measure_peak_memory(t.run, device) / 2**20 if memory else None for t in targets]
    rows = []
    for t, ms, peak in zip(targets, times, peaks):
        rows.append({
            "name": t.name, "task": t.task, "params": count_params(t.model),
            "gflops": count_flops(t.run, ()) / 1e9, "median_ms": statistics.median(ms),
            "runs_ms": ms, "peak_mb": peak,
        })
    for r in rows:
        r["ratio"] = r["median_ms"] / rows[0]["median_ms"]
    return rows
