"""The task interface: what ``train``, ``eval``, the Python API, ``export``, ``bench`` and the
config checks call on a task, as one :class:`typing.Protocol`.

A task class declares it by subclassing :class:`Task` (``class DetectionTask(Task)``), and
defines every member itself: the protocol's method bodies are stubs, never a fallback
(``tests/test_task_protocol.py`` checks each registered task against this file, signatures
included). A task is built as ``TaskClass(label_smoothing=…)`` and ignores keyword arguments it
does not use (``**_``), so one call builds any of them (``engine.tasks.make_task``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn

from hybridvision.config import TrainConfig
from hybridvision.engine.tasks.bundle import DataBundle

__all__ = ["Task"]


@runtime_checkable
class Task(Protocol):
    """One kind of run (detection, classification, SBIR): its data, loss, evaluation and the
    shape of its models' inputs. The trainer owns the loop, optimisation, checkpoints and
    distribution; a task owns everything below that differs between kinds of run.

    Attributes:
        name: the registered name (``register_task`` sets it).
        primary_metric: the evaluation key that picks ``best`` (``"AP"``, ``"top1"``, ``"mAP"``).
        metrics_file: the file :meth:`write_evaluation` writes (``coco_metrics.json``, …).
        default_image_size: input side when none is given (``bench``, ``export``).
        default_num_classes: classes when none is given (``bench``).
    """

    name: str
    primary_metric: str
    metrics_file: str
    default_image_size: int
    default_num_classes: int

    # ---- the model's input outside training (bench, export)
    def input_kwargs(self, in_chans: int) -> dict[str, Any]:
        """Builder options a model of this task needs for ``in_chans``-channel inputs."""
        ...

    def input_channels(self, model: nn.Module) -> int:
        """The channels ``model`` takes (3 for RGB, 1 for a grey sketch)."""
        ...

    def inference(self, model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
        """One whole inference call on the batch ``x`` ``[B, C, S, S]`` (e.g. forward + decode),
        as a function of no arguments (``bench`` times it)."""
        ...

    # ---- data (config checks call the two static ones on the class, before any instance)
    def build_data(self, cfg: TrainConfig) -> DataBundle:
        """The training and validation data of a run."""
        ...

    def build_eval_data(self, cfg: TrainConfig, *, whole: bool = False) -> DataBundle:
        """The data ``eval`` scores (``whole``: every image of explicitly given data)."""
        ...

    @staticmethod
    def data_options(spec: str) -> dict[str, inspect.Parameter] | None:
        """The ``data_kwargs`` a data spec takes, as annotated parameters; None for a spec of
        another task."""
        ...

    @staticmethod
    def check_augment(augment: dict[str, Any]) -> None:
        """UserInputError for an ``augment`` option this task's transforms do not take."""
        ...

    # ---- training
    def start_warnings(self, model: nn.Module, bundle: DataBundle, cfg: TrainConfig) -> list[str]:
        """Lines printed before training starts (e.g. boxes smaller than the finest stride)."""
        ...

    def batch_loss(self, model: nn.Module, batch, device: torch.device) -> dict[str, torch.Tensor]:
        """The losses of one training batch; ``"loss"`` is the one to back-propagate."""
        ...

    # ---- evaluation
    def evaluate(self, model: nn.Module, loader, device: torch.device, bundle: DataBundle,
                 progress: bool = False, tta: str | None = None) -> tuple[dict[str, Any], list[dict]]:
        """``(evaluation, results)``: the metrics (``primary_metric`` among them, at the top
        level or under ``"metrics"``) and the per-image results (COCO detections; else empty)."""
        ...

    def write_evaluation(self, evaluation: dict[str, Any], results: list[dict], folder: Path) -> Path:
        """Write one evaluation into ``folder`` (``metrics_file`` and its companions); returns
        the metrics file."""
        ...
