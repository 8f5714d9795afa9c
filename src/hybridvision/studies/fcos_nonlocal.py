"""Study ``fcos-nonlocal``: does a non-local block help FCOS? (seed 000, Tables 4.1–4.3).

Rows as in the seed: FCOS, NL-FCOS-cls (block at the start of the classification branch),
NL-FCOS-reg (regression branch), NL-FCOS (both), NL-FCOS-PANet (both + PANet bottom-up neck) and
NL-FCOS-101 (both, deeper backbone). Columns: the 12 COCO numbers (Table 4.2) and the costs of
Table 4.3 — inference ms/image (median), peak memory in inference and in one training step,
parameters and GFLOPs (``torch.utils.flop_counter``). The seed reports one run; here every number
is a mean ± std over seeds.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from hybridvision.config import TrainConfig
from hybridvision.evaluation.cost import count_flops, count_params, measure_latency, measure_peak_memory
from hybridvision.layers.fusion import fuse_conv_bn
from hybridvision.studies.figures import detection_figures
from hybridvision.studies.spec import Study, StudyRow, imagenet_backbone, register_study

COCO_COLUMNS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
COST_COLUMNS = ["infer_ms", "infer_mem_mb", "train_ms", "train_mem_mb", "params_m", "gflops"]


def measure_detector(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Costs of a detector at the study's input size: latency (as inference runs it, BN folded into
    the convs), memory, the time of one training step, parameters, FLOPs. Called after all
    training, one model at a time, so nothing else runs beside the timings."""
    s = -(-cfg.image_size // 32) * 32
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
    # peak memory (the seed's NL pain point). On a copy: train-mode forwards of random images
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


# The thesis-A block (no norm, no scale, default init) against Wang et al.'s (BN on W with γ = 0,
# so it starts as the identity; 1/√d softmax; max-pool sub-sampled keys): "attention helps or
# hurts FCOS" apart from "this block's form helps or hurts".
WANG = {"head_attn": "nonlocal"}

# (label on the small CPU models, registered small model, label and model of the paper preset,
# options); every row but FCOS is compared with FCOS seed by seed.
ROWS = [
    ("FCOS", "fcos_small", "FCOS", "fcos_r50_fpn", {}),
    ("NL-FCOS-cls", "nl_fcos_small_cls", "NL-FCOS-cls", "nl_fcos_r50_fpn_cls", {}),
    ("NL-FCOS-reg", "nl_fcos_small_reg", "NL-FCOS-reg", "nl_fcos_r50_fpn_reg", {}),
    ("NL-FCOS", "nl_fcos_small", "NL-FCOS", "nl_fcos_r50_fpn", {}),
    ("NL-FCOS (Wang)", "nl_fcos_small", "NL-FCOS (Wang)", "nl_fcos_r50_fpn", WANG),
    ("NL-FCOS-PANet", "nl_fcos_small_panet", "NL-FCOS-PANet", "nl_fcos_r50_panet", {}),
    ("NL-FCOS-deep", "nl_fcos_small_deep", "NL-FCOS-101", "nl_fcos_r101_fpn", {}),
]
SMALL_ROWS = [StudyRow(label, model, dict(kw), reference=None if label == "FCOS" else "FCOS")
              for label, model, _, _, kw in ROWS]
PAPER_ROWS = [StudyRow(label, model, imagenet_backbone(model, kw), reference=None if label == "FCOS" else "FCOS")
              for _, _, label, model, kw in ROWS]

# 2 CPU cores, built-in amounts (2,000 training images at 128²): FCOS converges (the last quarter
# of the schedule adds < 1 AP point; BENCHMARKS.md shows the curves) and 7 rows × 3 seeds fit
# 150 minutes with --jobs 2. A step schedule as in the FCOS recipe.
CPU_PRESET = dict(image_size=128, epochs=24, batch_size=16, optimizer="adamw", lr=2e-3, weight_decay=1e-4,
                  warmup_steps=100, schedule="step", milestones=[0.6, 0.8], grad_clip=10.0, eval_every=3,
                  cache_images=True, workers=0)

STUDY = register_study(Study(
    name="fcos-nonlocal",
    title="Non-local blocks in FCOS (seed 000, Tables 4.1–4.3)",
    question="Does a non-local block help FCOS, and at what cost?",
    intro=("Each row trains from scratch and is evaluated with the 12 COCO numbers (percent). "
           "Costs, measured after all training one model at a time: inference ms/image (median of 7 "
           "after warm-up, batch 1, forward + decode, BN folded as `predict` runs it), its peak "
           "memory, the time (median of 5) and peak memory of one training step (forward, loss, "
           "backward) at the study's batch, parameters (M), GFLOPs of one forward pass. Every row is "
           "compared with FCOS seed by seed (same data order, augmentation and shared "
           "initialisation)."),
    rows={"smoke": SMALL_ROWS, "cpu": SMALL_ROWS, "paper": PAPER_ROWS},
    presets={
        # Tests: a couple of steps per run; its numbers mean nothing.
        "smoke": dict(image_size=64, epochs=1, max_steps=2, batch_size=4, optimizer="adamw", lr=1e-3,
                      eval_every=0, workers=0),
        "cpu": CPU_PRESET,
        # The seed's FCOS recipe (1x-like schedule; run on GPUs with a real dataset).
        "paper": dict(image_size=800, epochs=12, batch_size=16, optimizer="sgd", lr=0.01,
                      weight_decay=1e-4, warmup_steps=500, schedule="step", milestones=[0.67, 0.89],
                      grad_clip=0.0, eval_every=1),
    },
    default_data="builtin:amounts",
    columns=COCO_COLUMNS + COST_COLUMNS,
    tables=[("COCO metrics (Tables 4.1/4.2 shape, percent)", COCO_COLUMNS),
            ("Cost (Table 4.3 shape)", COST_COLUMNS)],
    formats={"infer_ms": (1.0, 1, True), "infer_mem_mb": (1.0, 1, False), "train_ms": (1.0, 0, True),
             "train_mem_mb": (1.0, 0, False), "params_m": (1.0, 2, False), "gflops": (1.0, 2, False)},
    labels={"infer_ms": "ms/img", "infer_mem_mb": "infer MiB", "train_ms": "train-step ms",
            "train_mem_mb": "train-step MiB", "params_m": "params (M)", "gflops": "GFLOPs"},
    measure=measure_detector,
    primary="AP",
    cost="infer_ms",
    verdict_columns=("AP50", "APs", "train_ms", "train_mem_mb"),
    figures=detection_figures,
))
