"""ONNX export of any registered model, checked against PyTorch with onnxruntime.

``hybridvision export --weights W`` (or ``--model NAME`` for random weights) writes

* ``OUT.onnx`` — the model's forward pass on ``[B, C, S, S]`` float images in [0, 1] (input
  normalisation is inside the graph; the batch axis is dynamic). A detector exports its *raw*
  head outputs, one ONNX output per key and pyramid level (``cls_logits_0`` …), as the model
  contract defines them; decoding (``model.decode``) stays in Python, as in torchvision's exports
  of anchor-free heads. A classifier exports its logits.
* ``OUT.onnx.json`` — what a runtime needs to use it: model name, task, input shape, output
  names, class names and, for detectors, the output strides.

The export uses PyTorch's ``torch.export``-based exporter (``torch.onnx.export(dynamo=True)``,
which needs ``onnxscript``); the check runs the file in onnxruntime on a fresh random batch of
another batch size and compares every output with PyTorch's.

Symbols: B batch, C channels, S input side.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from hybridvision.detectors.base import DenseDetector
from hybridvision.engine.tasks import create_task
from hybridvision.errors import UserInputError
from hybridvision.factory import create_model, list_models, model_task
from hybridvision.fileio import atomic_write_bytes, atomic_write_text
from hybridvision.fileio import check_output_path

__all__ = ["EXPORTABLE_TASKS", "ExportCheckError", "MAX_OPSET", "MIN_OPSET", "check_export_paths", "check_exportable",
           "check_opset", "check_size", "default_size", "export_onnx", "export_target", "flatten_outputs",
           "random_model", "unflatten_outputs"]

# The tasks whose raw outputs a runtime can decode: dense maps (detection) or logits (classification).
EXPORTABLE_TASKS = ("detection", "classification")

# The opsets an export can target: the exporter writes opset 18 natively and converts down to
# 16 or 17 (below that its converter silently falls back to 18); onnxruntime 1.31 (pinned in
# constraints.txt, used by the check) runs models up to opset 26.
MIN_OPSET = 16
MAX_OPSET = 26


def check_opset(opset: int) -> int:
    """``--opset`` must be in ``MIN_OPSET..MAX_OPSET``; one-line :class:`UserInputError` otherwise."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserInputError(f"--opset {opset}: this exporter writes ONNX opsets {MIN_OPSET} to "
                             f"{MAX_OPSET}; pass one of them (18 is the default and the best tested)")
    return opset


def _onnx_opset(onnx_bytes: bytes) -> int | None:
    """The default-domain opset an ONNX model declares (None if it cannot be read)."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load_model_from_string(onnx_bytes)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


class ExportCheckError(UserInputError):
    """The export failed, or onnxruntime's outputs differ from PyTorch's beyond the tolerance.

    A :class:`UserInputError` so the CLI reports it in one line (``--debug`` shows the trace).
    """


def flatten_outputs(outputs: Any) -> tuple[list[str], list[torch.Tensor]]:
    """Model outputs → (names, tensors) in a fixed order.

    A tensor is ``"logits"``; a dict is visited in sorted key order, a list value giving one
    entry per element (``cls_logits_0``, ``cls_logits_1``, … for the pyramid levels).
    """
    if isinstance(outputs, torch.Tensor):
        return ["logits"], [outputs]
    if not isinstance(outputs, dict):
        raise TypeError(f"cannot export outputs of type {type(outputs).__name__}")
    names, tensors = [], []
    for key in sorted(outputs):
        value = outputs[key]
        if isinstance(value, (list, tuple)):
            for i, t in enumerate(value):
                names.append(f"{key}_{i}")
                tensors.append(t)
        else:
            names.append(key)
            tensors.append(value)
    return names, tensors


def unflatten_outputs(names: list[str], values: list[Any]) -> Any:
    """Inverse of :func:`flatten_outputs`: ONNX outputs (names from ``OUT.onnx.json``) back into
    the model's output dict, so ``model.decode`` runs on an ONNX runtime's results.

    ``["logits"]`` gives the tensor; ``key_0, key_1, …`` become the list ``out[key]``.
    """
    tensors = [torch.as_tensor(v) for v in values]
    if names == ["logits"]:
        return tensors[0]
    out: dict[str, Any] = {}
    for name, t in zip(names, tensors):
        key, _, index = name.rpartition("_")
        if key and index.isdigit():
            out.setdefault(key, []).append(t)
        else:
            out[name] = t
    return out


def info_name(model: nn.Module) -> str:
    """The registry name of ``model`` (its class name for an unregistered module)."""
    return getattr(model, "model_name", type(model).__name__)


class _Flat(nn.Module):
    """The model with its outputs as a flat tuple (ONNX graphs return tensors, not dicts)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_outputs(self.model(images))[1])


