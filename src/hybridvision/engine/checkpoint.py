"""Checkpoints as safetensors plus a JSON sidecar — never pickle.

A checkpoint ``NAME`` is three files in one folder:

- ``NAME.safetensors``        model weights (the file users pass as ``--weights``),
- ``NAME.optim.safetensors``  optimizer state tensors (momentum buffers, Adam moments),
- ``NAME.json``               everything else: epoch, step, optimizer param groups and the
                              non-tensor state, model name and kwargs, class names, metrics.

Each file is written to a temp name and renamed, the JSON last. The three renames are not one
atomic step, so a save first keeps the checkpoint it replaces: hard links ``NAME.prev.*`` to the
current files (no data is copied; the files being replaced stay on disk until the new set is
complete). Each save stamps its tensors files (safetensors metadata) and its JSON with the same
random ``generation`` and the ``step``; a set whose files disagree is torn. When the new set is
complete the ``NAME.prev.*`` links are removed. So a ``kill -9`` at any moment leaves a consistent
``NAME.*`` or a consistent ``NAME.prev.*``, and :func:`recover_checkpoint` (run by ``train
--resume``) puts the previous one back when the current one is torn.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from hybridvision.errors import UserInputError
from hybridvision.fileio import atomic_path, atomic_save_tensors, atomic_write_text, read_json

__all__ = ["save_checkpoint", "load_checkpoint_state", "load_weights", "read_sidecar",
           "recover_checkpoint", "validate_sidecar", "weights_step"]

_FIX = "delete the .json or pass another checkpoint"


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
    """Write ``folder/name.{safetensors,optim.safetensors,json}``, keeping the previous set as
    ``name.prev.*`` until the new one is complete (module docstring); returns the weights path.

    A failed write (a full disk: a one-line :class:`UserInputError`) puts the previous set back
    as ``name.*`` before the error propagates, and leaves no temp file.
    """
    folder = Path(folder)
    step = str((extra or {}).get("step", 0))
    generation = uuid.uuid4().hex
    sidecar: dict[str, Any] = {**(extra or {}), "generation": generation}
    optim_tensors: dict[str, torch.Tensor] | None = None
    if optimizer is not None:
        optim_tensors, sidecar["optimizer"] = _split_optimizer_state(optimizer.state_dict())
    text = json.dumps(sidecar, indent=1, default=_jsonable)  # a value JSON cannot hold: before any write
    weights, optim_file, side = _set_files(folder, name)
    try:
        _keep_previous(folder, name)
        atomic_save_tensors(weights, model.state_dict(), {"format": "pt", "step": step, "generation": generation})
        if optim_tensors is not None:
            atomic_save_tensors(optim_file, optim_tensors, {"step": step, "generation": generation})
        atomic_write_text(side, text)  # the commit point: the set is complete
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the error itself is what the user sees
            recover_checkpoint(folder, name)
        raise
    _remove_set(folder, f"{name}.prev")
    return weights


# ------------------------------------------------------------------------ consistent sets
def _set_files(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """(weights, optimizer, JSON) paths of the checkpoint ``folder/name``."""
    return folder / f"{name}.safetensors", folder / f"{name}.optim.safetensors", folder / f"{name}.json"


def _tensors_meta(path: Path) -> dict[str, str] | None:
    """A safetensors file's metadata (None when it is missing or unreadable)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None


def _set_problem(folder: str | os.PathLike, name: str) -> str | None:
    """Why the checkpoint ``folder/name`` is not a consistent set (None when it is): a file
    missing or unreadable, or tensors files from another save than the JSON names."""
    weights, optim, side = _set_files(Path(folder), name)
    try:
        sidecar = json.loads(side.read_bytes().decode("utf-8-sig"))
    except (OSError, ValueError):
        return f"{side.name} missing or unreadable"
    if not isinstance(sidecar, dict):
        return f"{side.name} is not a JSON object"
    files = [weights] + ([optim] if "optimizer" in sidecar else [])
    for f in files:
        meta = _tensors_meta(f)
        if meta is None:
            return f"{f.name} missing or unreadable"
        if str(meta.get("step", sidecar.get("step"))) != str(sidecar.get("step")):
            return f"{f.name} is from step {meta.get('step')}, {side.name} from step {sidecar.get('step')}"
        if meta.get("generation") != sidecar.get("generation"):
            return f"{f.name} and {side.name} are from different saves"
    return None


