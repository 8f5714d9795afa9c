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
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import torch
import torch.nn as nn
from torchvision.ops import FrozenBatchNorm2d

from hybridvision.errors import UserInputError
from hybridvision.options import keyword_parameters
from hybridvision.registry import BACKBONE_OPTIONS

__all__ = ["BACKBONE_OPTIONS", "BACKBONE_PARAMETERS", "read_state_dict", "resolve_weights", "load_backbone_weights",
           "freeze_backbone", "apply_backbone_options"]

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


_RESNET_PARTS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.")


def _resnet_shape(shapes: Mapping[str, Any]) -> tuple[int, float] | None:
    """(depth, width) of a ResNet from its tensor names and shapes (2 + 2 or 3 convolutions per
    block, the stem's channels over 64); None for tensors of no ResNet."""
    blocks = {m.groups() for m in map(_BLOCK.match, shapes) if m}
    if not blocks:
        return None
    depth = 2 + len(blocks) * (3 if any(".conv3." in n for n in shapes) else 2)
    stem = shapes.get("conv1.weight")
    return depth, (tuple(stem)[0] / 64 if stem is not None else 1.0)


def _resnet_name(shape: tuple[int, float] | None) -> str:
    if shape is None:
        return "no ResNet"
    return f"a ResNet-{shape[0]}" + (f" ×{shape[1]:g}" if shape[1] != 1 else "")


def _modules(names: list[str], n: int = 3) -> str:
    """The first ``n`` modules (``layer1.0.conv3``) of tensor names, for a message."""
    mods = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in names))
    return ", ".join(mods[:n]) + (", …" if len(mods) > n else "")


def _fix(ours: tuple[int, float] | None, theirs: tuple[int, float] | None) -> str:
    """What to do when a file of a ``theirs`` ResNet does not fit an ``ours`` backbone."""
    fix = f"pass {_resnet_name(ours)}'s weights"
    fix += f" (e.g. torchvision:resnet{ours[0]})" if ours and ours[1] == 1 else ""
    if theirs and ours and theirs != ours:
        change = [f"model_kwargs.{k}={t:g}" for k, o, t in (("depth", *[x[0] for x in (ours, theirs)]),
                                                            ("width", *[x[1] for x in (ours, theirs)])) if o != t]
        fix += f", or train a model whose backbone is {_resnet_name(theirs)} ({', '.join(change)})"
    return fix


