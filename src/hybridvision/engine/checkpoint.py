"""Checkpoints as safetensors plus a JSON sidecar — never pickle.

A checkpoint ``NAME`` is three files in one folder:

- ``NAME.safetensors``        model weights (the file users pass as ``--weights``),
- ``NAME.optim.safetensors``  optimizer state tensors (momentum buffers, Adam moments),
- ``NAME.json``               everything else: epoch, step, optimizer param groups and the
                              non-tensor state, model name and kwargs, class names, metrics.

Each file is written to a temp name and renamed, the JSON last, so a killed run leaves either
the previous checkpoint or the new one, never a torn mix (the JSON names the step its tensors
belong to, and loading checks that).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hybridvision.fileio import atomic_write_text
from hybridvision.errors import UserInputError

__all__ = ["save_checkpoint", "load_checkpoint_state", "load_weights", "read_sidecar"]


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # safetensors refuses shared or non-contiguous storage: store independent copies.
        save_file({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}, tmp,
                  metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _split_optimizer_state(opt_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer ``state_dict`` → (flat tensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt_state["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, st in rest.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(
    folder: str | os.PathLike,
    name: str,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``folder/name.{safetensors,optim.safetensors,json}`` atomically; returns the weights path."""
    folder = Path(folder)
    step = str((extra or {}).get("step", 0))
    weights = folder / f"{name}.safetensors"
    _atomic_save_tensors(model.state_dict(), weights, {"format": "pt", "step": step})
    sidecar: dict[str, Any] = dict(extra or {})
    if optimizer is not None:
        tensors, rest = _split_optimizer_state(optimizer.state_dict())
        _atomic_save_tensors(tensors, folder / f"{name}.optim.safetensors", {"step": step})
        sidecar["optimizer"] = rest
    atomic_write_text(folder / f"{name}.json", json.dumps(sidecar, indent=1, default=_jsonable))
    return weights


def _jsonable(o: Any) -> Any:
    if torch.is_tensor(o):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_sidecar(weights: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar next to a weights file (``{}`` if there is none)."""
    p = Path(weights)
    side = p.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError:
        raise UserInputError(f"{side}: checkpoint state is not valid JSON; delete it or pass "
                             "another checkpoint") from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserInputError(f"{path}: weights file not found; pass a .safetensors file written "
                             "by hybridvision (runs/NAME/checkpoints/best.safetensors)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserInputError(f"{path}: not a readable safetensors file ({e}); pass a .safetensors "
                             "weights file (pickled .pt/.pth files are not loaded)") from None


def load_weights(model: torch.nn.Module, weights: str | os.PathLike, *, strict: bool = True) -> None:
    """Load a ``.safetensors`` weights file into ``model`` with a clear error on mismatch."""
    path = Path(weights)
    state = _load_tensors(path)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        first = str(e).splitlines()[0:2]
        raise UserInputError(
            f"{path}: weights do not fit model {getattr(model, 'model_name', type(model).__name__)}"
            f" ({' '.join(first)[:200]}); pass the model name and options it was trained with"
        ) from None


def load_checkpoint_state(
    folder: str | os.PathLike,
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Restore model (and optimizer) from ``folder/name.*``; returns the JSON sidecar."""
    folder = Path(folder)
    weights = folder / f"{name}.safetensors"
    sidecar = read_sidecar(weights)
    if not sidecar:
        raise UserInputError(f"{folder / (name + '.json')}: checkpoint state missing; cannot "
                             "resume — start a new run or pass --weights to fine-tune")
    load_weights(model, weights)
    if optimizer is not None and "optimizer" in sidecar:
        tensors = _load_tensors(folder / f"{name}.optim.safetensors")
        optimizer.load_state_dict(_join_optimizer_state(tensors, sidecar["optimizer"]))
    return sidecar
