"""The 17 classification models of thesis B's Table 3.1 (thesis B): structure, size, cost, runs.

Parameter counts and MACs are checked against the thesis' own numbers (reference/RESULTS.md,
Table 3.1, 250 classes, post-activation). Full-size models are built on the meta device, so
counting costs neither memory nor compute; forward/backward runs use the ``width=0.25`` presets
on 64×64 inputs, which exercise the same code paths.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from hybridvision.backbones.hybrid import (
    HYBRID_MODELS,
    HybridNet,
    StageSpec,
    nl_positions,
)
from hybridvision.errors import UserInputError
from hybridvision.evaluation.cost import model_macs
from hybridvision.layers.attention import NonLocal2d
from hybridvision.layers.blocks import Bottleneck
from hybridvision.layers.san import SANBlock, SANTransition
from hybridvision.factory import create_model, list_models

# Table 3.1 of thesis B: (params in M, GMACs), 250 classes, post-activation, 224².
TABLE_3_1 = {
    "resnet26": (12.15, 2.28),
    "resnet26_nl": (11.58, 2.0),
    "san10_pair": (8.99, 2.15),
    "san10_pair_nl": (9.27, 2.03),
    "san10_patch": (10.3, 1.86),
    "san10_patch_nl": (10.23, 1.84),
    "hib_pair_2_2": (9.2, 2.06),
    "hib_pair_2_2_nl": (9.4, 1.88),
    "hib_patch_2_2": (10.41, 1.9),
    "hib_patch_2_2_nl": (10.3, 1.78),
    "hib_pair_3_1": (10.87, 2.2),
    "hib_pair_3_1_nl": (10.3, 1.92),
    "hib_patch_3_1": (11.47, 2.17),
    "hib_patch_3_1_nl": (10.9, 1.89),
    "pure_nl": (10.17, 2.28),
    "hib_nl_2_2": (10.2, 1.87),
    "hib_nl_3_1": (11.37, 2.17),
}
NAMES = list(TABLE_3_1)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _meta(name: str, **kw) -> HybridNet:
    with torch.device("meta"):
        return create_model(name, **kw)


def test_all_models_registered_as_classification():
    assert set(NAMES) <= set(list_models(task="classification"))
    assert set(HYBRID_MODELS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_table_3_1(name):
    model = _meta(name, num_classes=250)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    expected = TABLE_3_1[name][0]
    assert abs(params / expected - 1) < 0.01, f"{name}: {params:.3f}M vs {expected}M"


def test_nl_interleaving_from_the_end():
    assert nl_positions(6, 2) == {3, 5}  # b b b NL b b NL b (SPEC §B)
    assert nl_positions(6, 3) == {1, 3, 5}
    assert nl_positions(6, 4) == {2, 3, 4, 5}
    assert nl_positions(2, 2) == {0, 1}  # NL b NL b
    assert nl_positions(1, 1) == {0}
    assert nl_positions(4, 0) == set()
    with pytest.raises(UserInputError):
        nl_positions(1, 2)


def _layout(stage: nn.Sequential) -> str:
    """T transition, R bottleneck, S SAN block, N non-local block (final BN-ReLU dropped)."""
    codes = {SANTransition: "T", Bottleneck: "R", SANBlock: "S", NonLocal2d: "N"}
    return "".join(codes[type(m)] for m in stage if type(m) in codes)


@pytest.mark.parametrize(
    "name,layouts",
    [
        ("resnet26", ["R", "RR", "RRRR", "R"]),
        ("resnet26_nl", ["R", "TNR", "TNRNR", "R"]),  # a res stage that lost its first block
        ("san10_patch", ["TSS", "TS", "TSS", "TSSSS", "TS"]),
        ("san10_pair_nl", ["TSS", "TS", "TNS", "TNSNS", "TS"]),
        ("hib_patch_2_2", ["R", "RR", "TSSSS", "TS"]),
        ("hib_pair_2_2_nl", ["R", "TNR", "TNSNS", "TS"]),
        ("hib_patch_3_1_nl", ["R", "TNR", "TNRNR", "TS"]),
        ("pure_nl", ["T", "TNNN", "TNN", "TNNNN", "TN"]),
        ("hib_nl_3_1", ["R", "RR", "RRRR", "TN"]),
    ],
)
def test_stage_layouts(name, layouts):
    model = _meta(name)
    assert [_layout(s) for s in model.stages] == layouts


def test_san_kernel_sizes_and_sa_types():
    model = _meta("san10_pair")
    kernels = [[b.sam.kernel_size for b in s if isinstance(b, SANBlock)] for s in model.stages]
    assert kernels == [[3, 3], [7], [7, 7], [7, 7, 7, 7], [7]]
    assert {b.sam.sa_type for b in model.modules() if isinstance(b, SANBlock)} == {"pairwise"}
    model = _meta("hib_patch_2_2")
    assert {b.sam.kernel_size for b in model.modules() if isinstance(b, SANBlock)} == {7}
    assert {b.sam.sa_type for b in model.modules() if isinstance(b, SANBlock)} == {"patchwise"}


def test_post_and_pre_activation_structure():
    post, pre = _meta("resnet26"), _meta("resnet26", preact=True)
    # post-act stem conv-BN-ReLU-pool; pre-act stem conv-pool and BN-ReLU after the last stage
    assert [type(m) for m in post.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert [type(m) for m in pre.stem] == [nn.Conv2d, nn.MaxPool2d]
    assert not isinstance(post.stages[-1][-1], nn.ReLU)
    assert isinstance(pre.stages[-1][-1], nn.ReLU)
    assert isinstance(pre.stages[-1][-2], nn.BatchNorm2d)
    assert all(b.preact for b in pre.modules() if isinstance(b, Bottleneck))
    # a SAN (or NL) last stage ends in BN-ReLU in both families
    assert isinstance(_meta("hib_patch_3_1").stages[-1][-1], nn.ReLU)
    # post-act NL stages: BN-ReLU before each block (thesis NLLayer2D); pre-act: inside the block
    nl_post = [type(m) for m in _meta("hib_nl_3_1").stages[-1]]
    assert nl_post[:4] == [SANTransition, nn.BatchNorm2d, nn.ReLU, NonLocal2d]
    nl_pre = _meta("hib_nl_3_1", preact=True).stages[-1]
    assert [type(m) for m in nl_pre][:2] == [SANTransition, NonLocal2d]
    assert isinstance(nl_pre[1].pre, nn.Sequential)  # BN-ReLU on the block's input


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("preact", [False, True], ids=["post", "pre"])
def test_forward_backward_tiny(name, preact):
    torch.manual_seed(0)
    model = create_model(name, preact=preact, width=0.25, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_features_match_feature_info(name):
    torch.manual_seed(0)
    model = create_model(name, width=0.25, in_chans=1).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
    assert len(feats) == len(model.feature_info) == len(model.stages)
    for f, info in zip(feats, model.feature_info):
        assert f.shape[1] == info["channels"]
        assert f.shape[-1] == 64 // info["stride"]
    assert model.feature_info[-1]["stride"] == 32


@pytest.mark.parametrize("name", ["resnet26", "san10_pair_nl", "hib_patch_2_2", "pure_nl"])
def test_backbone_mode_for_detection_necks(name):
    model = create_model(name, width=0.25, out_indices=(-3, -2, -1), features_only=True).eval()
    assert [i["stride"] for i in model.feature_info] == [8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 96, 128))
    assert [f.shape[-2:] for f in feats] == [(12, 16), (6, 8), (3, 4)]
    assert [f.shape[1] for f in feats] == [i["channels"] for i in model.feature_info]
    assert model.head is None


def test_width_multiplier_and_in_chans():
    small = _meta("hib_patch_2_2_nl", width=0.25, in_chans=1)
    assert [i["channels"] for i in small.feature_info] == [64, 128, 256, 512]
    assert small.stem[0].in_channels == 1 and small.stem[0].out_channels == 32
    assert sum(p.numel() for p in small.parameters()) < 1e6
    with pytest.raises(UserInputError, match="width"):
        create_model("resnet26", width=0)
    with pytest.raises(UserInputError, match="aggregation"):
        create_model("san10_pair", width=0.25, aggregation="im2col")


def test_aggregation_option_is_numerically_neutral():
    torch.manual_seed(0)
    a = create_model("hib_pair_3_1", width=0.25, aggregation="shift").double()
    b = create_model("hib_pair_3_1", width=0.25, aggregation="unfold").double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x))


def test_custom_stages():
    model = HybridNet(
        [StageSpec("res", 64, 1), StageSpec("san", 128, 2, nl_blocks=1, kernel_size=3)],
        num_classes=5,
        sa_type="pairwise",
    )
    assert [_layout(s) for s in model.stages] == ["R", "TSNS"]
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(UserInputError, match="stage kind"):
        HybridNet([StageSpec("conv", 64, 1)])  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="multiple of 32"):
        HybridNet([StageSpec("san", 48, 1)], stem="san")


def test_thesis_mac_counter_hand_count():
    """The Table 3.1 counter on a hand-countable net: SAN stem, transition, one SAN block."""
    model = HybridNet(
        [StageSpec("san", 64, 1, kernel_size=3)],
        stem="san",
        num_classes=10,
        in_chans=1,
        sa_type="pairwise",
    )
    hw, hw2 = 8 * 8, 4 * 4
    c, r, v, w, k2 = 64, 4, 16, 2, 9
    expected = hw * 64  # stem 1×1 conv 1 -> 64 (no bias)
    expected += 2 * 64 * hw + 64 * hw + 64 * hw + 64 * 64 * hw2  # transition BN, ReLU, pool, conv
    expected += 2 * c * hw2 + c * hw2  # block BN1 + ReLU
    expected += (2 * (c * r + r) + (c * v + v)) * hw2  # φ, ψ, β with bias
    # γ on the [K, L] map: BN, ReLU, 1×1 (no bias), BN, ReLU, 1×1 (bias)
    expected += (2 * (r + 2) + (r + 2) + (r + 2) * r + 2 * r + r + (r * w + w)) * k2 * hw2
    expected += (2 * 2 + 2) * hw2  # position conv on the grid (bias)
    expected += (r + 2) * k2 * hw2 + v * k2 * hw2  # subtractions, aggregation
    expected += 2 * v * hw2 + v * hw2 + (v * c + c) * hw2  # BN2, ReLU, 1×1 conv with bias
    expected += 2 * c * hw2 + c * hw2  # final BN-ReLU
    expected += c * hw2 + c * 10  # global average pool, fc
    assert model_macs(model, (1, 8, 8)) == expected


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n,
            marks=pytest.mark.xfail(
                strict=True,
                reason="Table 3.1 lists 2.28 G for Pure NL (ResNet26's figure); the structure of "
                "Table 3.2 / the thesis code counts 2.00 G with the same counter",
            ),
        )
        if n == "pure_nl"
        else n
        for n in NAMES
    ],
)
def test_macs_match_table_3_1(name):
    """224², 250 classes, 1-channel input (the thesis' grayscale sketches), thesis counter."""
    model = _meta(name, in_chans=1)
    gmacs = model_macs(model, (1, 224, 224)) / 1e9
    expected = TABLE_3_1[name][1]
    assert abs(gmacs / expected - 1) < 0.02, f"{name}: {gmacs:.3f} G vs {expected} G"