def _link(src: Path, dst: Path) -> None:
    """Make ``dst`` the file ``src`` (a hard link, or a copy where links are not supported),
    replacing ``dst`` atomically."""
    if dst.is_file() and os.path.samefile(src, dst):  # already one file (a rename would keep both names)
        return
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _copy_set(folder: Path, src: str, dst: str) -> None:
    """Make the set ``dst`` the files of the set ``src``: tensors first, the JSON last; an
    optimizer file ``src`` lacks is removed before the JSON lands."""
    for a, b in zip(_set_files(folder, src)[:2], _set_files(folder, dst)[:2]):
        if a.is_file():
            _link(a, b)
        else:
            b.unlink(missing_ok=True)
    _link(folder / f"{src}.json", folder / f"{dst}.json")


def _remove_set(folder: Path, name: str) -> None:
    """Delete the set ``folder/name.*`` (the JSON first, so that a kill midway leaves no JSON
    naming files that are gone)."""
    weights, optim, side = _set_files(folder, name)
    for f in (side, weights, optim):
        f.unlink(missing_ok=True)


def _keep_previous(folder: Path, name: str) -> None:
    """Before ``name.*`` is replaced: link its files as ``name.prev.*`` if they form a consistent
    set (a torn ``name.*`` is left alone: the ``name.prev.*`` beside it is the good one)."""
    if (folder / f"{name}.json").is_file() and _set_problem(folder, name) is None:
        _copy_set(folder, name, f"{name}.prev")


def recover_checkpoint(folder: str | os.PathLike, name: str) -> str | None:
    """Repair ``folder/name.*`` after a run was killed while saving it; returns a line saying
    what was done (None when nothing was needed or possible).

    A consistent ``name.*`` is kept (and a leftover ``name.prev.*`` removed); a torn one is
    replaced by a consistent ``name.prev.*``, the checkpoint before. With neither, nothing
    changes (loading then reports the torn set in one line). Temp files of killed writes
    (``.name.*.tmp``) are removed.
    """
    folder = Path(folder)
    for tmp in folder.glob(f".{name}.*.tmp"):
        tmp.unlink(missing_ok=True)
    prev = f"{name}.prev"
    if not any(f.is_file() for f in _set_files(folder, prev)):
        return None
    problem = _set_problem(folder, name)
    if problem is None:
        _remove_set(folder, prev)
        return None
    if _set_problem(folder, prev) is not None:
        return None
    step = read_json(folder / f"{prev}.json", what="checkpoint state").get("step")
    _copy_set(folder, prev, name)
    _remove_set(folder, prev)
    return (f"{folder / name}.*: torn by a run stopped while saving ({problem}); restored the "
            f"checkpoint before it (step {step})")


def _jsonable(o: Any) -> Any:
    if torch.is_tensor(o):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# What a sidecar may hold, and the type each key must have when present (written by the trainer;
# other keys, e.g. the trainer's "scaler", pass through untouched).
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_SIDECAR_TYPES: dict[str, tuple[str, Any]] = {
    "model": ("a model name (string)", lambda v: isinstance(v, str) and bool(v.strip())),
    "model_kwargs": ("an object of model options",
                     lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v)),
    "num_classes": ("a positive integer", lambda v: _is_int(v) and v > 0),
    "class_names": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v)),
    "label_to_cat_id": ("a list of integers or null",
                        lambda v: v is None or (isinstance(v, list) and all(_is_int(c) for c in v))),
    "image_size": ("an integer in [32, 8192] or null", lambda v: v is None or (_is_int(v) and 32 <= v <= 8192)),
    "task": ("'detection', 'classification' or 'sbir'", lambda v: v in ("detection", "classification", "sbir")),
    "epoch": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "step": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "best": ("a number or null", lambda v: v is None or _is_number(v)),
    "best_epoch": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "train_seconds": ("a number of seconds >= 0", lambda v: _is_number(v) and v >= 0),
    "train_loop_seconds": ("a number of seconds >= 0", lambda v: _is_number(v) and v >= 0),
    "config": ("an object or null", lambda v: v is None or isinstance(v, dict)),
    "metrics": ("an object", lambda v: isinstance(v, dict)),
    "generation": ("a string", lambda v: isinstance(v, str)),
    "optimizer": ("an object with param_groups",
                  lambda v: isinstance(v, dict) and isinstance(v.get("param_groups"), list)
                  and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in v["param_groups"])
                  and isinstance(v.get("scalars", {}), dict)),
}


