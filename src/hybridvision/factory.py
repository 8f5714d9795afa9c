"""Build models by name, with every registered one available.

Importing this module imports every module that registers models (:mod:`hybridvision.models`),
so the model registry is complete::

    from hybridvision.factory import create_model, list_models
    model = create_model("fcos_r50_fpn", num_classes=80)

The model factory only: it sits below the engine (``docs/architecture.md``, "Layers"), and tasks
are made by the engine (:func:`hybridvision.engine.tasks.create_task`, ``task_for_model``).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

import hybridvision.models  # noqa: F401  registers every model builder
from hybridvision.backbones.pretrained import BACKBONE_PARAMETERS, apply_backbone_options
from hybridvision.options import check_model_options
from hybridvision.registry import BACKBONE_OPTIONS, build_model, model_builder, model_task, registered_models

__all__ = ["create_model", "list_models", "model_task", "model_builder"]


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

