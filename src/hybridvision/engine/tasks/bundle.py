"""What a task hands the trainer: the datasets and the metadata a checkpoint carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import torch.nn as nn
from torch.utils.data import Dataset


@dataclass
class DataBundle:
    """Datasets and the metadata a checkpoint must carry to be usable alone."""

    train: Dataset
    val: Dataset
    num_classes: int
    class_names: list[str]
    collate: Callable | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. label_to_cat_id, val GT dict
    train_collate: Callable | None = None  # the training batches' collate (default: ``collate``)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model
