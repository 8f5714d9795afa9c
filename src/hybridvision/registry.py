"""Model registry: ``@register_model`` thin builders, ``create_model`` and ``list_models``.

Every model of the toolkit is built by name, as in timm::

    from hybridvision import create_model
    model = create_model("fcos_r50_fpn", num_classes=80)

Builders take keyword-only arguments; ``create_model(name, **overrides)`` forwards the overrides.
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Callable

import torch.nn as nn

from hybridvision.errors import UserInputError

__all__ = ["register_model", "create_model", "list_models", "model_builder", "UnknownModelError"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_TASKS: dict[str, str] = {}


class UnknownModelError(UserInputError, KeyError):
    """Raised for a model name that is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def register_model(fn: Callable[..., nn.Module] | None = None, *, task: str = "detection"):
    """Register a model builder under its function name.

    Args:
        fn: builder ``fn(*, num_classes=..., **kw) -> nn.Module``.
        task: ``"detection"`` or ``"classification"``; ``list_models(task=...)`` filters on it.
    """

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = f.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = f
        _TASKS[name] = task
        return f

    return wrap(fn) if fn is not None else wrap


def _ensure_loaded() -> None:
    # Importing the model packages runs their @register_model decorators.
    import hybridvision.models  # noqa: F401


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (and ``task`` if given)."""
    _ensure_loaded()
    return sorted(
        n for n in _MODELS if fnmatch.fnmatch(n, pattern) and (task is None or _TASKS[n] == task)
    )


def model_task(name: str) -> str:
    _ensure_loaded()
    model_builder(name)
    return _TASKS[name]


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; a clear error with suggestions otherwise."""
    _ensure_loaded()
    if name not in _MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Run `hybridvision models` to list the registry."
        )
    return _MODELS[name]


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model. ``overrides`` go to the builder as keyword arguments.

    Unknown keyword arguments raise a ``TypeError`` naming the accepted ones.
    """
    builder = model_builder(name)
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        bad = [k for k in overrides if k not in params]
        if bad:
            raise TypeError(
                f"model {name!r} does not take {', '.join(bad)}; it accepts: {', '.join(params)}"
            )
    model = builder(**overrides)
    model.model_name = name  # type: ignore[attr-defined]
    return model
