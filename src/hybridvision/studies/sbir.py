"""Study ``sbir``: sketch-based image retrieval with a convolutional or a hybrid backbone (thesis
B, Tables 4.3 and 4.4).

Each (row, seed) run trains the two-branch network in thesis B's three stages (Bui et al. 2017):
stage 1 both branches as classifiers, stage 2 contrastive pairs with the branches' own stages
frozen, stage 3 triplets — each stage a run of its own under ``OUT/<row>/seed<k>/stage<n>/``,
started from the previous stage's weights (a killed study resumes inside the stage it was in).
Columns:

* Table 4.3 shape (unimodal zero-shot): the stage-1 sketch classifier's pooled last stage ranks
  sketches of the classes it never saw — ``zs_uni_mAP``, ``zs_uni_mRR``, ``zs_uni_P@10``;
* Table 4.4 shape (bimodal): each branch's stage-1 top-1, then after stage 3 sketch → photo
  ranking of held-out images of the training classes — ``mAP``, ``mRR``, ``P@10`` — beside the
  expected mAP of a random ranking of the same gallery (``mAP_random``), and the same ranking on
  the unseen classes (``zs_mAP``);
* costs: ms per sketch query (embedding, batch 1), ms per gallery photo, parameters.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from hybridvision.config import TrainConfig
from hybridvision.engine.tasks import make_task
from hybridvision.engine.trainer import train
from hybridvision.evaluation.cost import count_params, measure_latency
from hybridvision.evaluation.retrieval import retrieval_metrics
from hybridvision.fileio import atomic_write_text
from hybridvision.studies.common import smoke_preset
from hybridvision.studies.figures import sbir_figures
from hybridvision.studies.spec import Study, StudyRow, register_study

# Epochs of stages 1, 2, 3 per preset (thesis B: 100-epoch classifiers, 35 and 10 epochs). cpu:
# probed on ResNet26 (seed 0): the photo classifier, from scratch on 864 cluttered photos, is at
# 8 % top-1 after 8 epochs, 51 % after 20, 69 % after 35 (sketches 94 %); 40 epochs of stage 1.
STAGE_EPOCHS = {"smoke": (1, 1, 1), "cpu": (40, 10, 6), "paper": (100, 35, 10)}
STAGE_1_KEYS = ("sketch_top1", "photo_top1", "zs_uni_mAP", "zs_uni_mRR", "zs_uni_P@10")
STAGE_3_KEYS = ("mAP", "mRR", "P@10", "mAP_interp", "zs_mAP", "zs_mRR", "zs_P@10")


def expected_random_map(query_labels: torch.Tensor, gallery_labels: torch.Tensor, draws: int = 20,
                        seed: int = 0) -> float:
    """The mean mAP of ``draws`` uniformly random rankings of the gallery (the chance level)."""
    g = torch.Generator().manual_seed(seed)
    scores = [retrieval_metrics(torch.rand(len(query_labels), len(gallery_labels), generator=g),
                                query_labels, gallery_labels)["mAP"] for _ in range(draws)]
    return float(sum(scores) / len(scores))


def train_sbir_run(cfg_dict: dict[str, Any], init_like: tuple[str, dict[str, Any]] | None, preset: str) -> None:
    """Train stages 1 → 3 of one run (each resumable), then write the run's ``trained.json``
    (stage-1 accuracies and unimodal zero-shot, stage-3 retrieval, training time) and copy the
    stage-3 weights to ``checkpoints/last.*`` (what the study's costs load)."""
    cfg = TrainConfig.from_dict(cfg_dict, source="study run")
    run_dir = Path(cfg.out)
    weights: Path | None = None
    metrics: dict[str, Any] = {"train_s": 0.0, "train_loop_s": 0.0}
    for stage, epochs in zip((1, 2, 3), STAGE_EPOCHS[preset]):
        stage_cfg = TrainConfig.from_dict({**cfg.to_dict(), "out": str(run_dir / f"stage{stage}"),
                                           "epochs": epochs,
                                           "model_kwargs": {**cfg.model_kwargs, "stage": stage}},
                                          source=f"study run, stage {stage}")
        resume = (run_dir / f"stage{stage}" / "checkpoints" / "last.json").is_file()
        summary = train(stage_cfg, resume=resume, exist_ok=True, weights=None if resume else weights,
                        init_like=init_like if stage == 1 and not resume else None)
        evaluation = dict(summary.evaluation.get("metrics", summary.evaluation))
        keys = STAGE_1_KEYS if stage == 1 else STAGE_3_KEYS if stage == 3 else ()
        metrics.update({k: evaluation[k] for k in keys if k in evaluation})
        metrics["train_s"] += summary.seconds
        metrics["train_loop_s"] += summary.loop_seconds
        weights = run_dir / f"stage{stage}" / "checkpoints" / "last.safetensors"
    if weights is None:
        raise RuntimeError("no SBIR stage ran")
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(weights.with_suffix(suffix), run_dir / "checkpoints" / f"last{suffix}")
    atomic_write_text(run_dir / "trained.json", json.dumps(
        {"metrics": metrics, "shared_init": None, "threads": torch.get_num_threads()}, indent=1))


def measure_sbir(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Costs after training, one model at a time: ms per sketch query and per gallery photo
    (embedding, batch 1, median of 100 calls after 10: a call takes milliseconds), parameters of
    the deployed network (without the stage-1 sketch classifier), and the chance level of the
    seen-class ranking (``mAP_random``)."""
    model = model.to(device).eval()
    s = cfg.image_size
    sketch, photo = torch.rand(1, 1, s, s, device=device), torch.rand(1, 3, s, s, device=device)

    def query() -> None:
        with torch.inference_mode():
            model(sketch, "sketch")

    def gallery() -> None:
        with torch.inference_mode():
            model(photo, "photo")

    deployed = count_params(model) - count_params(model.sketch_stage1)
    bundle = make_task(cfg).build_eval_data(cfg)
    q_labels = torch.tensor(bundle.val.sketches.targets)
    g_labels = torch.tensor(bundle.val.photos.targets)
    return {"query_ms": measure_latency(query, warmup=10, runs=100, device=device)["median_ms"],
            "photo_ms": measure_latency(gallery, warmup=10, runs=100, device=device)["median_ms"],
            "params_m": deployed / 1e6, "mAP_random": expected_random_map(q_labels, g_labels)}


ROWS = [("ResNet26", "sbir_resnet26"), ("HIB patch 2-2 (nl)", "sbir_hib_patch_2_2_nl")]
SMALL = {"width": 0.25, "hidden": 128, "embed_dim": 64}


def _rows(kwargs: dict[str, Any]) -> list[StudyRow]:
    return [StudyRow(label, model, dict(kwargs), reference=None if label == "ResNet26" else "ResNet26")
            for label, model in ROWS]


UNIMODAL = ["zs_uni_mAP", "zs_uni_mRR", "zs_uni_P@10"]
BIMODAL = ["sketch_top1", "photo_top1", "mAP", "mRR", "P@10", "mAP_random", "zs_mAP"]
COSTS = ["query_ms", "photo_ms", "params_m"]

STUDY = register_study(Study(
    name="sbir",
    title="Sketch-based image retrieval: convolution or hybrid? (thesis B, Tables 4.3 and 4.4)",
    question="Does the hybrid backbone retrieve better than ResNet26, unimodal zero-shot and bimodal, "
             "and at what cost?",
    intro=("Each run trains the two-branch network in three stages (classifiers; contrastive pairs "
           "with the branches frozen; triplets). Table 4.3: the stage-1 sketch classifier ranks "
           "sketches of the 9 unseen classes by cosine of its pooled last stage (up to 5 queries a "
           "class, the rest the catalogue). Table 4.4: stage-1 top-1 of each branch, then the "
           "stage-3 sketch → photo ranking of held-out images of the 27 training classes, beside "
           "the mean mAP of random rankings of the same gallery. The hybrid row is compared with "
           "ResNet26 seed by seed."),
    rows={"smoke": _rows({**SMALL, "hidden": 32, "embed_dim": 16}), "cpu": _rows(SMALL), "paper": _rows({})},
    presets={
        "smoke": smoke_preset(image_size=32, batch_size=8, warmup_steps=0,
                              data_kwargs={"sketches": 5, "photos": 5, "size": 32}),
        "cpu": dict(image_size=64, epochs=STAGE_EPOCHS["cpu"][0], batch_size=32, optimizer="adamw", lr=1e-3,
                    weight_decay=1e-4, warmup_steps=50, schedule="cosine", eval_every=0, label_smoothing=0.1,
                    workers=0),
        "paper": dict(image_size=224, epochs=STAGE_EPOCHS["paper"][0], batch_size=64, optimizer="sgd",
                      lr=0.01, weight_decay=1e-4, warmup_steps=0, schedule="cosine", eval_every=5),
    },
    default_data="builtin:bimodal",
    columns=UNIMODAL + BIMODAL + COSTS,
    tables=[("Table 4.3 shape — unimodal zero-shot retrieval (percent)", UNIMODAL),
            ("Table 4.4 shape — two-branch SBIR (percent)", BIMODAL),
            ("Cost", COSTS)],
    formats={"query_ms": (1.0, 2, True), "photo_ms": (1.0, 2, True), "params_m": (1.0, 2, False)},
    labels={"zs_uni_mAP": "unimodal mAP", "zs_uni_mRR": "unimodal mRR", "zs_uni_P@10": "unimodal P@10",
            "sketch_top1": "stage-1 sketch top-1",
            "photo_top1": "stage-1 photo top-1", "mAP_random": "mAP random", "zs_mAP": "zero-shot mAP",
            "query_ms": "ms/query", "photo_ms": "ms/photo", "params_m": "params (M)"},
    measure=measure_sbir,
    primary="mAP",
    cost="query_ms",
    lower_is_better=frozenset({"query_ms", "photo_ms", "params_m", "train_s", "train_loop_s"}),
    verdict_columns=("zs_uni_mAP", "P@10", "zs_mAP"),
    train_run=train_sbir_run,
    figures=sbir_figures,
))