def validate_sidecar(sidecar: Any, path: str | os.PathLike, *, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check a checkpoint sidecar's keys and types; one-line :class:`UserInputError` naming the
    file and the key otherwise. Returns ``sidecar``."""
    if not isinstance(sidecar, dict):
        raise UserInputError(f"{path}: checkpoint state must be a JSON object, got "
                             f"{type(sidecar).__name__}; {_FIX}")
    for key in required:
        if key not in sidecar:
            raise UserInputError(f"{path}: checkpoint state lacks the key '{key}'; {_FIX}")
    for key, (what, ok) in _SIDECAR_TYPES.items():
        if key in sidecar and not ok(sidecar[key]):
            shown = json.dumps(sidecar[key], default=str)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise UserInputError(f"{path}: key '{key}' is {shown}, expected {what}; the file was "
                                 f"edited or damaged — {_FIX}")
    names, n = sidecar.get("class_names"), sidecar.get("num_classes")
    if names is not None and n is not None and len(names) != n:
        raise UserInputError(f"{path}: key 'class_names' lists {len(names)} names but 'num_classes' is "
                             f"{n}; {_FIX}")
    ids = sidecar.get("label_to_cat_id")
    if ids is not None and n is not None and len(ids) != n:
        raise UserInputError(f"{path}: key 'label_to_cat_id' maps {len(ids)} labels but 'num_classes' is "
                             f"{n}; {_FIX}")
    return sidecar


def read_sidecar(weights: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar next to a weights file, checked (``{}`` if there is none)."""
    side = Path(weights).with_suffix(".json")
    if not side.is_file():
        return {}
    return validate_sidecar(read_json(side, what="checkpoint state"), side)


def weights_step(path: str | os.PathLike) -> int | None:
    """The training step recorded in a safetensors file's metadata (None when it has none)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserInputError(f"{path}: not a readable safetensors file ({e}); pass a .safetensors "
                             "weights file written by hybridvision") from None
    step = meta.get("step")
    try:
        return int(step) if step is not None else None
    except ValueError:
        raise UserInputError(f"{path}: metadata step {step!r} is not an integer; the file was "
                             "edited or damaged") from None


def _check_step(tensors_file: Path, sidecar: dict[str, Any], side: Path) -> None:
    """The weights (or optimizer) file must be from the step the sidecar names: a run killed
    between writing the tensors and the JSON leaves them from different steps."""
    fix = ("the checkpoint was torn (a run killed while saving); start a new run, or fine-tune from "
           "it with --weights")
    if side.with_name(f"{side.stem}.prev.json").is_file():  # the set kept while it was saved
        fix = ("the checkpoint was torn (a run killed while saving); `hybridvision train --out RUN --resume` "
               "restores the one saved before it")
    if "step" in sidecar:
        step = weights_step(tensors_file)
        if step is not None and step != sidecar["step"]:
            raise UserInputError(f"{tensors_file}: weights are from step {step} but the state {side.name} "
                                 f"from step {sidecar['step']}: {fix}")
    generation = (_tensors_meta(tensors_file) or {}).get("generation")
    if generation is not None and "generation" in sidecar and generation != sidecar["generation"]:
        raise UserInputError(f"{tensors_file}: weights are from another save than the state {side.name} "
                             f"(generation {generation[:8]} versus {sidecar['generation'][:8]}): {fix}")


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserInputError(f"{path}: weights file not found; pass a .safetensors file written "
                             "by hybridvision (runs/NAME/checkpoints/best.safetensors)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserInputError(f"{path}: not a readable safetensors file ({e}); pass a .safetensors "
                             "weights file (pickled .pt/.pth files are not loaded)") from None


def load_weights(model: torch.nn.Module, weights: str | os.PathLike, *, strict: bool = True,
                 sidecar: dict[str, Any] | None = None) -> None:
    """Load a ``.safetensors`` weights file into ``model`` with a clear error on mismatch.

    With ``sidecar`` (its checked JSON state), the weights must be from the step it names.
    """
    path = Path(weights)
    state = _load_tensors(path)
    if sidecar:
        _check_step(path, sidecar, path.with_suffix(".json"))
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        first = str(e).splitlines()[0:2]
        raise UserInputError(
            f"{path}: weights do not fit model {getattr(model, 'model_name', type(model).__name__)}"
            f" ({' '.join(first)[:200]}); pass the model name and options it was trained with"
        ) from None


_PARAM_SHAPED = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict,
                    optim_file: Path, side: Path) -> None:
    """Restore ``optimizer``, refusing in one line a state saved for another model/optimizer."""
    fix = "resume with the model, options and optimizer of the run, or start a new run"
    try:
        state = _join_optimizer_state(tensors, rest)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserInputError(f"{optim_file}: optimizer state is malformed (unexpected tensor names "
                             f"or scalars); {fix}") from None
    saved, current = state["param_groups"], optimizer.param_groups
    if len(saved) != len(current) or any(len(s["params"]) != len(c["params"]) for s, c in zip(saved, current)):
        raise UserInputError(
            f"{side}: optimizer state is for {sum(len(g['params']) for g in saved)} parameters in "
            f"{len(saved)} group(s), this model has {sum(len(g['params']) for g in current)} in "
            f"{len(current)}: it was saved for another model or optimizer; {fix}")
    params = {sid: p for s, c in zip(saved, current) for sid, p in zip(s["params"], c["params"])}
    for sid, st in state["state"].items():
        if sid not in params:
            raise UserInputError(f"{optim_file}: optimizer state names parameter {sid}, which no "
                                 f"parameter group lists; {fix}")
        p = params[sid]
        for name, value in st.items():
            if name in _PARAM_SHAPED and torch.is_tensor(value) and value.shape != p.shape:
                raise UserInputError(
                    f"{optim_file}: optimizer state '{name}' of parameter {sid} has shape "
                    f"{list(value.shape)} but the parameter is {list(p.shape)}: it was saved for "
                    f"another model; {fix}")
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise UserInputError(f"{optim_file}: optimizer state does not fit this optimizer "
                             f"({str(e).splitlines()[0][:160]}); {fix}") from None
    # The files hold contiguous (NCHW) tensors; a channels-last parameter's buffers get its
    # layout back, as a fresh run's ``zeros_like(param)`` has it (same values, no format mixing).
    for p, st in optimizer.state.items():
        for name, value in st.items():
            if name in _PARAM_SHAPED and torch.is_tensor(value) and value.stride() != p.stride():
                st[name] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def load_checkpoint_state(
    folder: str | os.PathLike,
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Restore model (and optimizer) from ``folder/name.*``; returns the JSON sidecar.

    The sidecar comes back whole, so callers can read what they stored in ``extra`` (the
    trainer's AMP ``scaler`` state, ``best`` …). The weights and optimizer files must be from the
    sidecar's ``step`` (else the checkpoint was torn by a kill while saving: one-line error).
    """
    folder = Path(folder)
    weights = folder / f"{name}.safetensors"
    side = weights.with_suffix(".json")
    sidecar = read_sidecar(weights)
    if not sidecar:
        raise UserInputError(f"{side}: checkpoint state missing; cannot "
                             "resume — start a new run or pass --weights to fine-tune")
    validate_sidecar(sidecar, side, required=("epoch", "step"))
    load_weights(model, weights, sidecar=sidecar)
    if optimizer is not None and "optimizer" in sidecar:
        optim_file = folder / f"{name}.optim.safetensors"
        tensors = _load_tensors(optim_file)
        _check_step(optim_file, sidecar, side)
        _load_optimizer(optimizer, tensors, sidecar["optimizer"], optim_file, side)
    return sidecar
