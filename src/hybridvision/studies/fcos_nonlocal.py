"""Study ``fcos-nonlocal``: does a non-local block help FCOS? (thesis A, Tables 4.1–4.3).

Rows as in thesis A: FCOS, NL-FCOS-cls (block at the start of the classification branch),
NL-FCOS-reg (regression branch), NL-FCOS (both), NL-FCOS-PANet (both + PANet bottom-up neck) and
NL-FCOS-101 (both, deeper backbone). Columns: the 12 COCO numbers (Table 4.2) and the costs of
Table 4.3 — inference ms/image (median), peak memory in inference and in one training step,
parameters and GFLOPs (``torch.utils.flop_counter``). Thesis A reports one run; here every number
is a mean ± std over seeds.
"""

from __future__ import annotations

from hybridvision.studies.common import (
    COCO_COLUMNS, COST_COLUMNS, COST_FORMATS, COST_LABELS, DETECTION_CPU_PRESET, detection_rows, measure_detector,
    smoke_preset)
from hybridvision.studies.figures import detection_figures
from hybridvision.studies.spec import Study, register_study

# The thesis-A block (no norm, no scale, default init) against Wang et al.'s (BN on W with γ = 0,
# so it starts as the identity; 1/√d softmax; max-pool sub-sampled keys): "attention helps or
# hurts FCOS" apart from "this block's form helps or hurts".
WANG = {"head_attn": "nonlocal"}

# ((label on the small CPU models, label of the paper preset), registered small model, paper
# model, options, reference): every row but FCOS is compared with FCOS seed by seed.
ROWS = detection_rows([
    ("FCOS", "fcos_small", "fcos_r50_fpn", {}, None),
    ("NL-FCOS-cls", "nl_fcos_small_cls", "nl_fcos_r50_fpn_cls", {}, "FCOS"),
    ("NL-FCOS-reg", "nl_fcos_small_reg", "nl_fcos_r50_fpn_reg", {}, "FCOS"),
    ("NL-FCOS", "nl_fcos_small", "nl_fcos_r50_fpn", {}, "FCOS"),
    ("NL-FCOS (Wang)", "nl_fcos_small", "nl_fcos_r50_fpn", WANG, "FCOS"),
    ("NL-FCOS-PANet", "nl_fcos_small_panet", "nl_fcos_r50_panet", {}, "FCOS"),
    (("NL-FCOS-deep", "NL-FCOS-101"), "nl_fcos_small_deep", "nl_fcos_r101_fpn", {}, "FCOS"),
])

STUDY = register_study(Study(
    name="fcos-nonlocal",
    title="Non-local blocks in FCOS (thesis A, Tables 4.1–4.3)",
    question="Does a non-local block help FCOS, and at what cost?",
    intro=("Each row trains from scratch and is evaluated with the 12 COCO numbers (percent). "
           "Costs, measured after all training one model at a time: inference ms/image (median of 7 "
           "after warm-up, batch 1, forward + decode, BN folded as `predict` runs it), its peak "
           "memory, the time (median of 5) and peak memory of one training step (forward, loss, "
           "backward) at the study's batch, parameters (M), GFLOPs of one forward pass. Every row is "
           "compared with FCOS seed by seed (same data order, augmentation and shared "
           "initialisation)."),
    rows=ROWS,
    presets={
        "smoke": smoke_preset(),
        "cpu": DETECTION_CPU_PRESET,
        # Thesis A's FCOS recipe (1x-like schedule; run on GPUs with a real dataset).
        "paper": dict(image_size=800, epochs=12, batch_size=16, optimizer="sgd", lr=0.01,
                      weight_decay=1e-4, warmup_steps=500, schedule="step", milestones=[0.67, 0.89],
                      grad_clip=0.0, eval_every=1),
    },
    default_data="builtin:amounts",
    columns=COCO_COLUMNS + COST_COLUMNS,
    tables=[("COCO metrics (Tables 4.1/4.2 shape, percent)", COCO_COLUMNS),
            ("Cost (Table 4.3 shape)", COST_COLUMNS)],
    formats=COST_FORMATS,
    labels=COST_LABELS,
    measure=measure_detector,
    primary="AP",
    cost="infer_ms",
    verdict_columns=("AP50", "APs", "train_ms", "train_mem_mb"),
    figures=detection_figures,
))
