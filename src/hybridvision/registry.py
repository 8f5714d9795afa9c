"""Model and task registries: ``@register_model`` thin builders, ``@register_task`` task classes.

A leaf: it imports nothing of the package but the error type, so any module can register into it
without an import circle. Building by name — which needs every model module imported first — is
:mod:`hybridvision.factory`'s job::

    from hybridvision.factory import create_model
    model = create_model("fcos_r50_fpn", num_classes=80)

Builders take keyword-only arguments; ``create_model(name, **overrides)`` forwards the overrides.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from typing import Any
from collections.abc import Callable, Mapping

from hybridvision.errors import UserInputError

__all__ = ["register_model", "register_task", "registered_models", "model_builder", "model_task",
           "model_options", "check_model_kwargs", "build_model", "task_class", "registered_tasks",
           "UnknownModelError"]

_MODELS: dict[str, Callable[..., Any]] = {}
_MODEL_TASKS: dict[str, str] = {}
_TASKS: dict[str, type] = {}


class UnknownModelError(UserInputError, KeyError):
    """Raised for a model name that is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def register_model(fn: Callable[..., Any] | None = None, *, task: str = "detection",
                   options: Mapping[str, inspect.Parameter] | None = None):
    """Register a model builder under its function name (the one way to add a model)::

        @register_model(task="detection", options=preset_options(build_mydet, MyDetector, MyHead))
        def mydet_small(*, num_classes: int = 10, **kwargs: Any) -> MyDetector:
            \"\"\"One line: what it is (``hybridvision models`` shows it).\"\"\"
            return build_mydet(**{"num_classes": num_classes, "depth": 18, **kwargs})

    Args:
        fn: builder ``fn(*, num_classes=..., **kw) -> nn.Module``.
        task: the name of a registered task (``"detection"``, ``"classification"``);
            ``list_models(task=...)`` filters on it and ``train``/``eval`` run it.
        options: for a builder that forwards ``**kwargs``, the parameters it forwards them to
            (name → annotated :class:`inspect.Parameter`, e.g. from
            :func:`hybridvision.detectors.presets.common.preset_options`); kept, in its order, as
            ``fn.options``, so an unknown or ill-typed option is refused, with the valid ones,
            before anything is built, and ``hybridvision models NAME`` lists them.
    """

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        name = f.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        if options is not None:
            f.options = dict(options)
        _MODELS[name] = f
        _MODEL_TASKS[name] = task
        return f

    return wrap(fn) if fn is not None else wrap


def register_task(name: str):
    """Register a task class (``engine/tasks/``) under ``name``; ``cls.name`` is set to it."""

    def wrap(cls: type) -> type:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        cls.name = name
        _TASKS[name] = cls
        return cls

    return wrap


def registered_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Sorted names registered so far matching a shell-style ``pattern`` (and ``task``)."""
    return sorted(
        n for n in _MODELS if fnmatch.fnmatch(n, pattern) and (task is None or _MODEL_TASKS[n] == task)
    )


def model_builder(name: str) -> Callable[..., Any]:
    """The builder registered as ``name``; a clear error with suggestions otherwise."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Run `hybridvision models` to list the registry."
        )
    return _MODELS[name]


def model_task(name: str) -> str:
    """The task name a model was registered for."""
    model_builder(name)
    return _MODEL_TASKS[name]


def model_options(name: str) -> list[str] | None:
    """The keyword options a registered builder accepts, or None when it cannot tell.

    A builder's own keyword parameters, plus — for one that forwards ``**kwargs`` — the names it
    declares in an ``options`` attribute (e.g. every FCOS and head option a preset passes on).
    """
    builder = model_builder(name)
    params = inspect.signature(builder).parameters
    own = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    if len(own) == len(params):
        return own
    extra = getattr(builder, "options", None)
    return None if extra is None else sorted(set(own) | set(extra))


# Options every ResNet-based model takes, applied after it is built by ``factory.create_model``
# (:mod:`hybridvision.backbones.pretrained`): pretrained weights, frozen stages, frozen BatchNorm.
BACKBONE_OPTIONS = ("backbone_weights", "freeze_stages", "frozen_bn")


def check_model_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """One error naming the options ``name`` does not take, and the valid ones (builds nothing)."""
    valid = model_options(name)
    if valid is None:
        return
    valid = [*valid, *BACKBONE_OPTIONS]
    bad = sorted(k for k in kwargs if k not in valid)
    if bad:
        raise UserInputError(
            f"model_kwargs: {name!r} does not take {', '.join(bad)}; valid: {', '.join(valid)}"
        )


def build_model(name: str, **overrides: Any) -> Any:
    """Build a registered model from ``overrides`` as given: no check of their names or types.

    :func:`hybridvision.factory.create_model` checks a user's options once
    (:func:`hybridvision.options.check_model_options`) and then builds through here; a builder
    that builds another registered model (FCOS on a classification backbone) calls this. A
    keyword that a builder forwards (``**kwargs``) to a class that lacks it is still one error.
    """
    builder = model_builder(name)
    try:
        model = builder(**overrides)
    except TypeError as e:  # a keyword a builder forwards (**kwargs) to a class that lacks it
        raise UserInputError(f"model_kwargs for {name!r}: {e}; see `hybridvision models {name}` "
                             "and the builder's docstring") from None
    model.model_name = name
    return model


def registered_tasks() -> list[str]:
    return sorted(_TASKS)


def task_class(name: str) -> type:
    """The task class registered as ``name``; a clear error otherwise."""
    if name not in _TASKS:
        raise UserInputError(f"task {name!r}: unknown; use one of {', '.join(sorted(_TASKS)) or '(none)'}")
    return _TASKS[name]
