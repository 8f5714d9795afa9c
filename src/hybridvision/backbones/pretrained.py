"""Pretrained ResNet weights from local files, and the frozen stages and BatchNorm of the
detection recipes (torchvision's ``resnet_fpn_backbone``: ``trainable_layers=3``,
``FrozenBatchNorm2d``; Detectron2's ``FREEZE_AT=2``).

Every model option set here is common to the models with a ResNet ``backbone`` (FCOS,
NL-FCOS, RetinaNet, CenterNet, CornerFCOS) and to the ResNet classifiers:

* ``backbone_weights``: a ``.safetensors`` file, a ``.pth``/``.pt`` file (read with
  ``torch.load(weights_only=True)``: a pickle that carries code is refused, never run), or
  ``torchvision:NAME`` (e.g. ``torchvision:resnet50``: the file torchvision would download, looked
  up in the torch hub cache, ``~/.cache/torch/hub/checkpoints``; nothing is downloaded — when it is
  missing, the message says which file to put where). torchvision's and timm's ResNet key names
  are the toolkit's; wrappers (``state_dict``, ``model``) and prefixes (``module.``,
  ``backbone.``, ``backbone.body.``) are removed, the classifier (``fc.*``) is dropped.
* ``freeze_stages``: 0–5, the stem (1) and the first residual stages (2–5) stop learning
  (default 2 with ``backbone_weights`` — the stem and ``layer1``, as torchvision's
  ``trainable_layers=3`` and Detectron2's ``FREEZE_AT=2`` — and 0 without).
* ``frozen_bn``: the backbone's BatchNorm layers become ``torchvision.ops.FrozenBatchNorm2d``
  (fixed statistics and affine; default true with ``backbone_weights``, false without).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torchvision.ops import FrozenBatchNorm2d

from hybridvision.errors import UserInputError
from hybridvision.registry import BACKBONE_OPTIONS

__all__ = ["BACKBONE_OPTIONS", "read_state_dict", "resolve_weights", "load_backbone_weights", "freeze_backbone",
           "apply_backbone_options"]

_PREFIXES = ("module.", "backbone.body.", "backbone.", "model.", "body.", "encoder.")


def resolve_weights(spec: str | os.PathLike) -> Path:
    """``torchvision:NAME`` → its file in the torch hub cache; a path → itself (checked)."""
    text = str(spec)
    if text.startswith("torchvision:"):
        import torchvision

        name = text.partition(":")[2]
        try:
            weights = torchvision.models.get_model_weights(name).DEFAULT
        except (KeyError, ValueError, AttributeError):
            raise UserInputError(f"backbone_weights {text}: torchvision has no weights for {name!r}; use e.g. "
                                 "torchvision:resnet50") from None
        filename = weights.url.rsplit("/", 1)[-1]
        path = Path(torch.hub.get_dir()) / "checkpoints" / filename
        if not path.is_file():
            raise UserInputError(f"backbone_weights {text}: {path} not found; nothing is downloaded here — put "
                                 f"{filename} (from {weights.url}) there, or pass the file's path")
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        raise UserInputError(f"backbone_weights {text}: file not found; pass a .safetensors or .pth file, "
                             "or torchvision:NAME")
    return path


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (safetensors, or a tensors-only pickle) as a flat mapping."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise UserInputError(f"{path}: not a readable safetensors file ({e}); pass another file") from None
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:160]
        raise UserInputError(f"{path}: refused — the pickle holds more than tensors ({first}); only plain "
                             "state dicts are read (weights_only=True), nothing in it was run") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise UserInputError(f"{path}: not a readable PyTorch weights file ({str(e)[:160]})") from None
    for key in ("state_dict", "model", "model_state", "weights"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserInputError(f"{path}: not a state dict of tensors; pass a ResNet's weights")
    return dict(obj)


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def load_backbone_weights(backbone: nn.Module, spec: str | os.PathLike) -> dict[str, Any]:
    """Load ``spec`` (:func:`resolve_weights`) into ``backbone`` by name and shape → a report:
    ``{"file", "loaded", "missing" (backbone tensors the file lacks), "unexpected" (file tensors
    that fit nothing), "skipped" (the classifier)}``. Refuses a file that fits nothing."""
    path = resolve_weights(spec)
    source = {_strip(k): v for k, v in read_state_dict(path).items()}
    skipped = sorted(k for k in source if k.split(".")[0] == "fc")
    target = backbone.state_dict()
    take, unexpected = {}, []
    for k, v in source.items():
        if k in skipped:
            continue
        if k in target and tuple(target[k].shape) == tuple(v.shape):
            take[k] = v.to(target[k].dtype)
        else:
            unexpected.append(k)
    if not any(not k.endswith("num_batches_tracked") for k in take):  # a BN counter fits anything
        raise UserInputError(f"{path}: none of its {len(source)} tensors fits this backbone (ResNet names such "
                             "as layer1.0.conv1.weight expected); pass a ResNet of the same depth")
    backbone.load_state_dict(take, strict=False)
    missing = sorted(k for k in target if k not in take and not k.endswith("num_batches_tracked"))
    return {"file": str(path), "loaded": len(take), "missing": missing, "unexpected": sorted(unexpected),
            "skipped": skipped, "loaded_names": sorted(take)}


def _stages(backbone: nn.Module) -> list[list[nn.Module]]:
    """[stem modules, layer1, layer2, layer3, layer4] of a ResNet."""
    stem = [m for m in (getattr(backbone, n, None) for n in ("conv1", "bn1")) if m is not None]
    return [stem, *([getattr(backbone, f"layer{i}")] for i in range(1, 5) if hasattr(backbone, f"layer{i}"))]


def _freeze_bn(module: nn.Module, keep: set[str] | None = None, prefix: str = "") -> nn.Module:
    """``module`` with its BatchNorm layers as ``FrozenBatchNorm2d``: those named in ``keep``
    (qualified names), or when ``keep`` is None every one outside an attention block (``attn*``:
    their own initialisation, e.g. a zero γ, must stay trainable)."""
    if isinstance(module, nn.BatchNorm2d) and (prefix in keep if keep is not None else True):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            frozen.weight.copy_(module.weight)
            frozen.bias.copy_(module.bias)
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        if keep is None and name.startswith("attn"):
            continue
        setattr(module, name, _freeze_bn(child, keep, f"{prefix}.{name}" if prefix else name))
    return module


def freeze_backbone(backbone: nn.Module, stages: int = 0, frozen_bn: bool = False,
                    loaded: set[str] | None = None) -> None:
    """Stop the stem and the first residual stages learning (``stages``: 0–5) and/or replace the
    backbone's BatchNorm layers by ``FrozenBatchNorm2d``: those whose weights were ``loaded``
    (tensor names) from a pretrained file, or without a file every one outside attention blocks."""
    parts = _stages(backbone)
    if not 0 <= stages <= len(parts):
        raise UserInputError(f"freeze_stages={stages}: use 0 (none) … {len(parts)} (stem and every stage)")
    for part in parts[:stages]:
        for module in part:
            for p in module.parameters():
                p.requires_grad_(False)
    if frozen_bn:
        keep = None if loaded is None else {k.rsplit(".", 1)[0] for k in loaded if k.endswith(".running_mean")}
        _freeze_bn(backbone, keep)


def apply_backbone_options(model: nn.Module, options: dict[str, Any]) -> dict[str, Any] | None:
    """Apply :data:`BACKBONE_OPTIONS` to ``model`` (its ``backbone``, or itself for a ResNet
    classifier); returns the loading report (None without ``backbone_weights``). On the meta
    device only the file is checked (nothing is read)."""
    weights = options.get("backbone_weights")
    freeze = int(options.get("freeze_stages", 2 if weights else 0))
    frozen_bn = bool(options.get("frozen_bn", bool(weights)))
    backbone = getattr(model, "backbone", model)
    if not all(hasattr(backbone, n) for n in ("conv1", "layer1")):
        raise UserInputError(f"{', '.join(k for k in BACKBONE_OPTIONS if k in options)}: "
                             f"{type(model).__name__}'s backbone is not a ResNet; these options apply to "
                             "ResNet-based models (FCOS, RetinaNet, CenterNet, CornerFCOS)")
    report = None
    if weights:
        on_meta = any(p.is_meta for p in backbone.parameters())
        report = {"file": str(resolve_weights(weights))} if on_meta else load_backbone_weights(backbone, weights)
    loaded = set(report["loaded_names"]) if report and "loaded_names" in report else None
    freeze_backbone(backbone, freeze, frozen_bn, loaded)
    return report
