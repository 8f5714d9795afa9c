"""``hybridvision bench``: models side by side — params, GFLOPs, latency and peak memory — in one
process, with torchvision's detectors and classifiers as peers (``torchvision:NAME``).

A verb above the engine (``docs/architecture.md``, "Layers"): it builds models with the factory and
asks their task (the engine's) how to run them; the measurements themselves are
:mod:`hybridvision.evaluation.cost`, which imports no model and no loop.

What each model runs and how large its input is comes from its registered task
(``engine/tasks/``): the task is asked, not an if/else here.

Peers that need their own input size: a torchvision SSD resizes every image to its fixed size
(300 or 320) whatever it is given, so it runs at that size and the row says so (``note``); a
ViT is built for the bench size (a multiple of its patch); any other torchvision classifier is
tried once on the bench size and refused in one line naming the size it needs if it cannot run
on it (``maxvit_t``, ``inception_v3`` and ``alexnet`` below their minimum).
"""

from __future__ import annotations

import json
import re
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import torch
import torch.nn as nn
import torchvision

from hybridvision.engine.tasks import create_task
from hybridvision.errors import UserInputError
from hybridvision.evaluation.cost import count_flops, count_params, measure_peak_memory, sync
from hybridvision.factory import create_model, model_task
from hybridvision.layers.fusion import fuse_conv_bn

__all__ = ["BenchTarget", "bench_side", "bench_task", "build_bench_target", "compare_models", "TORCHVISION_PREFIX",
           "bench_json"]

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
    size: int | None = None  # the input side it runs at
    note: str | None = None  # why it runs at another size, said with the results


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


def bench_side(names: list[str], size: int | None = None) -> int:
    """The square input side of a bench of ``names``: ``size``, else their task's default (512
    detection, 224 classification); the names must be of one task."""
    tasks = {bench_task(n) for n in names}
    if len(tasks) > 1:
        raise UserInputError(f"bench compares models of one task; got {', '.join(sorted(tasks))}")
    return size or create_task(tasks.pop()).default_image_size


def bench_json(rows: list[dict[str, Any]], *, size: int, batch: int, runs: int, warmup: int,
               device: torch.device) -> str:
    """The JSON text of ``bench --out``: the settings, the machine's threads and torch, then the rows."""
    meta = {"size": size, "batch": batch, "runs": runs, "warmup": warmup, "device": str(device),
            "threads": torch.get_num_threads(), "torch": torch.__version__}
    return json.dumps({**meta, "rows": rows}, indent=1)


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
        return _torchvision_target(name, task_name, size=size, batch=batch, device=device,
                                   num_classes=num_classes or (91 if task_name == "detection"
                                                               else task.default_num_classes))
    model = create_model(name, num_classes=num_classes or task.default_num_classes,
                         **task.input_kwargs(in_chans)).to(device).eval()
    x = torch.rand(batch, task.input_channels(model), size, size, device=device)
    # timed as inference runs it (BN folded into the convs); parameters counted on the model
    return BenchTarget(name, task_name, model, task.inference(fuse_conv_bn(model), x), size=size)


_SSD_MODULES = ("torchvision.models.detection.ssd", "torchvision.models.detection.ssdlite")


def _torchvision_target(name: str, task_name: str, *, size: int, batch: int, num_classes: int,
                        device: torch.device) -> BenchTarget:
    """``torchvision:NAME`` with random weights (nothing downloaded), at the bench size where it
    can run; an SSD at its fixed size (noted); a classifier that cannot run on ``size`` refused."""
    tv_name = name[len(TORCHVISION_PREFIX):]
    module = torchvision.models.get_model_builder(tv_name).__module__
    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    detection = task_name == "detection"
    if detection:
        kwargs["weights_backbone"] = None
        if module not in _SSD_MODULES:  # resized to the bench size
            kwargs.update(min_size=size, max_size=size)
    elif module == "torchvision.models.vision_transformer" and re.search(r"_\d+$", tv_name):
        patch = int(tv_name.rsplit("_", 1)[1])  # vit_b_16: position embeddings for the bench size
        if size % patch:
            below = max(size // patch * patch, -(-32 // patch) * patch)
            raise UserInputError(f"{name}: its input side must be a multiple of its patch size {patch}, "
                                 f"not --size {size}; pass --size {below} or {below + patch}")
        kwargs["image_size"] = size
    with warnings.catch_warnings():  # inception_v3, googlenet: "init_weights will change" (not ours to fix)
        warnings.simplefilter("ignore", FutureWarning)
        model = torchvision.models.get_model(tv_name, **kwargs).to(device).eval()
    x = torch.rand(batch, 3, size, size, device=device)
    if detection:  # torchvision detectors take a list, resize and post-process themselves
        fixed = getattr(model.transform, "fixed_size", None) if module in _SSD_MODULES else None
        note = None
        if fixed:
            note = (f"{name} ran at {fixed[1]}×{fixed[0]}, the fixed size it resizes every input to "
                    f"(the bench size is {size}×{size})")
        return BenchTarget(name, task_name, model, lambda: model(list(x)),
                           size=fixed[0] if fixed else size, note=note)
    _probe(name, tv_name, model, size, device)
    return BenchTarget(name, task_name, model, lambda: model(x), size=size)


def _probe(name: str, tv_name: str, model: nn.Module, size: int, device: torch.device) -> None:
    """Run a torchvision classifier once on one ``size``² image; one-line error naming the size
    torchvision's weights for it use when it cannot run on this size."""
    try:
        with torch.inference_mode():
            model(torch.rand(1, 3, size, size, device=device))
    except (RuntimeError, AssertionError, ValueError, IndexError) as e:
        if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e):
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        crop, least = _weights_sizes(tv_name)
        need = "pass a larger --size"
        if crop is not None:
            need = f"pass --size {crop}, the input size of torchvision's weights for it"
            if least and least != crop:
                need += f" (at least {least})"
        raise UserInputError(f"{name}: cannot run on {size}×{size} inputs ({reason}); {need}") from None


def _weights_sizes(tv_name: str) -> tuple[int | None, int | None]:
    """(crop size, minimum size) that torchvision's first weights for a classifier declare."""
    try:
        weights = next(iter(torchvision.models.get_model_weights(tv_name)))
        crop = weights.transforms().crop_size[0]
        least = (weights.meta.get("min_size") or (None,))[0]
        return int(crop), (int(least) if least else None)
    except (StopIteration, ValueError, AttributeError, TypeError, IndexError, KeyError):
        return None, None


def compare_models(targets: list[BenchTarget], *, runs: int = 7, warmup: int = 2,
                   device: str | torch.device = "cpu", memory: bool = True) -> list[dict[str, Any]]:
    """Params, GFLOPs, latency and peak memory of each target, in one process, side by side.

    Timed calls are interleaved — run ``i`` visits the targets in an order rotated by ``i`` — so
    a load change on a shared machine hits every model alike. Latency is the median of ``runs``
    calls after ``warmup`` calls each; ``ratio`` is that median over the first target's.

    Returns one dict per target: ``name, task, params, gflops, median_ms, runs_ms, ratio,
    peak_mb, size`` (``peak_mb`` is None when ``memory`` is False; ``size`` the input side it ran
    at), and ``note`` when that is not the bench's size.
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
            "runs_ms": ms, "peak_mb": peak, "size": t.size,
            **({"note": t.note} if t.note else {}),
        })
    for r in rows:
        r["ratio"] = r["median_ms"] / rows[0]["median_ms"]
    return rows
