"""Every registered task conforms to the ``Task`` protocol (engine/tasks/protocol.py).

``isinstance`` with a ``runtime_checkable`` protocol checks only that each member is present,
and a class that declares the protocol (``class DetectionTask(Task)``) would inherit its stubs;
so each member is looked up on the task class itself, outside ``Task``, and each method's
signature (names, kinds, defaults, type hints; static where the protocol's is) is compared with
the protocol's. Controls: classes missing a member, declaring the protocol without defining a
member, or with another signature, are caught.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

from hybridvision.config import TrainConfig
from hybridvision.engine.tasks import DataBundle, Task
from hybridvision.registry import registered_tasks, task_class

_PROTOCOL_BASES = (Task, typing.Protocol, typing.Generic, object)


def _members() -> tuple[dict[str, Any], dict[str, Any]]:
    """(data attributes with their types, methods as defined in the protocol) of ``Task``."""
    data = typing.get_type_hints(Task)
    methods = {n: v for n, v in vars(Task).items()
               if not n.startswith("_") and (isinstance(v, staticmethod) or inspect.isfunction(v))}
    return data, methods


def _defined_outside_protocol(cls: type, name: str) -> bool:
    """``name`` is defined by ``cls`` or a base of it that is not the protocol."""
    return any(name in vars(k) for k in cls.__mro__ if k not in _PROTOCOL_BASES)


def _signature(func, *, drop_self: bool) -> list[tuple[str, Any, Any]]:
    params = list(inspect.signature(func).parameters.values())[int(drop_self):]
    return [(p.name, p.kind, p.default) for p in params]


def conformance_errors(cls: type) -> list[str]:
    """What ``cls`` lacks or declares otherwise than :class:`Task`; empty when it conforms."""
    data, methods = _members()
    errors = []
    for name, kind in data.items():
        if not _defined_outside_protocol(cls, name):
            errors.append(f"{cls.__name__}.{name}: missing")
        elif not isinstance(getattr(cls, name), kind):
            errors.append(f"{cls.__name__}.{name}: {getattr(cls, name)!r} is not a {kind.__name__}")
    for name, proto in methods.items():
        if not _defined_outside_protocol(cls, name):
            errors.append(f"{cls.__name__}.{name}(): missing")
            continue
        static = isinstance(proto, staticmethod)
        own = inspect.getattr_static(cls, name)
        if static and not isinstance(own, (staticmethod, classmethod)):
            errors.append(f"{cls.__name__}.{name}(): must be callable on the class (a staticmethod)")
            continue
        want_func, have_func = getattr(Task, name), getattr(cls, name)
        want = _signature(want_func, drop_self=not static)
        have = _signature(have_func, drop_self=not isinstance(own, (staticmethod, classmethod)))
        if want != have:
            errors.append(f"{cls.__name__}.{name}(): parameters {have} differ from the protocol's {want}")
        elif typing.get_type_hints(want_func) != typing.get_type_hints(have_func):
            errors.append(f"{cls.__name__}.{name}(): type hints {typing.get_type_hints(have_func)} differ "
                          f"from the protocol's {typing.get_type_hints(want_func)}")
    return errors


def test_the_protocol_lists_what_the_engine_calls():
    data, methods = _members()
    assert set(data) == {"name", "primary_metric", "metrics_file", "default_image_size", "default_num_classes"}
    assert set(methods) == {"input_kwargs", "input_channels", "inference", "build_data", "build_eval_data",
                            "data_options", "check_augment", "start_warnings", "batch_loss", "evaluate",
                            "write_evaluation"}


@pytest.mark.parametrize("name", registered_tasks())
def test_every_registered_task_conforms(name):
    cls = task_class(name)
    assert Task in cls.__mro__, f"{cls.__name__} does not declare Task"
    assert conformance_errors(cls) == []
    assert cls.name == name
    # built the ways the package builds tasks: make_task (label_smoothing), create_task (nothing)
    for task in (cls(label_smoothing=0.1), cls(), cls(label_smoothing=0.0, another_option=1)):
        assert isinstance(task, Task)


def test_the_three_tasks_are_registered():
    assert {"detection", "classification", "sbir"} <= set(registered_tasks())


# ------------------------------------------------------------------------------- controls
class _Complete:
    """A conforming task written without declaring the protocol (structural typing)."""

    name = "toy"
    primary_metric = "acc"
    metrics_file = "metrics.json"
    default_image_size = 32
    default_num_classes = 2

    def input_kwargs(self, in_chans: int) -> dict[str, Any]:
        return {}

    def input_channels(self, model: nn.Module) -> int:
        return 3

    def inference(self, model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
        return lambda: model(x)

    def build_data(self, cfg: TrainConfig) -> DataBundle:
        raise NotImplementedError

    def build_eval_data(self, cfg: TrainConfig, *, whole: bool = False) -> DataBundle:
        raise NotImplementedError

    @staticmethod
    def data_options(spec: str) -> dict[str, inspect.Parameter] | None:
        return None

    @staticmethod
    def check_augment(augment: dict[str, Any]) -> None:
        pass

    def start_warnings(self, model: nn.Module, bundle: DataBundle, cfg: TrainConfig) -> list[str]:
        return []

    def batch_loss(self, model: nn.Module, batch, device: torch.device) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, loader, device: torch.device, bundle: DataBundle,
                 progress: bool = False, tta: str | None = None) -> tuple[dict[str, Any], list[dict]]:
        return {}, []

    def write_evaluation(self, evaluation: dict[str, Any], results: list[dict], folder: Path) -> Path:
        return Path(folder)


def test_control_a_conforming_class_passes():
    assert isinstance(_Complete(), Task) and conformance_errors(_Complete) == []


def _without(name: str, bases: tuple[type, ...], *members: str) -> type:
    """A copy of :class:`_Complete` named ``name`` on ``bases``, without ``members``."""
    drop = {*members, "__dict__", "__weakref__"}
    return type(name, bases, {k: v for k, v in vars(_Complete).items() if k not in drop})


def test_control_a_class_missing_a_method_fails():
    missing = _without("Missing", (), "batch_loss")
    assert not isinstance(missing(), Task)
    assert conformance_errors(missing) == ["Missing.batch_loss(): missing"]


def test_control_declaring_the_protocol_without_a_member_fails():
    """``isinstance`` is True for a declared subclass (it inherits the stubs); the test is not fooled."""
    declared = _without("Declared", (Task,), "evaluate", "metrics_file")
    assert isinstance(declared(), Task)
    assert conformance_errors(declared) == ["Declared.metrics_file: missing", "Declared.evaluate(): missing"]


def test_control_another_signature_fails():
    class NoTta(_Complete):
        def evaluate(self, model: nn.Module, loader, device: torch.device, bundle: DataBundle,
                     progress: bool = False) -> tuple[dict[str, Any], list[dict]]:
            return {}, []

    class OtherHint(_Complete):
        def input_channels(self, model: nn.Module) -> float:
            return 3.0

    class NotStatic(_Complete):
        def check_augment(self, augment: dict[str, Any]) -> None:
            pass

    (err,) = conformance_errors(NoTta)
    assert err.startswith("NoTta.evaluate(): parameters")
    (err,) = conformance_errors(OtherHint)
    assert err.startswith("OtherHint.input_channels(): type hints")
    assert conformance_errors(NotStatic) == ["NotStatic.check_augment(): must be callable on the class "
                                             "(a staticmethod)"]
