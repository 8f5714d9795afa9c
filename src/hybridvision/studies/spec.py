"""What a study is, as data: :class:`StudyRow`, :class:`Study` and the registry of studies.

A leaf of the studies package: each study module (``fcos_nonlocal``, ``hybrid_classification``, …)
registers into :data:`STUDIES` from here with :func:`register_study`, and
:mod:`hybridvision.studies.runner` imports them to run them, so no import circle joins the runner
and the studies. What several studies share (the smoke preset, detection columns and costs, the
paper presets' ImageNet backbones) is in :mod:`hybridvision.studies.common`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

__all__ = ["StudyRow", "Study", "STUDIES", "register_study", "PRESET_PURPOSES", "PRESET_ALIASES"]


@dataclass
class StudyRow:
    """One row of a study's tables: a registered model with its options, trained once per seed.

    Attributes:
        label (str): the row's name in the report (and its folder, as :attr:`slug`), as in the
            thesis's table, e.g. ``"NL-FCOS-cls"``.
        model (str): a registered model name (``hybridvision models``), e.g. ``"nl_fcos_small_cls"``.
        model_kwargs (dict[str, Any]): the model's options (TrainConfig ``model_kwargs``), e.g.
            ``{"head_attn": "nonlocal"}``; default none.
        reference (str | None): the label of the row this one is compared with, seed by seed
            (paired statistics), and whose initialisation it starts from in every tensor they
            share: the study's baseline, or the row's own plain counterpart where the question is
            pairwise (each "(nl)" model of thesis B), e.g. ``"FCOS"``. None: this row is a
            reference, compared with nothing.
        also_compared_with (tuple[str, ...]): further rows this one is compared with seed by seed
            (paired statistics only: the initialisation stays paired with ``reference``), e.g.
            ``("CornerFCOS multi normal",)`` for a variant against its sibling; default none.
    """

    label: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None
    also_compared_with: tuple[str, ...] = ()

    @property
    def compared_with(self) -> tuple[str, ...]:
        """Every row this one is compared with: ``reference`` first, then ``also_compared_with``."""
        return ((self.reference,) if self.reference else ()) + tuple(self.also_compared_with)

    @property
    def slug(self) -> str:
        """The label as a folder name: ``OUT/<slug>/seed<k>/`` holds the row's runs."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.label).strip("_")


# What each preset is for (every study has these three; ``quick`` is an alias of ``cpu``).
PRESET_PURPOSES = {
    "smoke": "tests: a few steps, seconds; its numbers mean nothing",
    "cpu": "converged on the built-in data on a 2-core CPU (the README's tables)",
    "paper": "the thesis's recipe: GPUs, real data",
}
PRESET_ALIASES = {"quick": "cpu"}


