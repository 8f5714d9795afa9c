"""Study ``hybrid-classification``: convolution vs attention vs hybrids on sketches (thesis B).

Two tables, as in thesis B:

- Table 3.1 — cost: parameters and MACs of each model at 250 classes and 224² (full width, as
  published), and training / inference time relative to ResNet26 measured in the same run.
- Table 4.1 — accuracy: top-1 / top-5 after training each model on the chosen sketch data, mean ±
  std over seeds (the quick preset trains narrow models on small images; the paper preset uses
  thesis B's recipe: SGD 0.1, cosine, label smoothing 0.1, 224², batch 64).
"""

from __future__ import annotations

import copy

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hybridvision.engine.progress import console
from hybridvision.evaluation.cost import count_params, measure_latency, model_macs
from hybridvision.factory import create_model
from hybridvision.fileio import atomic_write_text
from hybridvision.studies.common import smoke_preset
from hybridvision.studies.figures import classification_figures
from hybridvision.studies.spec import Study, StudyRow, register_study

# (label as in thesis B's tables, registered name)
MODELS = [
    ("ResNet26", "resnet26"), ("ResNet26 (nl)", "resnet26_nl"),
    ("SAN10 pairwise", "san10_pair"), ("SAN10 pairwise (nl)", "san10_pair_nl"),
    ("SAN10 patchwise", "san10_patch"), ("SAN10 patchwise (nl)", "san10_patch_nl"),
    ("HIB pair 2-2", "hib_pair_2_2"), ("HIB pair 2-2 (nl)", "hib_pair_2_2_nl"),
    ("HIB patch 2-2", "hib_patch_2_2"), ("HIB patch 2-2 (nl)", "hib_patch_2_2_nl"),
    ("HIB pair 3-1", "hib_pair_3_1"), ("HIB pair 3-1 (nl)", "hib_pair_3_1_nl"),
    ("HIB patch 3-1", "hib_patch_3_1"), ("HIB patch 3-1 (nl)", "hib_patch_3_1_nl"),
    ("Pure NL", "pure_nl"), ("HIB NL 2-2", "hib_nl_2_2"), ("HIB NL 3-1", "hib_nl_3_1"),
]

# Timing settings of Table 3.1 per preset: (batch, image size, runs).
TIMING = {"smoke": (2, 32, 1), "cpu": (8, 112, 3), "paper": (64, 224, 5)}


