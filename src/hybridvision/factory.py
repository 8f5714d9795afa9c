"""Build models by name, with every registered one available.

Importing this module imports every module that registers models (:mod:`hybridvision.models`),
so the model registry is complete::

    from hybridvision.factory import create_model, list_models
    model = create_model("fcos_r50_fpn", num_classes=80)

The model factory only: it sits below the engine (``docs/architecture.md``, "Layers"), and tasks
are made by the engine (:func:`hybridvision.engine.tasks.create_task`, ``task_for_model``).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

import hybridvision.models  # noqa: F401  registers every model builder
from hybridvision.backbones.pretrained import BACKBONE_PARAMETERS, apply_backbone_options
from hybridvision.errors import UserInputError
from hybridvision.options import check_model_options
from hybridvision.registry import (BACKBONE_OPTIONS, build_model, model_builder, model_task, registered_models,
                                   registered_tasks)

__all__ = ["create_model", "list_models", "model_task", "model_builder", "find_models", "describe_model",
           "ModelSummary"]


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model. ``overrides`` go to the builder as keyword arguments, except
    the backbone options (``backbone_weights``, ``freeze_stages``, ``frozen_bn``:
    :mod:`hybridvision.backbones.pretrained`), applied to the built model; the loading report is
    kept as ``model.backbone_weights_report``.

    Every keyword argument is checked against the builder's annotated parameters first
    (:func:`~hybridvision.options.check_model_options`): an unknown one, or a value of the wrong
    type or range, raises a :class:`~hybridvision.errors.UserInputError` naming the key, the value
    and what is allowed (the accepted options for an unknown one). This is the one check of a
    build: :func:`~hybridvision.registry.build_model` then builds with the values it returns.
    """
    overrides = check_model_options(name, overrides, BACKBONE_PARAMETERS)
    options = {k: overrides.pop(k) for k in BACKBONE_OPTIONS if k in overrides}
    model = build_model(name, **overrides)
    if options:
        model.backbone_weights_report = apply_backbone_options(model, **options)
    return model


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (and ``task`` if given)."""
    return registered_models(pattern, task)



def find_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """:func:`list_models`, refusing an unknown ``task`` and a pattern that matches nothing (what
    ``hybridvision models`` lists)."""
    if task is not None and task not in registered_tasks():
        raise UserInputError(f"--task {task}: use one of {', '.join(registered_tasks())}")
    names = list_models(pattern, task=task)
    if not names:
        where = f" among the {task} models" if task else ""
        raise UserInputError(f"no model matches {pattern!r}{where}; run `hybridvision models` for all")
    return names


@dataclass(frozen=True)
class ModelSummary:
    """One row of the models table: a registered model's task, size, input and description."""

    name: str
    task: str
    params: int  # parameters of the default build
    input: str  # e.g. "3 ch, sides ×32": input channels and, for a detector, the multiple it pads to
    description: str  # the builder docstring's first sentence


def describe_model(name: str) -> ModelSummary:
    """A registered model's :class:`ModelSummary`, counted on a build on the meta device (no
    memory, instant)."""
    task = model_task(name)
    with torch.device("meta"):
        model = create_model(name)
    count = sum(p.numel() for p in model.parameters())
    # a detector's input multiple (it pads to it); a classifier pools whatever its last stage gives
    multiple = model.size_divisible if task == "detection" else None
    shape = f"{getattr(model, 'in_chans', 1 if task == 'sbir' else 3)} ch" + (
        f", sides ×{multiple}" if multiple else "")
    return ModelSummary(name, task, count, shape, _first_sentence(model_builder(name)))


def _first_sentence(fn: Any) -> str:
    """A builder docstring's first sentence, without reStructuredText roles and literals."""
    doc = " ".join((inspect.getdoc(fn) or "").split("\n\n")[0].split())
    doc = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc).replace("``", "")
    return re.split(r"(?<=\.)\s", doc, maxsplit=1)[0]