def _fit(backbone: nn.Module, source: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """Match the file's tensors to ``backbone``'s by name and shape → what loads; UserInputError
    unless the file fits: every backbone tensor but its own attention blocks' (``attn*``) is in
    the file with its shape, and the file holds no ResNet tensor the backbone lacks. Tensors of
    no ResNet (a detector's ``fpn.*``, ``rpn.*``) are ignored and listed; ``fc.*`` is skipped."""
    counter = "num_batches_tracked"  # a BatchNorm step counter: not a weight
    target = {k: v for k, v in backbone.state_dict().items() if not k.endswith(counter)}
    skipped = sorted(k for k in source if k.split(".")[0] == "fc")
    file = {k: v for k, v in source.items() if k not in skipped and not k.endswith(counter)}
    take = sorted(k for k, v in file.items() if k in target and tuple(target[k].shape) == tuple(v.shape))
    reshaped = sorted(k for k in file if k in target and k not in take)
    lacking = sorted(k for k in target if k not in file)
    own = [k for k in lacking if any(p.startswith("attn") for p in k.split("."))]  # keep their own init
    missing = [k for k in lacking if k not in own]
    foreign = sorted(k for k in file if k not in target)
    unexpected = [k for k in foreign if k.split(".")[0] in _RESNET_PARTS]
    if reshaped or missing or unexpected:
        ours = _resnet_shape({k: v.shape for k, v in target.items()})
        theirs = _resnet_shape({k: v.shape for k, v in file.items()})
        problems = [f"{len(missing)} of the backbone's are not in the file ({_modules(missing)})" if missing else "",
                    f"{len(unexpected)} are not in the backbone ({_modules(unexpected)})" if unexpected else "",
                    f"{len(reshaped)} have another shape ({reshaped[0]}: {list(file[reshaped[0]].shape)} in the "
                    f"file, {list(target[reshaped[0]].shape)} here{', …' if len(reshaped) > 1 else ''})"
                    if reshaped else ""]
        raise UserInputError(f"{path}: does not fit this backbone, {_resnet_name(ours)} (the file holds "
                             f"{_resnet_name(theirs)}): {len(take)} of the file's {len(file)} tensors fit; "
                             f"{', '.join(p for p in problems if p)}; {_fix(ours, theirs)}")
    # the counters load too where both have them (BatchNorm with momentum=None averages by them)
    state = backbone.state_dict()
    take += sorted(k for k in source if k.endswith(counter) and k in state and state[k].shape == source[k].shape)
    return {"loaded": len(take), "missing": own, "unexpected": foreign, "skipped": skipped, "loaded_names": take}


def load_backbone_weights(backbone: nn.Module, spec: str | os.PathLike) -> dict[str, Any]:
    """Load ``spec`` (:func:`resolve_weights`) into ``backbone`` by name and shape → a report:
    ``{"file", "loaded", "missing" (the backbone's attention blocks, which no ResNet file has: a
    file that lacks any other tensor is refused), "unexpected" (file tensors of no ResNet,
    ignored), "skipped" (the classifier), "loaded_names"}``. Refuses a file that does not fit
    (:func:`_fit`), with counts and examples of the missing, extra and reshaped tensors.

    On the meta device (a run's check before any data is made) the fit is checked and nothing
    loaded; a file that cannot be read is left to the real build, which says why."""
    path = resolve_weights(spec)
    on_meta = any(p.is_meta for p in backbone.parameters())
    try:
        source = {_strip(k): v for k, v in read_state_dict(path).items()}
    except UserInputError:
        if not on_meta:
            raise
        return {"file": str(path), "loaded": 0, "missing": [], "unexpected": [], "skipped": [], "loaded_names": []}
    report = {"file": str(path), **_fit(backbone, source, path)}
    if not on_meta:
        target = backbone.state_dict()
        backbone.load_state_dict({k: source[k].to(target[k].dtype) for k in report["loaded_names"]}, strict=False)
    return report


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


def apply_backbone_options(model: nn.Module, *, backbone_weights: str | os.PathLike | None = None,
                           freeze_stages: Annotated[int, at.Ge(0), at.Le(5)] | None = None,
                           frozen_bn: bool | None = None) -> dict[str, Any] | None:
    """Apply the backbone options (module docstring) to ``model`` (its ``backbone``, or itself for
    a ResNet classifier); returns the loading report (None without ``backbone_weights``). On the
    meta device the file is checked against the backbone and nothing is loaded.

    ``freeze_stages`` and ``frozen_bn`` left None take the recipe's defaults: 2 and true with
    ``backbone_weights``, 0 and false without."""
    given = {"backbone_weights": backbone_weights, "freeze_stages": freeze_stages, "frozen_bn": frozen_bn}
    freeze = (2 if backbone_weights else 0) if freeze_stages is None else int(freeze_stages)
    frozen = bool(backbone_weights) if frozen_bn is None else bool(frozen_bn)
    if all(v is None for v in given.values()):
        return None
    backbone = getattr(model, "backbone", model)
    if not all(hasattr(backbone, n) for n in ("conv1", "layer1")):
        raise UserInputError(f"{', '.join(k for k, v in given.items() if v is not None)}: "
                             f"{type(model).__name__}'s backbone is not a ResNet; these options apply to "
                             "ResNet-based models (FCOS, RetinaNet, CenterNet, CornerFCOS)")
    report = load_backbone_weights(backbone, backbone_weights) if backbone_weights else None
    loaded = set(report["loaded_names"]) if report else None
    freeze_backbone(backbone, freeze, frozen, loaded)
    return report


# The options' types, checked where model options are (:mod:`hybridvision.options`).
BACKBONE_PARAMETERS = keyword_parameters(apply_backbone_options, exclude=("model",))