def _time_model(name: str, batch: int, size: int, runs: int, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=250, in_chans=1).to(device)  # sketches are grey
    x = torch.randn(batch, 1, size, size, device=device)
    y = torch.randint(0, 250, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def infer():
        with torch.inference_mode():
            model(x)

    model.train()
    t = measure_latency(train_step, warmup=1, runs=runs, device=device)["median_ms"]
    model.eval()
    i = measure_latency(infer, warmup=1, runs=runs, device=device)["median_ms"]
    return {"train_ms": t, "infer_ms": i}


def measure_classifier(model: torch.nn.Module, cfg: Any, device: torch.device) -> dict[str, Any]:
    """Costs of a trained classifier at the study's input size, after all training, one model at
    a time: inference ms/image (batch 1), one training step's time at the study's batch
    (forward, label-smoothed cross-entropy, backward), parameters."""
    model = model.to(device).eval()
    c = int(cfg.model_kwargs.get("in_chans", 1))
    x = torch.rand(1, c, cfg.image_size, cfg.image_size, device=device)

    def infer():
        with torch.inference_mode():
            model(x)

    lat = measure_latency(infer, warmup=2, runs=15, device=device)
    xb = torch.rand(cfg.batch_size, c, cfg.image_size, cfg.image_size, device=device)
    yb = torch.randint(0, int(model.num_classes), (cfg.batch_size,), device=device)
    trainee = copy.deepcopy(model).train()  # train-mode forwards would move the caller's BN statistics

    def train_step():
        trainee.zero_grad(set_to_none=True)
        F.cross_entropy(trainee(xb), yb, label_smoothing=cfg.label_smoothing).backward()

    train = measure_latency(train_step, warmup=1, runs=5, device=device)
    return {"infer_ms": lat["median_ms"], "train_ms": train["median_ms"], "params_m": count_params(model) / 1e6}


def _complexity(name: str) -> dict[str, float]:
    # Table 3.1 counts 1-channel 224² sketches, with the thesis' MAC counter (evaluation.cost.model_macs).
    model = create_model(name, num_classes=250, in_chans=1)
    return {"params_m": count_params(model) / 1e6, "gmacs": model_macs(model, (1, 224, 224)) / 1e9}


def cost_table(study: Study, preset: str, out: Path, device: torch.device,
               row_labels: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Table 3.1: params, MACs (250 classes, 224²) and times relative to ResNet26, one run.

    Covers the study's rows (``row_labels``; all 17 by default) plus ResNet26, the reference of
    the relative times. Finished rows are cached in ``OUT/table_3_1.json``, so a resumed study
    does not time them again.
    """
    cache = out / "table_3_1.json"
    rows: dict[str, Any] = json.loads(cache.read_text()) if cache.is_file() else {}
    batch, size, runs = TIMING[preset]
    wanted = set(row_labels or (label for label, _ in MODELS)) | {"ResNet26"}
    models = [(label, name) for label, name in MODELS if label in wanted]
    for label, name in models:
        if label in rows:
            continue
        console.print(f"Table 3.1: {label} (timing at batch {batch}, {size}²)")
        rows[label] = {**_complexity(name), **_time_model(name, batch, size, runs, device)}
        atomic_write_text(cache, json.dumps(rows, indent=1))
    ref = rows["ResNet26"]
    text = ("| model | params (M) | GMACs | rel. train | rel. infer | train ms | infer ms |\n"
            "|---|---|---|---|---|---|---|\n")
    for label, _ in models:
        r = rows[label]
        text += (f"| {label} | {r['params_m']:.2f} | {r['gmacs']:.2f} | "
                 f"{r['train_ms'] / ref['train_ms']:.2f} | {r['infer_ms'] / ref['infer_ms']:.2f} | "
                 f"{r['train_ms']:.0f} | {r['infer_ms']:.0f} |\n")
    note = (f"Parameters and MACs at 250 classes, 224², full width. Times: median of {runs} runs after "
            f"warm-up, batch {batch} at {size}², on `{device}` (thesis B: batch 64, 224², TITAN X).\n\n")
    return [("Table 3.1 — complexity and relative time", note + text)]


def _reference(label: str) -> str | None:
    """Thesis B's pairs: each "(nl)" model against its plain counterpart; Pure NL and the HIB NL
    mixes (no plain twin) and the plain attention models against the ResNet26 baseline."""
    if label == "ResNet26":
        return None
    plain = label.removesuffix(" (nl)")
    return plain if plain != label else "ResNet26"


def _rows(kwargs: dict[str, Any], labels: Sequence[str] | None = None) -> list[StudyRow]:
    return [StudyRow(label, name, dict(kwargs), reference=_reference(label))
            for label, name in MODELS if labels is None or label in labels]


# The cpu preset's rows: the baseline, the thesis's headline hybrid (HIB patch 2-2 (nl), the
# backbone of its retrieval chapter) with its plain twin, ResNet26 with and without NL, and one
# pure-attention model of each kind. The SAN10 and HIB pairwise rows cost several times ResNet26
# on a CPU and are left to the paper preset (or --rows with the full list there).
CPU_LABELS = ("ResNet26", "ResNet26 (nl)", "HIB patch 2-2", "HIB patch 2-2 (nl)", "SAN10 patchwise", "Pure NL")

STUDY = register_study(Study(
    name="hybrid-classification",
    title="Hybrid convolution/attention models on sketches (thesis B, Tables 3.1 and 4.1)",
    question="Do self-attention layers help a ResNet classify sketches, and at what cost?",
    intro=("Accuracy: each model trained from scratch with SGD (momentum 0.9), cosine schedule, "
           "label smoothing 0.1; top-1 / top-5 in percent on the held-out split. Each \"(nl)\" model "
           "is compared with its plain counterpart, every other model with ResNet26, seed by seed."),
    rows={"smoke": _rows({"width": 0.25, "in_chans": 1}, ("ResNet26", "ResNet26 (nl)")),
          "cpu": _rows({"width": 0.25, "in_chans": 1}, CPU_LABELS),
          "paper": _rows({"in_chans": 1})},
    presets={
        "smoke": smoke_preset(image_size=32, optimizer="sgd", lr=0.05),
        # ResNet26 flattens by 16 epochs here (+0.5 top-1 points over the last quarter in a
        # 12-epoch probe; docs/studies/README.md); 6 rows × 3 seeds fit 180 min with --jobs 2.
        "cpu": dict(image_size=64, epochs=16, batch_size=32, optimizer="sgd", lr=0.1,
                    weight_decay=1e-4, warmup_steps=50, schedule="cosine", eval_every=2,
                    label_smoothing=0.1, data_kwargs={"per_class": 120}, workers=0),
        "paper": dict(image_size=224, epochs=100, batch_size=64, optimizer="sgd", lr=0.1,
                      weight_decay=1e-4, warmup_steps=0, schedule="cosine", eval_every=5,
                      label_smoothing=0.1),
    },
    default_data="builtin:sketches",
    columns=["top1", "top5", "infer_ms", "train_ms", "params_m"],
    tables=[("Table 4.1 — accuracy (percent) and cost", ["top1", "top5", "infer_ms", "train_ms", "params_m"])],
    formats={"train_ms": (1.0, 0, True), "infer_ms": (1.0, 2, True), "params_m": (1.0, 2, False)},
    labels={"train_ms": "train-step ms", "infer_ms": "ms/img", "params_m": "params (M)"},
    extra_tables=cost_table,
    measure=measure_classifier,
    primary="top1",
    cost="infer_ms",
    verdict_columns=("top5", "train_ms"),
    figures=classification_figures,
))
