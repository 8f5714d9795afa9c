"""FPN and PANet necks: output shapes and strides, and each level recomputed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybridvision.errors import UserInputError
from hybridvision.necks.fpn import FPN
from hybridvision.necks.panet import PANet

torch.manual_seed(0)
IN_CH = [8, 16, 32]
IN_STRIDES = [8, 16, 32]


def _inputs(h: int = 64, w: int = 96, batch: int = 2) -> list[torch.Tensor]:
    return [torch.randn(batch, c, -(-h // s), -(-w // s)) for c, s in zip(IN_CH, IN_STRIDES)]


@pytest.mark.parametrize("num_extra", [0, 2])
@pytest.mark.parametrize("neck_cls", [FPN, PANet])
def test_shapes_and_strides(neck_cls, num_extra: int) -> None:
    neck = neck_cls(IN_CH, IN_STRIDES, 16, num_extra=num_extra)
    outs = neck(_inputs())
    expected_strides = [8, 16, 32, 64, 128][: 3 + num_extra]
    assert neck.strides == expected_strides
    assert neck.out_channels == 16
    assert [f["stride"] for f in neck.feature_info] == expected_strides
    assert len(outs) == len(expected_strides)
    for o, s in zip(outs, expected_strides):
        assert o.shape == (2, 16, -(-64 // s), -(-96 // s))


def test_fpn_p6_from_p5_or_c5() -> None:
    x = _inputs()
    p5_neck = FPN(IN_CH, IN_STRIDES, 16, extra_from="p5")
    outs = p5_neck(x)
    extra = p5_neck.fpn.extra_blocks
    torch.testing.assert_close(outs[3], extra.p6(outs[2]))  # P6 = conv(P5)
    torch.testing.assert_close(outs[4], extra.p7(F.relu(outs[3])))  # P7 = conv(relu(P6))

    c5_neck = FPN(IN_CH, IN_STRIDES, 16, extra_from="c5")
    outs = c5_neck(x)
    torch.testing.assert_close(outs[3], c5_neck.fpn.extra_blocks.p6(x[2]))  # P6 = conv(C5)
    # "c5" is honoured even when C5 already has the neck's channel count
    same = FPN([8, 16, 16], IN_STRIDES, 16, extra_from="c5")
    x_same = [x[0], x[1], torch.randn(2, 16, 2, 3)]
    outs = same(x_same)
    torch.testing.assert_close(outs[3], same.fpn.extra_blocks.p6(x_same[2]))


def test_fpn_top_down_matches_hand_computation() -> None:
    x = _inputs()
    neck = FPN(IN_CH, IN_STRIDES, 16, num_extra=0)
    inner = [b[0] for b in neck.fpn.inner_blocks]
    layer = [b[0] for b in neck.fpn.layer_blocks]
    lat5 = inner[2](x[2])
    lat4 = inner[1](x[1]) + F.interpolate(lat5, size=x[1].shape[-2:], mode="nearest")
    lat3 = inner[0](x[0]) + F.interpolate(lat4, size=x[0].shape[-2:], mode="nearest")
    for got, want in zip(neck(x), [layer[0](lat3), layer[1](lat4), layer[2](lat5)]):
        torch.testing.assert_close(got, want)


def test_panet_bottom_up_matches_paper() -> None:
    x = _inputs()
    neck = PANet(IN_CH, IN_STRIDES, 16, num_extra=2)
    p3, p4, p5 = neck.fpn(x)
    n3 = p3
    n4 = F.relu(neck.fuse_convs[0](F.relu(neck.down_convs[0](n3)) + p4))
    n5 = F.relu(neck.fuse_convs[1](F.relu(neck.down_convs[1](n4)) + p5))
    n6 = neck.extra_convs[0](n5)
    n7 = neck.extra_convs[1](F.relu(n6))
    for got, want in zip(neck(x), [n3, n4, n5, n6, n7]):
        torch.testing.assert_close(got, want)


def test_panet_gradients_reach_every_parameter() -> None:
    neck = PANet(IN_CH, IN_STRIDES, 16)
    sum(o.sum() for o in neck(_inputs(48, 80, 1))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in neck.parameters())


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_extra=1), dict(in_strides=[8, 16, 64]), dict(in_strides=[8, 16])],
)
def test_bad_neck_configuration(kwargs) -> None:
    args = dict(in_channels=IN_CH, in_strides=IN_STRIDES, out_channels=16) | kwargs
    with pytest.raises(UserInputError):
        FPN(**args)
    with pytest.raises(UserInputError):
        PANet(**args)
