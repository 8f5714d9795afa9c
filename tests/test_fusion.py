"""Conv–BN folding: the folded copy computes what the model computes, and the model is untouched."""

from __future__ import annotations

import pytest
import torch

from hybridvision.factory import create_model
from hybridvision.layers.fusion import fuse_conv_bn


def _random_bn_statistics(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


@pytest.mark.parametrize("name, kwargs", [("fcos_small", {}), ("fcos_r50_fpn", {"width": 0.25}),
                                          ("fcos_demo", {"backbone_preact": True})])
def test_folded_detector_equals_the_model(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, **kwargs)
    _random_bn_statistics(model)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_conv_bn(model)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    if kwargs.get("backbone_preact"):
        assert left == n_bn  # pre-activation: the norm precedes the conv, nothing to fold
    else:
        assert n_bn > 0 and left == 0
    x = torch.rand(2, 3, 96, 128)
    sizes = [(96, 128), (80, 100)]
    with torch.inference_mode():
        a, b = model(x, sizes), fused(x, sizes)
        for key in a:
            for u, v in zip(a[key], b[key]):
                torch.testing.assert_close(v, u, atol=1e-4, rtol=1e-4)
        da, db = model.decode(a, sizes), fused.decode(b, sizes)
    for u, v in zip(da, db):
        torch.testing.assert_close(v["boxes"], u["boxes"], atol=1e-3, rtol=1e-4)
        assert torch.equal(v["labels"], u["labels"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    assert model.training is False and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
