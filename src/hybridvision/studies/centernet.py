"""Study ``centernet``: does a non-local block help CenterNet, and how do the keypoint, the
anchor-free and the anchor-based detector compare at one budget? (slides 002/004; thesis A's
future work and its anchor-based comparison, Tables 4.10–4.11)

Rows: CenterNet-R18, CenterNet-R18 + NL (a non-local block on the stride-4 feature), FCOS and
RetinaNet, all on the same ResNet-18 backbone, trained with the same settings. Columns: the 12
COCO numbers, the costs of the ``fcos-nonlocal`` study, and the speed–accuracy table of the
CenterNet paper (its Table 1 shape): AP and ms/image without test-time augmentation, with flip,
and with flip-free multi-scale (0.5–1.5), each a mean ± std over seeds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from hybridvision.config import TrainConfig
from hybridvision.detectors.tta import predict_tta
from hybridvision.engine.tasks import make_task
from hybridvision.evaluation.cost import measure_latency
from hybridvision.layers.fusion import fuse_conv_bn
from hybridvision.studies.common import (
    COCO_COLUMNS, COST_COLUMNS, COST_FORMATS, COST_LABELS, DETECTION_CPU_PRESET, detection_rows, measure_detector,
    smoke_preset)
from hybridvision.studies.figures import detection_figures
from hybridvision.studies.spec import Study, register_study

TTA_COLUMNS = ["AP_flip", "AP_ms", "infer_ms_flip", "infer_ms_ms"]
SPEED_ACCURACY = ["AP", "infer_ms", "AP_flip", "infer_ms_flip", "AP_ms", "infer_ms_ms"]


def measure_with_tta(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """The detector's costs (:func:`measure_detector`) plus, for flip and multi-scale test-time
    augmentation, the validation AP (a fraction, as the training evaluation stores it) and the
    latency (ms/image, batch 1, median of 5 after warm-up)."""
    costs = measure_detector(model, cfg, device)
    task = make_task(cfg)
    bundle = task.build_eval_data(cfg)
    loader = DataLoader(bundle.val, batch_size=8, collate_fn=bundle.collate)
    d = model.size_divisible  # the input multiple the detector needs
    s = -(-cfg.image_size // d) * d
    x = torch.rand(1, 3, s, s, device=device)
    runner = fuse_conv_bn(model.to(device).eval())
    for mode, suffix in (("flip", "flip"), ("multiscale", "ms")):
        evaluation, _ = task.evaluate(model, loader, device, bundle, tta=mode)
        costs[f"AP_{suffix}"] = evaluation["metrics"]["AP"]

        def infer(mode: str = mode) -> None:
            with torch.inference_mode():
                predict_tta(runner, x, [(s, s)], mode)

        costs[f"infer_ms_{suffix}"] = measure_latency(infer, warmup=1, runs=5, device=device)["median_ms"]
    return costs


# (label, small CPU model, paper model, paper options, reference); every row is compared with
# CenterNet-R18. The small models take no options (they are ResNet-18 already); the paper preset
# trains CenterNet with the released code's Gaussian radius, as published.
BASELINE = "CenterNet-R18"
ROWS = detection_rows([
    (BASELINE, "centernet_small", "centernet_r18", {"radius_form": "original"}, None),
    ("CenterNet-R18 + NL", "nl_centernet_small", "nl_centernet_r18", {"radius_form": "original"}, BASELINE),
    ("FCOS", "fcos_small", "fcos_r50_fpn", {"depth": 18}, BASELINE),
    ("RetinaNet", "retinanet_small", "retinanet_r50_fpn", {"depth": 18}, BASELINE),
], small_options=False)

STUDY = register_study(Study(
    name="centernet",
    title="CenterNet, NL-CenterNet, FCOS and RetinaNet at one budget (slides 002/004; thesis A Tables 4.10–4.11)",
    question="Does a non-local block help CenterNet, and how do CenterNet, FCOS and the anchor-based "
             "RetinaNet compare at the same budget?",
    intro=("Each row trains from scratch on the same backbone (ResNet-18; ×0.25 width on the CPU "
           "preset) with the same settings, and is evaluated with the 12 COCO numbers (percent), "
           "then again with flip and with multi-scale (0.5, 0.75, 1, 1.25, 1.5) test-time "
           "augmentation. Costs as in the `fcos-nonlocal` study; the TTA latencies are medians of 5, "
           "batch 1. Every row is compared with CenterNet-R18 seed by seed (same data order, "
           "augmentation and shared initialisation). On the built-in amounts the models train "
           "without flips (a mirrored digit is another glyph) and at scales 0.75–1.25, so the "
           "flip view shows them glyphs they never saw and the 0.5 and 1.5 views sizes they "
           "never saw: TTA measures here how each family copes with such views; the CenterNet "
           "paper's gains assume training with the same flips and scales (`augment: {hflip: 0.5}` "
           "on natural images)."),
    rows=ROWS,
    presets={
        "smoke": smoke_preset(),
        # The fcos-nonlocal study's CPU settings: every detector gets the same steps.
        "cpu": dict(DETECTION_CPU_PRESET),
        # CenterNet's ResNet recipe (Adam 5e-4 at batch 128, 140 epochs, drops at 90 and 120) at 512².
        "paper": dict(image_size=512, epochs=140, batch_size=128, optimizer="adamw", lr=5e-4,
                      weight_decay=0.0, warmup_steps=0, schedule="step", milestones=[0.643, 0.857],
                      grad_clip=0.0, eval_every=10),
    },
    default_data="builtin:amounts",
    columns=COCO_COLUMNS + COST_COLUMNS + TTA_COLUMNS,
    tables=[("COCO metrics (percent)", COCO_COLUMNS),
            ("Speed–accuracy with test-time augmentation (CenterNet Table 1 shape)", SPEED_ACCURACY),
            ("Cost", COST_COLUMNS)],
    formats={**COST_FORMATS, "infer_ms_flip": (1.0, 1, True), "infer_ms_ms": (1.0, 1, True)},
    labels={**COST_LABELS, "AP_flip": "AP flip", "AP_ms": "AP multi-scale", "infer_ms_flip": "ms/img flip",
            "infer_ms_ms": "ms/img multi-scale"},
    # AP_ms is AP with multi-scale testing (a fraction), infer_ms_flip a latency: not what their suffixes say.
    units={"AP_ms": (100.0, "points"), "infer_ms_flip": (1.0, "ms")},
    measure=measure_with_tta,
    primary="AP",
    cost="infer_ms",
    lower_is_better=frozenset({"infer_ms", "infer_mem_mb", "train_mem_mb", "train_ms", "params_m", "gflops",
                               "train_s", "train_loop_s", "infer_ms_flip", "infer_ms_ms"}),
    verdict_columns=("AP_flip", "AP_ms", "APs", "train_ms"),
    figures=detection_figures,
))
