"""Every FCOS preset gives the outputs and detections it gave before the dense-detector core was
refactored, for the same (name-seeded) weights; and its state dict keeps the names and shapes old
checkpoints were saved with. The reference is ``tests/data/fcos_reference.safetensors``, made by
``python tests/fcos_reference.py`` on the code before the refactor."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fcos_reference import REFERENCE, run_preset, state_digest

_REF = load_file(str(REFERENCE))
with safe_open(str(REFERENCE), "pt") as f:
    _DIGESTS = json.loads(f.metadata()["state_digests"])
PRESETS = sorted(_DIGESTS)


def test_reference_covers_every_fcos_preset() -> None:
    from fcos_reference import fcos_presets

    assert set(fcos_presets()) >= set(PRESETS) and len(PRESETS) >= 17


@pytest.mark.parametrize("name", PRESETS)
def test_preset_matches_reference(name: str) -> None:
    assert state_digest(name) == _DIGESTS[name], "state dict names/shapes changed: old checkpoints break"
    got = run_preset(name)
    want = {k.split("/", 1)[1]: v for k, v in _REF.items() if k.startswith(name + "/")}
    assert set(got) == set(want)
    for key, ref in want.items():
        if key.endswith("labels"):
            assert torch.equal(got[key], ref), key
        else:
            torch.testing.assert_close(got[key], ref, rtol=1e-4, atol=1e-5, msg=key)


def test_reference_detects_a_negative_control() -> None:
    """The comparison can fail: other weights give other outputs."""
    name = "fcos_demo"
    got = run_preset(name)
    other = {k: v for k, v in _REF.items() if k.startswith("nl_fcos_small_panet/out.cls_logits.0")}
    (ref,) = other.values()
    assert got["out.cls_logits.0"].shape == ref.shape
    assert not torch.allclose(got["out.cls_logits.0"], ref, rtol=1e-4, atol=1e-5)
