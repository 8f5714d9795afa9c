"""Tasks are registered objects that the verbs ask: a new task and a model registered for it are
benchmarked and exported with the task's own inputs and defaults, without any code naming it."""

from __future__ import annotations

import torch
import torch.nn as nn

import hybridvision.registry as registry
from hybridvision.bench import build_bench_target
from hybridvision.engine.tasks import ClassificationTask, create_task, task_for_model
from hybridvision.export import default_size


class _Doubler(nn.Module):
    def __init__(self, num_classes: int = 2, in_chans: int = 5) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.fc = nn.Linear(in_chans, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


class _ToyTask(ClassificationTask):
    default_image_size = 40
    default_num_classes = 7
    calls: list[str] = []

    @staticmethod
    def inference(model, x):
        _ToyTask.calls.append(f"inference {tuple(x.shape)}")
        return lambda: model(x)


def _toy_model(*, num_classes: int = 2, in_chans: int = 5) -> nn.Module:
    return _Doubler(num_classes, in_chans)


def test_a_registered_task_is_what_bench_and_export_ask(monkeypatch) -> None:
    monkeypatch.setitem(registry._TASKS, "toy", _ToyTask)
    monkeypatch.setitem(registry._MODELS, "toy_model", _toy_model)
    monkeypatch.setitem(registry._MODEL_TASKS, "toy_model", "toy")
    assert isinstance(task_for_model("toy_model"), _ToyTask)

    target = build_bench_target("toy_model", size=16, in_chans=3)
    assert target.task == "toy"
    assert target.model.fc.out_features == 7  # the task's default class count
    assert _ToyTask.calls == ["inference (1, 3, 16, 16)"]  # the task's input and inference call
    assert target.run().shape == (1, 7)
    assert default_size("toy", {}) == 40 and default_size("toy", {"image_size": 96}) == 96


def test_the_built_in_tasks() -> None:
    assert registry.registered_tasks() == ["classification", "detection", "sbir"]
    det, cls = create_task("detection"), create_task("classification")
    assert (det.default_image_size, cls.default_image_size) == (512, 224)
    assert det.metrics_file == "coco_metrics.json" and cls.metrics_file == "metrics.json"
    assert det.input_kwargs(1) == {} and cls.input_kwargs(1) == {"in_chans": 1}
