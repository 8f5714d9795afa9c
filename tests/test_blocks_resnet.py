"""Residual blocks and ResNet backbones: torchvision as the oracle, feature_info, attention slots."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

from hybridvision.backbones.resnet import ResNet, resnet18, resnet34, resnet50, resnet101
from hybridvision.errors import UserInputError
from hybridvision.layers.blocks import BasicBlock, Bottleneck
from hybridvision.layers.registry import list_attn, register_attn

torch.manual_seed(0)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _randomise_bn(m: nn.Module) -> None:
    # Non-trivial BN statistics so eval-mode comparisons exercise every parameter and buffer.
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.data = torch.rand(mod.num_features, generator=g) + 0.5
            mod.bias.data = torch.randn(mod.num_features, generator=g)
            mod.running_mean = torch.randn(mod.num_features, generator=g)
            mod.running_var = torch.rand(mod.num_features, generator=g) + 0.5


# ------------------------------------------------------------------------------------ blocks


@pytest.mark.parametrize("stride,cin", [(1, 256), (2, 128), (1, 64)])
def test_bottleneck_matches_torchvision(stride: int, cin: int) -> None:
    cout = 256
    ours = Bottleneck(cin, cout, stride)
    down = None
    if stride != 1 or cin != cout:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    ref = torchvision.models.resnet.Bottleneck(cin, cout // 4, stride, downsample=down)
    assert n_params(ours) == n_params(ref)
    _randomise_bn(ref)
    ours.load_state_dict(ref.state_dict())  # same names and shapes, or this raises
    ours.eval(), ref.eval()
    x = torch.randn(2, cin, 16, 16)
    torch.testing.assert_close(ours(x), ref(x))
    assert ours.conv2.stride == (stride, stride) and ours.conv1.stride == (1, 1)  # v1.5
    assert ours.mid_channels == cout // 4


@pytest.mark.parametrize("stride,cin", [(1, 64), (2, 32)])
def test_basicblock_matches_torchvision(stride: int, cin: int) -> None:
    cout = 64
    ours = BasicBlock(cin, cout, stride)
    down = None
    if stride != 1 or cin != cout:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    ref = torchvision.models.resnet.BasicBlock(cin, cout, stride, downsample=down)
    _randomise_bn(ref)
    ours.load_state_dict(ref.state_dict())
    ours.eval(), ref.eval()
    x = torch.randn(2, cin, 12, 12)
    torch.testing.assert_close(ours(x), ref(x))


def test_preact_bottleneck_computes_identity_mapping_form() -> None:
    """He et al. 2016b: out = conv3(a(conv2(a(conv1(a(x)))))) + shortcut, a = BN-ReLU."""
    blk = Bottleneck(32, 64, 2, preact=True).eval()
    _randomise_bn(blk)
    x = torch.randn(2, 32, 8, 8)

    def a(bn: nn.Module, t: torch.Tensor) -> torch.Tensor:
        return torch.relu(bn(t))

    act = a(blk.bn1, x)
    expect = blk.conv3(a(blk.bn3, blk.conv2(a(blk.bn2, blk.conv1(act))))) + blk.downsample(act)
    torch.testing.assert_close(blk(x), expect)
    # pre-activation layout: first norm on the input width, projection is a bare 1×1 conv
    assert blk.bn1.num_features == 32 and isinstance(blk.downsample, nn.Conv2d)
    # identity shortcut on the raw (not pre-activated) input when shapes match
    same = Bottleneck(64, 64, preact=True).eval()
    _randomise_bn(same)
    y = torch.randn(1, 64, 5, 5)
    act = a(same.bn1, y)
    expect = same.conv3(a(same.bn3, same.conv2(a(same.bn2, same.conv1(act))))) + y
    torch.testing.assert_close(same(y), expect)


def test_preact_basicblock_and_zero_init() -> None:
    blk = BasicBlock(16, 16, preact=True).eval()
    _randomise_bn(blk)
    x = torch.randn(1, 16, 6, 6)
    expect = blk.conv2(torch.relu(blk.bn2(blk.conv1(torch.relu(blk.bn1(x)))))) + x
    torch.testing.assert_close(blk(x), expect)
    blk.zero_init_last()
    torch.testing.assert_close(blk(x), x)  # identity at start
    post = Bottleneck(64, 64).eval()
    post.zero_init_last()
    y = torch.randn(1, 64, 4, 4)
    torch.testing.assert_close(post(y), torch.relu(y))


# ------------------------------------------------------------------------------------ ResNet


@pytest.mark.parametrize("depth,builder", [(18, resnet18), (34, resnet34), (50, resnet50), (101, resnet101)])
def test_parameter_counts_match_torchvision(depth: int, builder) -> None:
    ref = getattr(torchvision.models, f"resnet{depth}")()
    ours = builder(num_classes=1000)
    assert n_params(ours) == n_params(ref)
    # backbone mode: no classifier, everything else identical
    assert n_params(builder(features_only=True)) == n_params(ref) - n_params(ref.fc)


def test_resnet50_outputs_equal_torchvision_with_same_weights() -> None:
    ref = torchvision.models.resnet50().eval()
    _randomise_bn(ref)
    ours = resnet50(num_classes=1000).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
    # C3–C5 of the backbone equal torchvision's layer2..4 outputs
    c = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
    c3 = ref.layer2(ref.layer1(c))
    c4 = ref.layer3(c3)
    c5 = ref.layer4(c4)
    for got, want in zip(ours.forward_features(x), [c3, c4, c5]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_one_registered_resnet26() -> None:
    """Thesis B's ResNet26 is the registered one; the ResNet module offers no second builder."""
    import hybridvision.backbones.resnet as resnet
    from hybridvision.factory import list_models

    assert not hasattr(resnet, "resnet26") and 26 not in resnet.RESNET_DEPTHS
    assert list_models("resnet26") == ["resnet26"]


