"""What a study is, as data: :class:`StudyRow`, :class:`Study` and the registry of studies.

A leaf of the studies package: the study modules (``fcos_nonlocal``, ``hybrid_classification``)
register into :data:`STUDIES` from here, and :mod:`hybridvision.studies.base` imports them to run
them, so no import circle joins the runner and the studies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

__all__ = ["StudyRow", "Study", "STUDIES", "register_study", "PRESET_PURPOSES", "PRESET_ALIASES", "imagenet_backbone"]

# The ImageNet weights a paper preset's ResNet backbone starts from, by depth (torchvision's files
# in the torch hub cache; hybridvision.backbones.pretrained says which file goes where).
IMAGENET_RESNETS = {18: "torchvision:resnet18", 34: "torchvision:resnet34", 50: "torchvision:resnet50",
                    101: "torchvision:resnet101"}


def imagenet_backbone(model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus ``backbone_weights`` for a paper preset's ResNet-based ``model`` (its
    ``depth`` option, else the depth its name says; CornerFCOS: ResNet-50) — the seeds started
    every ResNet from ImageNet — and unchanged for the others (hourglasses train from scratch)."""
    depth = kwargs.get("depth")
    if depth is None:
        depth = (101 if "r101" in model else 18 if "r18" in model else
                 50 if "r50" in model or model.startswith("cornerfcos") else None)
    if depth not in IMAGENET_RESNETS:
        return dict(kwargs)
    return {"backbone_weights": IMAGENET_RESNETS[depth], **kwargs}


@dataclass
class StudyRow:
    label: str  # as in the seed's table, e.g. "NL-FCOS-cls"
    model: str  # registered model name
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # The label of the row this one is compared with, seed by seed (paired statistics): the
    # study's baseline, or its own plain counterpart where the question is pairwise ("(nl)"
    # models in thesis B). None: this row is a reference, compared with nothing.
    reference: str | None = None
    # Further rows this one is compared with seed by seed (paired statistics only: the
    # initialisation stays paired with ``reference``), e.g. a variant against its sibling.
    also_compared_with: tuple[str, ...] = ()

    @property
    def compared_with(self) -> tuple[str, ...]:
        """Every row this one is compared with: ``reference`` first, then ``also_compared_with``."""
        return ((self.reference,) if self.reference else ()) + tuple(self.also_compared_with)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.label).strip("_")


# What each preset is for (every study has these three; ``quick`` is an alias of ``cpu``).
PRESET_PURPOSES = {
    "smoke": "tests: a few steps, seconds; its numbers mean nothing",
    "cpu": "converged on the built-in data on a 2-core CPU (the README's tables)",
    "paper": "the seed's recipe: GPUs, real data",
}
PRESET_ALIASES = {"quick": "cpu"}


@dataclass
class Study:
    name: str
    title: str
    intro: str
    rows: dict[str, list[StudyRow]]  # preset -> rows (smoke/cpu presets use small models)
    presets: dict[str, dict[str, Any]]  # preset -> TrainConfig fields
    default_data: str
    columns: list[str]
    tables: list[tuple[str, list[str]]]  # (title, columns) of the report
    formats: dict[str, tuple[float, int, bool]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # (scale, unit) of a metric's differences in words where its name misleads the default
    # (:func:`~hybridvision.studies.stats.metric_unit`), e.g. a fraction whose name ends in ``_ms``.
    units: dict[str, tuple[float, str]] = field(default_factory=dict)
    measure: Callable[..., dict[str, float]] | None = None  # (model, cfg, device) -> cost metrics
    extra_tables: Callable[..., list[tuple[str, str]]] | None = None  # (study, preset, out, device, row labels)
    question: str = ""  # the question the report's first paragraph answers, e.g. "Does attention help FCOS?"
    primary: str = "AP"  # the primary metric (a key of each run's metrics; a fraction, higher is better)
    cost: str = "infer_ms"  # the cost metric of the answer (lower is better)
    lower_is_better: frozenset[str] = frozenset(
        {"infer_ms", "infer_mem_mb", "train_mem_mb", "train_ms", "params_m", "gflops", "train_s", "train_loop_s"})
    verdict_columns: tuple[str, ...] = ()  # compared seed by seed besides primary and cost
    # (study, preset, out, device, runs, records) -> [(title, PNG bytes or a callable)] for report.html
    figures: Callable[..., list[tuple[str, Any]]] | None = None
    # A run trained in several steps (SBIR's stages): (cfg dict, init_like, preset) → None; it
    # must leave OUT/<row>/seed<k>/trained.json and checkpoints/last.* as a one-step run does.
    # None: one ``train`` call per run.
    train_run: Callable[..., None] | None = None


STUDIES: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    for preset, rows in study.rows.items():
        labels = [r.label for r in rows]
        for row in rows:
            unknown = [ref for ref in row.compared_with if ref not in labels or ref == row.label]
            if unknown:
                raise ValueError(f"study {study.name!r} preset {preset!r}: row {row.label!r} is compared with "
                                 f"{unknown}, which is not another row of the preset")
    STUDIES[study.name] = study
    return study
