"""What several studies share: the smoke preset, the detection studies' columns, CPU settings and
cost measurement, and the recipe helpers of the ``paper`` presets.

A study module imports these from here, never from a sibling study, so each study can be read,
changed or removed on its own. The study data types live in :mod:`hybridvision.studies.spec`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from hybridvision.config import TrainConfig
from hybridvision.evaluation.cost import count_flops, count_params, measure_latency, measure_peak_memory
from hybridvision.layers.fusion import fuse_conv_bn
from hybridvision.studies.spec import StudyRow

__all__ = ["COCO_COLUMNS", "COST_COLUMNS", "COST_FORMATS", "COST_LABELS", "DETECTION_CPU_PRESET",
           "IMAGENET_RESNETS", "smoke_preset", "imagenet_backbone", "detection_rows", "measure_detector"]

# ------------------------------------------------------------------------------------- presets
# The ``smoke`` preset of every study (tests: a couple of steps per run, seconds; its numbers mean
# nothing). A study changes what its data or models need, e.g. ``smoke_preset(image_size=32)``.
_SMOKE = dict(image_size=64, epochs=1, max_steps=2, batch_size=4, optimizer="adamw", lr=1e-3, eval_every=0,
              workers=0)


def smoke_preset(**changes: Any) -> dict[str, Any]:
    """The shared ``smoke`` preset (TrainConfig fields) with ``changes`` applied; a new dict each call."""
    return {**copy.deepcopy(_SMOKE), **changes}


# The detection studies' ``cpu`` settings. 2 CPU cores, built-in amounts (2,000 training images at
# 128²): FCOS converges (the last quarter of the schedule adds < 1 AP point; BENCHMARKS.md shows
# the curves) and 7 rows × 3 seeds fit 150 minutes with --jobs 2. A step schedule as in the FCOS
# recipe. A study that needs another budget changes ``epochs`` on a copy.
DETECTION_CPU_PRESET = dict(image_size=128, epochs=24, batch_size=16, optimizer="adamw", lr=2e-3,
                            weight_decay=1e-4, warmup_steps=100, schedule="step", milestones=[0.6, 0.8],
                            grad_clip=10.0, eval_every=3, cache_images=True, workers=0)

# ------------------------------------------------------------------------------- paper recipes
# The ImageNet weights a paper preset's ResNet backbone starts from, by depth (torchvision's files
# in the torch hub cache; hybridvision.backbones.pretrained says which file goes where).
IMAGENET_RESNETS = {18: "torchvision:resnet18", 34: "torchvision:resnet34", 50: "torchvision:resnet50",
                    101: "torchvision:resnet101"}


def imagenet_backbone(model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus ``backbone_weights`` for a paper preset's ResNet-based ``model`` (its
    ``depth`` option, else the depth its name says; CornerFCOS: ResNet-50) — thesis A started
    every ResNet from ImageNet — and unchanged for the others (hourglasses train from scratch)."""
    depth = kwargs.get("depth")
    if depth is None:
        depth = (101 if "r101" in model else 18 if "r18" in model else
                 50 if "r50" in model or model.startswith("cornerfcos") else None)
    if depth not in IMAGENET_RESNETS:
        return dict(kwargs)
    return {"backbone_weights": IMAGENET_RESNETS[depth], **kwargs}


def detection_rows(spec: Sequence[tuple[Any, ...]], *, small_options: bool = True) -> dict[str, list[StudyRow]]:
    """The rows of the ``smoke``, ``cpu`` and ``paper`` presets of a study whose CPU presets train
    small models and whose paper preset trains the published ones.

    Args:
        spec: one entry per row, ``(label, small model, paper model, options, reference[, also
            compared with])``. ``label`` is a string, or a ``(small label, paper label)`` pair
            where the two presets name the row differently (e.g. ``("NL-FCOS-deep",
            "NL-FCOS-101")``); ``options`` are model options (the paper row's get the ImageNet
            backbone of :func:`imagenet_backbone` too); ``reference`` is a label or None.
        small_options: False gives the small models no options (``options`` are for the paper
            models only).

    Returns:
        ``{"smoke": rows, "cpu": rows, "paper": rows}``; ``smoke`` and ``cpu`` share one list.
    """
    small, paper = [], []
    for label, small_model, paper_model, options, reference, *also in spec:
        small_label, paper_label = (label, label) if isinstance(label, str) else label
        others = tuple(also[0]) if also else ()
        small.append(StudyRow(small_label, small_model, dict(options) if small_options else {},
                              reference=reference, also_compared_with=others))
        paper.append(StudyRow(paper_label, paper_model, imagenet_backbone(paper_model, options),
                              reference=reference, also_compared_with=others))
    return {"smoke": small, "cpu": small, "paper": paper}


# --------------------------------------------------------------------------- detection columns
COCO_COLUMNS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
COST_COLUMNS = ["infer_ms", "infer_mem_mb", "train_ms", "train_mem_mb", "params_m", "gflops"]
# How the report prints the cost columns: (scale, decimals, ± shown) and their headers.
COST_FORMATS = {"infer_ms": (1.0, 1, True), "infer_mem_mb": (1.0, 1, False), "train_ms": (1.0, 0, True),
                "train_mem_mb": (1.0, 0, False), "params_m": (1.0, 2, False), "gflops": (1.0, 2, False)}
COST_LABELS = {"infer_ms": "ms/img", "infer_mem_mb": "infer MiB", "train_ms": "train-step ms",
               "train_mem_mb": "train-step MiB", "params_m": "params (M)", "gflops": "GFLOPs"}


def measure_detector(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Costs of a detector at the study's input size (the :data:`COST_COLUMNS`): latency (as
    inference runs it, BN folded into the convs), memory, the time of one training step,
    parameters, FLOPs. Called after all training, one model at a time, so nothing else runs
    beside the timings."""
    d = model.size_divisible  # the input multiple the detector needs
    s = -(-cfg.image_size // d) * d
    model = model.to(device).eval()
    runner = fuse_conv_bn(model)  # what predict / eval / bench run
    x = torch.rand(1, 3, s, s, device=device)

    def infer():
        with torch.inference_mode():
            runner.decode(runner(x), [(s, s)])

    with torch.inference_mode():
        flops = count_flops(model, (x,))
    lat = measure_latency(infer, warmup=2, runs=7, device=device)
    infer_mem = measure_peak_memory(infer, device)

    # One training step (forward, loss, backward) at the study's batch size: its time and its
    # peak memory (thesis A's NL pain point). On a copy: train-mode forwards of random images
    # would move the BatchNorm running statistics of the model the caller goes on evaluating.
    b = cfg.batch_size
    xb = torch.rand(b, 3, s, s, device=device)
    box = torch.tensor([[s * 0.2, s * 0.2, s * 0.6, s * 0.7]], device=device)
    targets = [{"boxes": box, "labels": torch.zeros(1, dtype=torch.int64, device=device)}] * b
    trainee = copy.deepcopy(model).train()

    def train_step():
        trainee.zero_grad(set_to_none=True)
        loss = trainee.loss(trainee(xb), targets)["loss"]
        loss.backward()

    train_mem = measure_peak_memory(train_step, device)
    train_lat = measure_latency(train_step, warmup=1, runs=5, device=device)
    return {"infer_ms": lat["median_ms"], "infer_mem_mb": infer_mem / 2**20,
            "train_ms": train_lat["median_ms"], "train_mem_mb": train_mem / 2**20,
            "params_m": count_params(model) / 1e6, "gflops": flops / 1e9}
