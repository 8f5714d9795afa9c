"""Tasks: what differs between detection, classification and retrieval runs, behind one small
interface, the :class:`~hybridvision.engine.tasks.protocol.Task` protocol (``protocol.py``),
which every task class declares (``class DetectionTask(Task)``).

Tasks are registered objects (``@register_task``); ``train``, ``eval``, the Python API, ``export``
and ``bench`` ask a model's task instead of branching on its name. The trainer
(``engine/trainer.py``) owns the loop, optimisation, checkpoints and distribution; a task owns

* the data (``build_data``), the loss of one batch (``batch_loss``) and evaluation
  (``evaluate``, ``primary_metric``, ``metrics_file``);
* what a model of the task takes and gives outside training: ``default_image_size`` and
  ``default_num_classes`` (bench, export), ``input_kwargs(in_chans)`` (options a builder needs
  for the input), ``input_channels(model)`` and ``inference(model, x)`` (one whole inference call
  on a batch, e.g. forward + decode).

The tasks read datasets through a data spec string:

- detection: ``builtin:amounts`` or ``coco:TRAIN_ANN,TRAIN_IMAGES[,VAL_ANN,VAL_IMAGES]``
  (without a val pair, a fixed 20 % of the training images, chosen by seed, is held out);
- classification: ``builtin:sketches``, ``quickdraw:DIR`` or ``tuberlin:DIR``;
- retrieval: ``builtin:bimodal`` or ``folders:SKETCH_DIR,PHOTO_DIR[,UNSEEN.txt]``.

One file per task: ``detection.py``, ``classification.py``, ``retrieval.py``; ``bundle.py`` holds
what they hand the trainer (:class:`DataBundle`), ``protocol.py`` the interface. A task
registers when its file is imported, so a new one is imported here.
"""

from __future__ import annotations

from typing import Any

import hybridvision.models  # noqa: F401  registers every model, so "auto" can look up its task
from hybridvision.config import TrainConfig
from hybridvision.engine.tasks.bundle import DataBundle, unwrap
from hybridvision.engine.tasks.classification import ClassificationTask
from hybridvision.engine.tasks.detection import DetectionTask, resolve_detection_data, small_box_warning
from hybridvision.engine.tasks.protocol import Task
from hybridvision.engine.tasks.retrieval import SBIRTask
from hybridvision.registry import model_task, task_class

__all__ = ["DataBundle", "DetectionTask", "ClassificationTask", "SBIRTask", "Task", "create_task", "make_task",
           "resolve_detection_data", "small_box_warning", "task_for_model", "unwrap"]


def create_task(name: str, **kwargs: Any):
    """An instance of the task registered as ``name`` (``"detection"``, ``"classification"``)."""
    return task_class(name)(**kwargs)


def task_for_model(model: str, **kwargs: Any):
    """The task a registered model was registered for, as an instance."""
    return create_task(model_task(model), **kwargs)


def make_task(cfg: TrainConfig) -> Task:
    """The task of a run: from ``cfg.task`` or, when ``auto``, from the model registry."""
    name = model_task(cfg.model) if cfg.task == "auto" else cfg.task
    return task_class(name)(label_smoothing=cfg.label_smoothing)
