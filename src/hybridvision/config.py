"""Run configuration: one dataclass, YAML in and out, ``key=value`` overrides.

A run folder's ``config.yaml`` is exactly :meth:`TrainConfig.to_dict`, so ``hybridvision train
--config runs/x/config.yaml`` repeats a run and ``--resume`` continues it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from hybridvision.errors import UserInputError
from hybridvision.fileio import atomic_write_text

__all__ = ["TrainConfig", "load_config", "apply_overrides", "atomic_write_text"]


@dataclass
class TrainConfig:
    """Everything a training run needs. Defaults are the FCOS recipe at small scale."""

    model: str = "fcos_demo"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # "builtin:amounts" | "coco:TRAIN_ANN,TRAIN_IMAGES[,VAL_ANN,VAL_IMAGES]" for detection;
    # "builtin:sketches" | "quickdraw:DIR" | "tuberlin:DIR" for classification.
    data: str = "builtin:amounts"
    data_root: str = "data"  # where built-in datasets are generated
    data_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. n_train for builtin data
    task: str = "auto"  # "detection" | "classification" | "auto" (from the model registry)
    image_size: int = 128
    epochs: int = 12
    max_steps: int = 0  # > 0 stops after this many optimizer steps in total (smoke runs)
    batch_size: int = 16
    optimizer: str = "sgd"  # "sgd" | "adamw"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine" | "step"
    milestones: list[float] = field(default_factory=lambda: [0.67, 0.89])  # fractions, step schedule
    warmup_steps: int = 100
    warmup_factor: float = 0.001
    grad_clip: float = 0.0  # max gradient L2 norm; 0 disables
    label_smoothing: float = 0.1  # classification only
    amp: bool = True  # mixed precision, used on CUDA only
    augment: dict[str, Any] = field(default_factory=dict)  # options for the transform builder
    workers: int = 0
    cache_images: bool = False  # decode a detection dataset's images once into memory
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    out: str = "runs/train"
    eval_every: int = 1  # evaluate every N epochs (0: only at the end)
    val_limit: int = 0  # evaluate on at most this many val images (0: all)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserInputError(
                f"{source}: unknown key(s) {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(known))}"
            )
        return cls(**d)


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML config, with a one-line error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"{p}: config file not found; pass an existing YAML file")
    try:
        d = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserInputError(f"{p}{where}: not valid YAML; fix the syntax") from None
    if not isinstance(d, dict):
        raise UserInputError(f"{p}: expected a mapping of config keys at the top level")
    return TrainConfig.from_dict(d, source=str(p))


def _parse_value(text: str) -> Any:
    # YAML scalars: 0.1 -> float, true -> bool, [1,2] -> list, {a: 1} -> dict, else str.
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``key=value`` strings; ``model_kwargs.width=0.5`` sets a nested key."""
    d = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise UserInputError(f"override {item!r}: expected key=value, e.g. lr=0.01")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        target = d
        for part in parts[:-1]:
            if part not in target or not isinstance(target[part], dict):
                if parts[0] in ("model_kwargs", "augment", "data_kwargs"):
                    target = target.setdefault(part, {})
                    continue
                raise UserInputError(f"override {item!r}: {part!r} is not a nested config key")
            target = target[part]
        target[parts[-1]] = _parse_value(value)
    return TrainConfig.from_dict(d, source="overrides")


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
