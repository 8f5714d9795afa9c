"""README "Extending", a new detector: the toy detector's presets are registered exactly as the
README writes them (its code block, run as written), get validated options, and pass the
perfect-prediction round trip with its negative control; and every registered model is one
literal ``def NAME(`` under ``@register_model`` that grep finds, each build checking its options once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from readme_blocks import readme_block

import hybridvision.options as options_module
import hybridvision.registry as registry
import test_detector_registry as registry_tests
from hybridvision.errors import UserInputError
from hybridvision.factory import create_model, list_models
from hybridvision.options import model_parameters

ROOT = Path(__file__).resolve().parents[1]


def readme_model_code() -> str:
    return readme_block("extending-model")


@pytest.fixture
def toy_detector():
    """The README's presets registered as the README writes them; unregistered afterwards."""
    before = set(registry._MODELS)
    namespace: dict = {"__name__": "hybridvision.detectors.presets.mydet"}
    exec(compile(readme_model_code(), "README.md (A new detector)", "exec"), namespace)
    added = sorted(set(registry._MODELS) - before)
    yield added
    for name in added:
        del registry._MODELS[name], registry._MODEL_TASKS[name]


def test_readme_presets_register_with_validated_options(toy_detector):
    assert toy_detector == ["mydet_r50_fpn", "mydet_small"]
    assert list_models("mydet_*", task="detection") == toy_detector
    params = model_parameters("mydet_small")
    assert params is not None  # a bare @register_model on a **kwargs builder would give None
    # the builder's, the detector's and the head's options, typed
    assert {"depth", "neck_channels", "center_sampling_radius", "num_convs"} <= set(params)
    with pytest.raises(UserInputError, match=r"neck_channel\b.*not an option of model 'mydet_small'; valid: .*"
                                             r"neck_channels"):
        create_model("mydet_small", neck_channel=32)
    with pytest.raises(UserInputError, match=r"model_kwargs.num_convs='two' is not valid .*an integer"):
        create_model("mydet_small", num_convs="two")


def test_readme_preset_passes_the_perfect_prediction_round_trip(toy_detector):
    """The generic round trip of tests/test_detector_registry.py, its negative control included."""
    registry_tests.test_perfect_prediction_round_trip("mydet_small")


def test_readme_preset_is_listed_by_the_cli(toy_detector, cli):
    code, stdout, err = cli("models", "--names")
    assert code == 0, err
    assert "mydet_small" in stdout.split()


def test_every_registered_model_is_a_literal_decorated_def():
    """``grep "def NAME("`` finds every registered name, under ``@register_model``: no names made
    in a loop or through ``globals()``."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "hybridvision").rglob("*.py"))
    registered = list_models()
    assert len(registered) >= 60
    missing = []
    for name in registered:
        found = re.search(rf"^@register_model\b[^\n]*\n(?:@[^\n]*\n)*def {name}\(", source, re.M)
        if found is None:
            missing.append(name)
    assert missing == []


def test_each_build_checks_its_options_once(monkeypatch):
    calls = []
    for module, name in ((options_module, "model_parameters"), (registry, "model_options")):
        original = getattr(module, name)

        def spy(model, *args, _original=original, **kwargs):
            calls.append(model)
            return _original(model, *args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    create_model("fcos_small", num_classes=3, neck_channels=32)
    assert calls == ["fcos_small"]


def test_a_nested_build_checks_the_backbone_options():
    """``build_model`` no longer checks (``create_model`` does, once): the FCOS preset that builds a
    registered backbone checks ``backbone_kwargs`` against that backbone's options itself."""
    with pytest.raises(UserInputError, match=r"widht: not an option of model 'hib_patch_2_2_nl'; valid: .*width"):
        create_model("fcos_hib_patch_2_2_nl", backbone_kwargs={"widht": 0.25})
    with pytest.raises(UserInputError, match=r"width='abc' is not valid for model 'hib_patch_2_2_nl'"):
        create_model("fcos_hib_patch_2_2_nl", backbone_kwargs={"width": "abc"})
