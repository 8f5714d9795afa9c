"""Every registered detector gives the raw outputs and detections it gave before the layers /
typed-contracts refactor (issue 25), for the same name-seeded weights, and still loads a checkpoint
saved in the key layout of that time. The reference is ``tests/data/detector_references.safetensors``,
made by ``python tests/detector_references.py --write`` on the code before the refactor; how it pins
what is in that module's docstring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from detector_references import (FILE_PARAMETERS, NUM_CLASSES, REFERENCE, SLOW_PARAMETERS, build, decode,
                                  detection_mismatch, detectors, forward, layout_of, load_reference, main,
                                  old_checkpoint, output_mismatch, stored, stored_layout)

_TENSORS, _META = load_reference()
NAMES = sorted(_META)
BIG = {n for n in NAMES if _META[n]["parameters"] > SLOW_PARAMETERS}  # the Hourglass-104 presets
CASES = [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in NAMES]


def _old_checkpoint(name: str, gain: float | None = None) -> dict[str, torch.Tensor]:
    """The checkpoint of ``name`` in the stored key layout, weights drawn by name."""
    return old_checkpoint(stored_layout(_TENSORS, name), stored(_TENSORS, name, "kept"),
                          _META[name]["gain"] if gain is None else gain)


def _save_old_checkpoint(folder: Path, name: str, state: dict[str, torch.Tensor]) -> Path:
    """``folder/best.safetensors`` and its JSON sidecar, as ``hybridvision train`` saved them."""
    weights = folder / "best.safetensors"
    save_file(state, str(weights), metadata={"format": "pt", "step": "0"})
    sidecar = {"model": name, "model_kwargs": {"num_classes": NUM_CLASSES}, "num_classes": NUM_CLASSES, "step": 0}
    weights.with_suffix(".json").write_text(json.dumps(sidecar))
    return weights


def _load_old_checkpoint(name: str, folder: Path) -> torch.nn.Module:
    """The detector with its old checkpoint loaded: through ``load_trained`` from a file when it is
    small, else (~200 MB to ~800 MB files) with ``load_state_dict(strict=True)``."""
    from hybridvision.api import load_trained

    state = _old_checkpoint(name)
    if _META[name]["parameters"] <= FILE_PARAMETERS:
        model, info = load_trained(_save_old_checkpoint(folder, name, state))
        assert info["model"] == name
        return model
    model = build(name)
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_reference_covers_every_detector() -> None:
    assert len(NAMES) >= 44
    assert set(NAMES) <= set(detectors()), "a detector with a stored reference is no longer registered"


@pytest.mark.parametrize("name", CASES)
def test_detector_matches_reference(name: str, tmp_path: Path) -> None:
    model = _load_old_checkpoint(name, tmp_path)
    assert layout_of(model) == stored_layout(_TENSORS, name), "state-dict names/shapes changed: old checkpoints"
    want_out, want_det = stored(_TENSORS, name, "out"), stored(_TENSORS, name, "det")
    problem = output_mismatch(forward(model), want_out)
    assert problem is None, f"{name} raw outputs: {problem}"
    problem = detection_mismatch(decode(model, want_out), want_det)
    assert problem is None, f"{name} detections: {problem}"


@pytest.mark.parametrize("name", sorted(BIG))
def test_big_detector_keeps_checkpoint_layout(name: str) -> None:
    """The fast suite's check of the Hourglass-104 presets: the names, dtypes and shapes of the state
    dict (built on the meta device: no memory, no time)."""
    from hybridvision.factory import create_model

    with torch.device("meta"):
        model = create_model(name, num_classes=NUM_CLASSES)
    assert layout_of(model) == stored_layout(_TENSORS, name), "state-dict names/shapes changed: old checkpoints"


def test_other_weights_fail_the_comparison(tmp_path: Path) -> None:
    """A negative control: the comparison of outputs can fail (other weights), and so can the loader
    (a checkpoint with a renamed key)."""
    from hybridvision.api import load_trained
    from hybridvision.errors import UserInputError

    name = "fcos_small"
    model = build(name)
    model.load_state_dict(_old_checkpoint(name, gain=0.5), strict=True)
    assert output_mismatch(forward(model), stored(_TENSORS, name, "out")) is not None
    state = _old_checkpoint(name)
    key = next(k for k in state if k.endswith(".weight"))
    state[key.replace(".weight", ".kernel")] = state.pop(key)
    with pytest.raises(UserInputError, match="weights do not fit"):
        load_trained(_save_old_checkpoint(tmp_path, name, state))


def test_detection_comparison_matches_reordered_not_moved() -> None:
    want = stored(_TENSORS, "fcos_small", "det")
    assert len(want["det.0.scores"]) > 2
    order = torch.arange(len(want["det.0.scores"])).flip(0)
    reordered = {**want, **{f"det.0.{k}": want[f"det.0.{k}"][order] for k in ("boxes", "scores", "labels")}}
    assert detection_mismatch(reordered, want) is None
    moved = {**want, "det.0.boxes": want["det.0.boxes"].clone()}
    moved["det.0.boxes"][1, 2] += 1e-3
    assert "differs by" in detection_mismatch(moved, want)
    dropped = {**want, **{f"det.1.{k}": want[f"det.1.{k}"][1:] for k in ("boxes", "scores", "labels")}}
    assert "detections, reference" in detection_mismatch(dropped, want)
    relabeled = {**want, "det.0.labels": (want["det.0.labels"] + 1) % NUM_CLASSES}
    assert detection_mismatch(relabeled, want) is not None


def test_writer_keeps_the_stored_reference(capsys: pytest.CaptureFixture[str]) -> None:
    before = REFERENCE.stat().st_mtime_ns
    with pytest.raises(SystemExit) as exc:
        main(["--write"])
    assert exc.value.code == 2
    assert "--force" in capsys.readouterr().err
    assert REFERENCE.stat().st_mtime_ns == before