def check_export_paths(out: str | Path, *, weights: str | Path | None = None, exist_ok: bool = False,
                       default: bool = False) -> Path:
    """Refuse, before any work, an export that would lose a file: ``out`` or ``out.json`` existing
    (an earlier export, or a file of the user's) unless ``exist_ok``, or being the checkpoint
    ``weights`` or its ``.json`` sidecar (never, whatever ``exist_ok`` says).

    ``default``: ``out`` is the command's default path (beside the weights, or
    ``runs/export/MODEL.onnx``); the message says so. Returns ``out`` as a :class:`~pathlib.Path`.
    """
    out = Path(out)
    inputs = [Path(weights), Path(weights).with_suffix(".json")] if weights else []
    for path in (out, Path(f"{out}.json")):
        check_output_path(path, inputs=inputs, kind="file", exist_ok=exist_ok, default=default)
    return out


def export_target(out: Path | None, *, weights: Path | None, model: str | None, exist_ok: bool = False) -> Path:
    """The .onnx file of ``hybridvision export``: ``out``, else beside ``weights``, else
    runs/export/MODEL.onnx; checked by :func:`check_export_paths` before any work.

    Without ``weights`` an unknown ``model`` is named before its default path is looked at; with
    ``weights`` that do not exist the paths are left unchecked, so that loading them names the
    missing checkpoint first.
    """
    if weights is None:
        model_task(model)
    target = out or (weights.with_suffix(".onnx") if weights is not None else Path("runs/export") / f"{model}.onnx")
    if weights is None or weights.is_file():
        check_export_paths(target, weights=weights, exist_ok=exist_ok, default=out is None)
    return target


def random_model(name: str, in_chans: int, **kwargs: Any) -> nn.Module:
    """A registered model with random weights, built for ``in_chans`` input channels where its
    task takes them (a classifier)."""
    kwargs.update(create_task(model_task(name)).input_kwargs(in_chans))
    return create_model(name, **kwargs)


def check_exportable(model: nn.Module) -> tuple[str, str]:
    """(registered name, task) of a model whose task is in :data:`EXPORTABLE_TASKS`; a
    one-line :class:`UserInputError` for any other (an SBIR model's two branches)."""
    name = model.model_name
    task = model_task(name)
    if task not in EXPORTABLE_TASKS:
        raise UserInputError(f"export: {name} is a {task} model (two branches, sketch and photo, with one output "
                             f"each); export handles {' and '.join(EXPORTABLE_TASKS)} models — export a "
                             "classifier backbone (e.g. --model resnet26) instead")
    return name, task


def export_onnx(
    model: nn.Module,
    out: str | Path,
    *,
    size: int,
    in_chans: int = 3,
    opset: int = 18,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    meta: dict[str, Any] | None = None,
    exist_ok: bool = False,
) -> dict[str, Any]:
    """Export ``model`` (eval mode, CPU) to ONNX at ``out``; returns the metadata written beside it.

    Args:
        model: a registered detector or classifier.
        out: the ``.onnx`` path; ``<out>.json`` receives the metadata. Both writes are atomic.
        size: input side S (a detector pads it to its ``size_divisible`` inside the graph).
        in_chans: input channels C.
        opset: ONNX opset.
        check: run the file in onnxruntime on a batch of 3 (not the traced 2) and compare with PyTorch
            (``max|ort - torch| <= atol + rtol·max|torch|`` for every output); raise
            :class:`ExportCheckError` otherwise. The maximum difference is in the metadata.
        meta: extra metadata (class names, the checkpoint's path …). ``meta["weights"]`` (and
            its ``.json`` sidecar) is an input: neither ``out`` nor ``out.json`` may be it.
        exist_ok: replace an existing ``out`` and ``out.json`` (the CLI's ``--exist-ok``);
            ``False`` refuses them (:func:`check_export_paths`).

    The metadata records the opset the file actually declares; an exporter that could not
    produce the requested one raises :class:`ExportCheckError` before anything is written.
    """

    out = Path(out)
    check_opset(opset)
    check_export_paths(out, weights=(meta or {}).get("weights"), exist_ok=exist_ok)
    model = model.to("cpu").eval()
    torch.manual_seed(0)
    # Batch 2, not 1: torch.export specialises a size-1 dimension to the constant 1.
    example = torch.rand(2, in_chans, size, size)
    flat = _Flat(model).eval()
    with torch.no_grad():
        names, _ = flatten_outputs(model(example))
    onnx_bytes = _export_bytes(flat, example, names, opset, info_name(model))
    actual = _onnx_opset(onnx_bytes)
    if actual is not None and actual != opset:
        raise ExportCheckError(f"--opset {opset}: the exporter could not convert {info_name(model)} to "
                               f"opset {opset} (it produced opset {actual}); pass --opset {actual}")
    info: dict[str, Any] = {
        "model": info_name(model),
        "task": _task_name(model, names),
        "input": {"name": "images", "shape": ["batch", in_chans, size, size], "range": [0, 1]},
        "outputs": names,
        "opset": actual if actual is not None else opset,
        "torch": torch.__version__,
        **({"strides": list(model.strides)} if hasattr(model, "strides") else {}),
        **({"size_divisible": model.size_divisible} if isinstance(model, DenseDetector) else {}),
        **(meta or {}),
    }
    if check:  # before anything is written: a failed check leaves no file
        info["check"] = _check(onnx_bytes, flat, size, in_chans, names, atol, rtol)
    atomic_write_bytes(out, onnx_bytes)
    atomic_write_text(Path(f"{out}.json"), json.dumps(info, indent=1))
    return info


