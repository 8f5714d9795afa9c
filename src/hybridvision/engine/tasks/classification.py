"""The classification task: image and sketch classes, cross-entropy with label smoothing, top-1/top-5."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Subset

from hybridvision.config import TrainConfig
from hybridvision.data import classification_transforms
from hybridvision.data.classification_transforms import build_classification_transforms
from hybridvision.data.builtin.sketches import make_sketches
from hybridvision.data.sketches import build_sketch_dataset, quickdraw_dataset, tuberlin_dataset
from hybridvision.engine.tasks.bundle import DataBundle, unwrap
from hybridvision.engine.tasks.protocol import Task
from hybridvision.errors import UserInputError
from hybridvision.evaluation.classification import topk_accuracy
from hybridvision.fileio import atomic_write_json
from hybridvision.options import keyword_parameters
from hybridvision.registry import register_task


@register_task("classification")
class ClassificationTask(Task):
    """Image/sketch classification: cross-entropy with label smoothing, top-1/top-5."""

    name = "classification"
    primary_metric = "top1"
    metrics_file = "metrics.json"
    default_image_size = 224
    default_num_classes = 1000

    def __init__(self, label_smoothing: float = 0.1, **_: Any):
        self.label_smoothing = label_smoothing

    @staticmethod
    def input_kwargs(in_chans: int) -> dict[str, Any]:
        """Builder options a model needs for ``in_chans`` inputs (1 for grey sketches)."""
        return {"in_chans": in_chans}

    @staticmethod
    def input_channels(model: nn.Module) -> int:
        return int(getattr(model, "in_chans", 3))

    @staticmethod
    def inference(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
        """One whole inference call on ``x`` ``[B, C, S, S]``: the forward pass (logits)."""
        return lambda: model(x)

    def build_data(self, cfg: TrainConfig) -> DataBundle:
        in_chans = int(cfg.model_kwargs.get("in_chans", 3))
        t_train = build_classification_transforms(True, cfg.image_size, sketch=True, in_chans=in_chans,
                                                  **cfg.augment)
        t_val = build_classification_transforms(False, cfg.image_size, sketch=True, in_chans=in_chans)
        kw = dict(cfg.data_kwargs)
        train = build_sketch_dataset(cfg.data, "train", t_train, root=cfg.data_root, seed=cfg.seed, **kw)
        val = build_sketch_dataset(cfg.data, "val", t_val, root=cfg.data_root, seed=cfg.seed, **kw)
        if cfg.val_limit and len(val) > cfg.val_limit:
            g = torch.Generator().manual_seed(cfg.seed)
            val = Subset(val, torch.randperm(len(val), generator=g)[: cfg.val_limit].tolist())
        classes = list(train.classes)
        return DataBundle(train=train, val=val, num_classes=len(classes), class_names=classes)

    def build_eval_data(self, cfg: TrainConfig, *, whole: bool = False) -> DataBundle:
        """The data ``eval`` scores: the validation split of ``cfg.data``."""
        return self.build_data(cfg)

    @staticmethod
    def data_options(spec: str) -> dict[str, inspect.Parameter] | None:
        """The ``data_kwargs`` of ``spec``, as annotated parameters (the config checks them): the
        reader's (:func:`quickdraw_dataset`, :func:`tuberlin_dataset`) but the run's ``seed``; for
        ``builtin:sketches`` the QuickDraw reader's but ``fmt``, and ``builtin_seed`` (the
        generator's ``seed``); None for a spec of another task."""
        kind, _, rest = spec.partition(":")
        if kind == "quickdraw" and rest:
            return keyword_parameters(quickdraw_dataset, exclude=("root", "split", "transform", "seed"))
        if kind == "tuberlin" and rest:
            return keyword_parameters(tuberlin_dataset, exclude=("root", "split", "transform", "seed"))
        if spec == "builtin:sketches":
            reader = keyword_parameters(quickdraw_dataset, exclude=("root", "split", "transform", "seed", "fmt"))
            return {**reader, "builtin_seed": keyword_parameters(make_sketches)["seed"].replace(name="builtin_seed")}
        return None

    @staticmethod
    def check_augment(augment: dict[str, Any]) -> None:
        """UserInputError for an ``augment`` option the classification transforms do not take."""
        classification_transforms.check_augment(augment)

    @staticmethod
    def start_warnings(model: nn.Module, bundle: DataBundle, cfg: TrainConfig) -> list[str]:
        return []

    def write_evaluation(self, evaluation: dict[str, Any], results: list[dict], folder: Path) -> Path:
        """``folder/metrics.json`` (top-1, top-5, image count)."""
        return atomic_write_json(Path(folder) / self.metrics_file, evaluation, indent=1)

    def batch_loss(self, model: nn.Module, batch, device: torch.device) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = model(images.to(device, non_blocking=True))
        loss = F.cross_entropy(logits, labels.to(device), label_smoothing=self.label_smoothing)
        return {"loss": loss}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, bundle: DataBundle,
                 progress: bool = False, tta: str | None = None) -> tuple[dict[str, Any], list[dict]]:
        if tta is not None:
            raise UserInputError(f"--tta {tta}: test-time augmentation applies to detectors, not classifiers")
        model = unwrap(model)
        was_training = model.training
        model.eval()
        logits_all, labels_all = [], []
        for images, labels in loader:
            logits_all.append(model(images.to(device)).float().cpu())
            labels_all.append(labels)
        model.train(was_training)
        logits = torch.cat(logits_all)
        labels = torch.cat(labels_all)
        acc = topk_accuracy(logits, labels, ks=(1, min(5, logits.shape[1])))
        return {"top1": float(acc["top1"]), "top5": float(acc.get("top5", 1.0))}, []
