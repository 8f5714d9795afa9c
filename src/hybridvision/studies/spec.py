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

__all__ = ["StudyRow", "Study", "STUDIES", "register_study"]


@dataclass
class StudyRow:
    label: str  # as in the seed's table, e.g. "NL-FCOS-cls"
    model: str  # registered model name
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.label).strip("_")


@dataclass
class Study:
    name: str
    title: str
    intro: str
    rows: dict[str, list[StudyRow]]  # preset -> rows (quick presets use small models)
    presets: dict[str, dict[str, Any]]  # preset -> TrainConfig fields
    default_data: str
    columns: list[str]
    tables: list[tuple[str, list[str]]]  # (title, columns) of the report
    formats: dict[str, tuple[float, int, bool]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    measure: Callable[..., dict[str, float]] | None = None  # (model, cfg, device) -> cost metrics
    extra_tables: Callable[..., list[tuple[str, str]]] | None = None  # (study, preset, out, device, row labels)


STUDIES: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    STUDIES[study.name] = study
    return study