@pytest.mark.parametrize(
    "builder,width,out_indices,preact",
    [
        (resnet18, 0.25, (0, 1, 2, 3, 4), False),
        (resnet50, 0.5, (2, 3, 4), True),
        (resnet50, 0.25, (1, 4), False),
    ],
)
def test_feature_info_matches_outputs(builder, width, out_indices, preact) -> None:
    m = builder(width=width, out_indices=out_indices, preact=preact, features_only=True)
    x = torch.randn(2, 3, 64, 96)
    feats = m(x)
    assert len(feats) == len(m.feature_info) == len(out_indices)
    for f, info in zip(feats, m.feature_info):
        assert f.shape == (2, info["channels"], 64 // info["stride"], 96 // info["stride"])
    assert [t.shape for t in m.forward_features(x)] == [t.shape for t in feats]
    # the classifier form of the same network: logits from the last stage
    clf = builder(width=width, out_indices=out_indices, preact=preact, num_classes=7)
    assert clf(x).shape == (2, 7) and not hasattr(m, "fc")


def test_width_quarter_resnet18_channels() -> None:
    m = resnet18(width=0.25, out_indices=(1, 2, 3, 4), features_only=True)
    assert [f["channels"] for f in m.feature_info] == [16, 32, 64, 128]
    assert [f["stride"] for f in m.feature_info] == [4, 8, 16, 32]


# --------------------------------------------------------------------------- attention slots

_CALLS: list[tuple[str, int]] = []


class _Marker(nn.Module):
    """Records the channel count it was built for and its position in the forward order."""

    def __init__(self, channels: int, tag: str = "") -> None:
        super().__init__()
        self.channels = channels
        self.tag = tag
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.channels
        _CALLS.append(("attn", self.channels))
        return x * self.scale


if "_test_resnet_marker" not in list_attn():
    register_attn("_test_resnet_marker")(_Marker)


def test_attention_inserted_after_requested_blocks() -> None:
    m = resnet50(width=0.25, attn="_test_resnet_marker", attn_at=[(3, 1), (3, -1), (1, 0)], attn_kwargs={"tag": "t"})
    assert list(m.layer3._modules) == ["0", "1", "attn1", "2", "3", "4", "5", "attn5"]
    assert list(m.layer1._modules) == ["0", "attn0", "1", "2"]
    assert list(m.layer2._modules) == ["0", "1", "2", "3"]
    assert m.layer3.attn1.channels == m.layer3[1].out_channels == 256
    assert m.layer3.attn1.tag == "t"
    # the blocks run in the declared order: record the sequence of layer3's children
    _CALLS.clear()
    hooks = [
        blk.register_forward_hook(lambda mod, i, o, n=name: _CALLS.append(("block", n)))
        for name, blk in m.layer3.named_children()
        if not name.startswith("attn")
    ]
    m(torch.randn(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    seq = [c for c in _CALLS if c[0] == "block" or c[1] == 256]
    assert seq == [
        ("block", "0"), ("block", "1"), ("attn", 256), ("block", "2"), ("block", "3"),
        ("block", "4"), ("block", "5"), ("attn", 256),
    ]
    # parameters of the blocks keep torchvision's names
    assert "layer3.2.conv1.weight" in dict(m.named_parameters())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(attn="_test_resnet_marker", attn_at=[(5, 0)]),
        dict(attn="_test_resnet_marker", attn_at=[(2, 4)]),
        dict(attn_at=[(2, 0)]),
        dict(out_indices=(5,)),
    ],
)
def test_bad_configuration_is_a_user_error(kwargs) -> None:
    with pytest.raises(UserInputError):
        ResNet(Bottleneck, (3, 4, 6, 3), width=0.25, **kwargs)
