"""The backbone contract (hybridvision.backbones.base) over every registered backbone: each
returns one map per ``feature_info`` entry with those channels and strides, declares a
``size_divisible`` that its strides divide, and takes ``out_indices`` by the one rule (level
indices, negatives from the end, out of range / repeated / decreasing refused in one line).
A planted violation (a backbone whose ``feature_info`` misstates a stride) fails the check."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from hybridvision.backbones.base import Backbone
from hybridvision.backbones.hourglass import StackedHourglass
from hybridvision.backbones.resnet import resnet18, resnet50
from hybridvision.errors import UserInputError
from hybridvision.factory import create_model, list_models, model_task

CLASSIFIERS = [n for n in list_models() if model_task(n) == "classification"]
# Every backbone class a registered detector is built on, at CPU size (the full-size presets
# use the same classes: ResNet, HybridNet, StackedHourglass).
DETECTORS = ["fcos_small", "fcos_hib_patch_2_2_nl_small", "centernet_small", "cornernet_small",
             "cornerfcos_multi_normal_small", "fcos_demo"]
SMALL_HG = dict(stacks=2, depth=2, widths=(32, 32, 32), blocks=(1, 1, 1), stem_channels=16, cnv_channels=32)


def check_backbone(backbone: nn.Module, size: int = 64) -> None:
    """Assert the contract of ``backbone`` on a ``size``² input (a multiple of its size_divisible)."""
    assert isinstance(backbone, Backbone), "lacks feature_info, out_indices or size_divisible"
    info = backbone.feature_info
    assert len(info) == len(backbone.out_indices) >= 1
    assert list(backbone.out_indices) == sorted(set(backbone.out_indices)) and min(backbone.out_indices) >= 0
    assert all(backbone.size_divisible % f["stride"] == 0 for f in info)
    side = -(-size // backbone.size_divisible) * backbone.size_divisible
    with torch.no_grad():
        outs = backbone.eval()(torch.rand(1, 3, side, side))
    assert isinstance(outs, list) and len(outs) == len(info)
    for out, f in zip(outs, info):
        assert out.shape[1] == f["channels"], (out.shape, f)
        assert out.shape[-2:] == (side // f["stride"], side // f["stride"]), (out.shape, f)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_registered_classifier_as_a_backbone(name):
    check_backbone(create_model(name, width=0.25, features_only=True))


@pytest.mark.parametrize("name", DETECTORS)
def test_the_backbone_of_each_detector_family(name):
    model = create_model(name)
    check_backbone(model.backbone)
    assert model.size_divisible == model.backbone.size_divisible


def _builders():
    """(name, number of levels, build(out_indices)) for each backbone class."""
    yield "resnet18", 5, lambda oi: resnet18(width=0.25, out_indices=oi, features_only=True)
    yield "resnet50", 5, lambda oi: resnet50(width=0.25, out_indices=oi, features_only=True)
    yield "hourglass", 2, lambda oi: StackedHourglass(**SMALL_HG, out_indices=oi)
    for name, stages in (("resnet26", 4), ("hib_patch_2_2_nl", 4), ("san10_pair", 5)):
        yield name, stages, lambda oi, name=name: create_model(name, width=0.25, out_indices=oi, features_only=True)


@pytest.mark.parametrize("name,levels,build", list(_builders()), ids=lambda v: v if isinstance(v, str) else "")
def test_one_out_indices_rule(name, levels, build):
    every = build(None)
    assert every.out_indices == tuple(range(levels))  # None: every level
    check_backbone(every)
    last = build((-1,))
    assert last.out_indices == (levels - 1,) and last.feature_info == every.feature_info[-1:]
    check_backbone(last)
    two = build((-2, levels - 1))
    assert two.feature_info == every.feature_info[-2:]
    for bad in [(levels,), (-levels - 1,), (), (1, 0), (0, 0), (0, -levels)]:
        with pytest.raises(UserInputError, match=rf"out_indices=.*-{levels}\.\.{levels - 1}"):
            build(bad)


class _LyingBackbone(nn.Module):
    """A planted violation: a ResNet-18 whose feature_info states stride 16 for its C5."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = resnet18(width=0.25, out_indices=(2, 3, 4), features_only=True)
        self.out_indices = self.inner.out_indices
        self.feature_info = [*self.inner.feature_info[:2], {"channels": self.inner.feature_info[2]["channels"],
                                                           "stride": 16}]
        self.size_divisible = 32

    def forward(self, x):
        return self.inner(x)


def test_the_check_catches_a_planted_violation():
    with pytest.raises(AssertionError):
        check_backbone(_LyingBackbone())
    lying = _LyingBackbone()
    del lying.size_divisible
    with pytest.raises(AssertionError, match="size_divisible"):
        check_backbone(lying)