@dataclass
class Study:
    """One question answered by training every row of a table over several seeds: what
    :func:`hybridvision.studies.runner.run_study` runs and how its report reads.

    A run's metrics are its final evaluation's (``AP``, ``AP50``, … for detection; ``top1``,
    ``top5`` for classification; ``mAP``, … for retrieval) plus ``train_s`` and ``train_loop_s``,
    plus what :attr:`measure` returns. Every column, table, format, label, unit and verdict below
    names such a metric.

    Attributes:
        name (str): the study's name on the command line (``hybridvision study NAME``) and in
            its default folder ``runs/study-NAME-PRESET``, e.g. ``"fcos-nonlocal"``.
        title (str): the report's heading, naming the source, e.g. ``"Non-local blocks in FCOS
            (thesis A, Tables 4.1–4.3)"``.
        intro (str): the report's paragraph on how each row is trained, evaluated and compared
            (Markdown); the runner appends the preset, data, seeds, device and command.
        rows (dict[str, list[StudyRow]]): preset → its rows, in the order of the tables, e.g.
            ``{"smoke": small, "cpu": small, "paper": published}`` (small models on the CPU
            presets, the published ones on ``paper``). The same presets as :attr:`presets`.
        presets (dict[str, dict[str, Any]]): preset → the TrainConfig fields of every run,
            e.g. ``{"smoke": smoke_preset(), "cpu": {"image_size": 128, "epochs": 24, …},
            "paper": {…}}``; the keys are ``smoke``, ``cpu`` and ``paper``
            (:data:`PRESET_PURPOSES`). ``model``, ``model_kwargs``, ``seed``, ``data`` and ``out``
            come from the row, the seed, ``--data`` and ``--out``.
        default_data (str): the data spec used without ``--data``, e.g. ``"builtin:amounts"``.
        columns (list[str]): every metric the report aggregates (mean ± std over seeds) and
            writes to ``results.csv``, e.g. ``["AP", "AP50", "infer_ms", "params_m"]``.
        tables (list[tuple[str, list[str]]]): the report's tables, ``(title, columns)`` each,
            e.g. ``[("COCO metrics (percent)", ["AP", "AP50"]), ("Cost", ["infer_ms"])]``.
        formats (dict[str, tuple[float, int, bool]]): column → ``(scale, decimals, show ± std)``
            in the tables; a column not named is a fraction shown in percent ``(100.0, 1,
            True)``, e.g. ``{"infer_ms": (1.0, 1, True), "params_m": (1.0, 2, False)}``.
        labels (dict[str, str]): column → its header in the tables and figures, e.g.
            ``{"infer_ms": "ms/img"}``; a column not named is shown by its key.
        units (dict[str, tuple[float, str]]): metric → ``(scale, unit)`` of its differences in
            words where its name misleads the default
            (:func:`~hybridvision.studies.stats.metric_unit`: ``_ms`` → ms, ``_s`` → s, ``_mb``
            → MiB, else a fraction in points), e.g. ``{"AP_ms": (100.0, "points")}`` for an AP
            whose name ends in ``_ms``.
        measure (Callable[[nn.Module, TrainConfig, torch.device], dict[str, float]] | None):
            the costs of one trained run, merged into its metrics; called after all training,
            one model at a time, e.g. :func:`hybridvision.studies.common.measure_detector`
            (``infer_ms``, ``params_m``, …). None: no costs.
        extra_tables (Callable[[Study, str, Path, torch.device, list[str]], list[tuple[str,
            str]]] | None): ``(study, preset, out, device, row labels)`` → further ``(title,
            Markdown)`` tables put before the metric tables, e.g. thesis B's Table 3.1 of
            ``hybrid_classification.cost_table``. None: none.
        question (str): the question the report's first paragraph answers, e.g. ``"Does a
            non-local block help FCOS, and at what cost?"``.
        primary (str): the metric the answer judges accuracy by (a fraction, higher is better),
            e.g. ``"AP"`` or ``"top1"``; default ``"AP"``.
        cost (str): the metric the answer judges cost by (lower is better), e.g. ``"infer_ms"``;
            default ``"infer_ms"``.
        lower_is_better (frozenset[str]): the metrics whose decrease is an improvement in the
            paired verdicts, e.g. ``frozenset({"infer_ms", "params_m"})``; default the usual
            costs (times, memory, parameters, GFLOPs).
        verdict_columns (tuple[str, ...]): metrics compared seed by seed besides
            :attr:`primary` and :attr:`cost`, e.g. ``("AP50", "APs")``; default none.
        figures (Callable[[Study, str, Path, torch.device, list[dict], list[dict]], list[tuple[str,
            Any]]] | None): ``(study, preset, out, device, runs, records)`` → ``[(title, PNG bytes
            or a callable returning PNG bytes or a matplotlib Figure)]`` for ``report.html``,
            e.g. :func:`hybridvision.studies.figures.detection_figures`. None: only the tables,
            learning curves and trade-off plot.
        train_run (Callable[[dict[str, Any], tuple[str, dict] | None, str], None] | None): trains
            one run in several steps instead of one ``train`` call, ``(cfg dict, init_like,
            preset)`` → None; it must leave ``OUT/<row>/seed<k>/trained.json`` and
            ``checkpoints/last.*`` as a one-step run does, e.g. ``sbir.train_sbir_run`` (three
            stages). None: one ``train`` call per run.
    """

    name: str
    title: str
    intro: str
    rows: dict[str, list[StudyRow]]
    presets: dict[str, dict[str, Any]]
    default_data: str
    columns: list[str]
    tables: list[tuple[str, list[str]]]
    formats: dict[str, tuple[float, int, bool]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    units: dict[str, tuple[float, str]] = field(default_factory=dict)
    measure: Callable[..., dict[str, float]] | None = None
    extra_tables: Callable[..., list[tuple[str, str]]] | None = None
    question: str = ""
    primary: str = "AP"
    cost: str = "infer_ms"
    lower_is_better: frozenset[str] = frozenset(
        {"infer_ms", "infer_mem_mb", "train_mem_mb", "train_ms", "params_m", "gflops", "train_s", "train_loop_s"})
    verdict_columns: tuple[str, ...] = ()
    figures: Callable[..., list[tuple[str, Any]]] | None = None
    train_run: Callable[..., None] | None = None


STUDIES: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    """Add ``study`` to :data:`STUDIES` under its name (``hybridvision study NAME`` then runs it)
    and return it. Refuses (ValueError) presets without rows or rows without a preset, and a row
    compared with a label that is not another row of the same preset."""
    unmatched = sorted(set(study.rows) ^ set(study.presets))
    empty = sorted(p for p, rows in study.rows.items() if not rows)
    if unmatched or empty:
        raise ValueError(f"study {study.name!r}: presets {unmatched or empty} have "
                         f"{'rows or settings but not both' if unmatched else 'no rows'}; give every preset "
                         "of Study.presets its rows in Study.rows")
    for preset, rows in study.rows.items():
        labels = [r.label for r in rows]
        for row in rows:
            unknown = [ref for ref in row.compared_with if ref not in labels or ref == row.label]
            if unknown:
                raise ValueError(f"study {study.name!r} preset {preset!r}: row {row.label!r} is compared with "
                                 f"{unknown}, which is not another row of the preset")
    STUDIES[study.name] = study
    return study