def _export_bytes(flat: nn.Module, example: torch.Tensor, names: list[str], opset: int,
                  model_name: str) -> bytes:
    """The ONNX model as bytes (kept in memory: checked first, then written atomically)."""
    buffer = io.BytesIO()
    # The exporter reports its progress on stdout and logs failed guesses at ERROR level; the
    # CLI prints its own summary, and a failure becomes one ExportCheckError.
    loggers = [logging.getLogger(n) for n in ("torch", "onnxscript")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(flat, (example,), buffer, dynamo=True, opset_version=opset,
                              input_names=["images"], output_names=names,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
                              external_data=False)
    except Exception as e:  # noqa: BLE001 - any exporter failure is reported the same way
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        if isinstance(e, ImportError):
            first += "; install the exporter with pip install 'hybridvision[export]'"
        raise ExportCheckError(f"ONNX export of {model_name} failed: {first} "
                               "(run with --debug for the exporter's trace)") from e
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)
    return buffer.getvalue()


def _check(onnx_bytes: bytes, flat: nn.Module, size: int, in_chans: int, names: list[str], atol: float,
           rtol: float) -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportCheckError("the check needs onnxruntime: pip install 'hybridvision[export]', "
                               "or pass --no-check") from e

    x = torch.rand(3, in_chans, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = [t.numpy() for t in flat(x)]
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(names, {"images": x.numpy()})
    worst, worst_name, worst_rel = 0.0, names[0], 0.0
    for name, r, g in zip(names, ref, got):
        if r.shape != g.shape:
            raise ExportCheckError(f"ONNX output {name} has shape {g.shape}, PyTorch {r.shape}")
        # Tolerance relative to the output's scale, not elementwise: random-weight models can
        # have activations of 1e20, where float32 rounding alone moves a near-zero entry by 1e13.
        scale = float(np.abs(r).max(initial=0.0))
        diff = float(np.abs(g - r).max(initial=0.0))
        rel = diff / scale if scale else 0.0
        if diff > worst:
            worst, worst_name, worst_rel = diff, name, rel
        if diff > atol + rtol * scale:
            raise ExportCheckError(f"ONNX output {name} differs from PyTorch by up to {diff:.3g} "
                                   f"({rel:.2g} of its largest value; atol {atol}, rtol {rtol}): "
                                   "the export is not faithful")
    return {"batch": 3, "max_abs_diff": worst, "max_rel_diff": worst_rel, "worst_output": worst_name,
            "atol": atol, "rtol": rtol}


def _task_name(model: nn.Module, names: list[str]) -> str:
    """The registered task of a registered model; an unregistered module is told by its outputs."""
    name = getattr(model, "model_name", None)
    if name in list_models():
        return model_task(name)
    return "classification" if names == ["logits"] else "detection"


def default_size(task: str, info: dict[str, Any]) -> int:
    """The trained image size from a checkpoint's sidecar, else the task's default (512
    detection, 224 classification)."""
    size = info.get("image_size")
    if size:
        return int(size)
    return int(create_task(task).default_image_size)


def check_size(size: int, model: nn.Module) -> None:
    """A positive input side: a detector pads any side to its ``size_divisible`` inside the graph
    (:meth:`~hybridvision.detectors.base.DenseDetector.pad_to_divisible`); a classifier pools
    whatever its last stage gives."""
    if size < 1:
        raise UserInputError(f"--size {size}: pass a positive input side")
