"""CornerNet (detectors/cornernet.py): corner targets on a hand case, the loss's parts, and the
pairing rules of decoding (same class, tags within 0.5, bottom-right not left of / above the
top-left), each with a case that must pair and one that must not."""

from __future__ import annotations

import pytest
import torch

from hybridvision.factory import create_model


@pytest.fixture(scope="module")
def model():
    return create_model("cornernet_small", num_classes=2).eval()


def test_corner_targets_on_a_hand_case(model):
    targets = [dict(boxes=torch.tensor([[10.0, 6.0, 30.0, 22.0]]), labels=torch.tensor([1]))]
    tgt = model.prepare_targets(targets, (16, 16))
    # stride 4: top-left (2.5, 1.5) cells → cell (2, 1), offset (0.5, 0.5); bottom-right (7.5, 5.5) → (7, 5)
    assert tgt["tl_cell"].tolist() == [[2, 1]] and tgt["br_cell"].tolist() == [[7, 5]]
    assert tgt["tl_offset"].tolist() == [[0.5, 0.5]] and tgt["br_offset"].tolist() == [[0.5, 0.5]]
    assert tgt["tl_heat"][0, 1, 1, 2] == 1 and tgt["br_heat"][0, 1, 5, 7] == 1
    assert tgt["tl_heat"][0, 0].sum() == 0 and tgt["labels"].tolist() == [1]


def test_loss_parts_and_an_image_without_objects(model):
    model.train()
    images = torch.rand(2, 3, 64, 64)
    targets = [dict(boxes=torch.tensor([[4.0, 4, 30, 40], [20, 8, 60, 30]]), labels=torch.tensor([0, 1])),
               dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))]
    losses = model.loss(model(images), targets)
    parts = ["loss_heatmap", "loss_pull", "loss_push", "loss_offset"]
    assert all(torch.isfinite(losses[k]) for k in parts + ["loss"])
    expected = losses["loss_heatmap"] + 0.1 * losses["loss_pull"] + 0.1 * losses["loss_push"] + losses["loss_offset"]
    assert float(losses["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    losses["loss"].backward()
    empty = [dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))] * 2
    with torch.no_grad():
        none = model.loss(model(images), empty)
    assert torch.isfinite(none["loss"]) and float(none["loss_pull"]) == 0 and float(none["loss_push"]) == 0
    model.eval()


def _decode_pair(model, tl_label, br_label, tl_tag, br_tag, tl_xy, br_xy):
    """Outputs with one top-left and one bottom-right corner, decoded (a 64×64 image)."""
    k, h, w = 2, 16, 16
    out = {}
    for corner, label, tag, (x, y) in (("tl", tl_label, tl_tag, tl_xy), ("br", br_label, br_tag, br_xy)):
        heat = torch.full((1, k, h, w), -20.0)
        heat[0, label, y, x] = 20.0
        tags = torch.full((1, 1, h, w), -100.0)
        tags[0, 0, y, x] = tag
        out[f"{corner}_heat"], out[f"{corner}_tag"] = [heat], [tags]
        out[f"{corner}_offset"] = [torch.zeros(1, 2, h, w)]
    return model.decode(out, [(64, 64)])[0]


def test_decode_pairs_only_matching_corners(model):
    det = _decode_pair(model, 1, 1, 0.2, 0.5, (2, 3), (9, 12))
    assert det["boxes"].tolist() == [[8.0, 12.0, 36.0, 48.0]] and det["labels"].tolist() == [1]
    assert float(det["scores"][0]) == pytest.approx(1.0, abs=1e-6)
    assert len(_decode_pair(model, 0, 1, 0.2, 0.2, (2, 3), (9, 12))["boxes"]) == 0  # other class
    assert len(_decode_pair(model, 1, 1, 0.0, 0.6, (2, 3), (9, 12))["boxes"]) == 0  # tags 0.6 apart
    assert len(_decode_pair(model, 1, 1, 0.0, 0.0, (9, 3), (2, 12))["boxes"]) == 0  # br left of tl
    assert len(_decode_pair(model, 1, 1, 0.0, 0.0, (2, 12), (9, 3))["boxes"]) == 0  # br above tl


def test_cornernet_with_corner_pooling_exports_to_plain_onnx(model, tmp_path):
    """`hybridvision export`'s path: the corner pools become Slice/Concat/Max, and onnxruntime's
    outputs match PyTorch's (export_onnx checks that on another batch size, and raises if not)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from hybridvision.export import export_onnx

    meta = export_onnx(model, tmp_path / "cornernet.onnx", size=64)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "cornernet.onnx")).graph.node}
    assert "Max" in ops and not any("cum" in op.lower() for op in ops)
    assert "tl_heat_0" in meta["outputs"]


def test_triplets_keep_only_boxes_with_a_centre_keypoint():
    """CenterNet triplets: the same corner pair decodes to a box when a centre keypoint of its class
    lies in its central region, and to nothing without one (or with one of another class)."""
    model = create_model("centernet_triplets_small", num_classes=2).eval()
    targets = [dict(boxes=torch.tensor([[8.0, 12, 40, 52]]), labels=torch.tensor([1]))]
    out = model.encode_targets(targets, [(64, 64)])
    det = model.decode(out, [(64, 64)])[0]
    assert det["boxes"].tolist() == [[8.0, 12.0, 40.0, 52.0]] and float(det["scores"][0]) == pytest.approx(1.0)
    no_centre = {k: [t.clone() for t in v] for k, v in out.items()}
    no_centre["ct_heat"][-1].fill_(-20.0)
    assert len(model.decode(no_centre, [(64, 64)])[0]["boxes"]) == 0
    other_class = {k: [t.clone() for t in v] for k, v in out.items()}
    other_class["ct_heat"][-1] = other_class["ct_heat"][-1].flip(1)  # the centre now says class 0
    assert len(model.decode(other_class, [(64, 64)])[0]["boxes"]) == 0


def test_the_64_reduction_pools_at_half_resolution_and_returns_full_maps():
    from hybridvision.detectors.cornernet import CornerModule
    from hybridvision.errors import UserInputError

    module = CornerModule(8, 3, "tl", pool_channels=4, pool_stride=2).eval()
    x = torch.rand(1, 8, 16, 12)
    assert module.branch1(x).shape == (1, 4, 8, 6)  # the pooling sees 8×6
    out = module(x)
    assert out["heat"].shape == (1, 3, 16, 12) and out["tag"].shape == (1, 1, 16, 12)
    with pytest.raises(UserInputError, match="pool_stride"):
        CornerModule(8, 3, "tl", pool_stride=3)
    full = create_model("cornernet_small", num_classes=2)
    half = create_model("cornernet_small_64", num_classes=2)
    # the same parameters (a strided conv has the 3×3 conv's weights): a cost of time, not size
    assert sum(p.numel() for p in full.parameters()) == sum(p.numel() for p in half.parameters())


def test_the_loss_sums_over_stacks_and_decoding_reads_the_last():
    """Intermediate supervision: two stacks with identical outputs give twice one stack's loss;
    decoding reads only the last stack (a first stack of noise changes nothing)."""
    torch.manual_seed(0)
    model = create_model("cornernet_small", num_classes=2, stacks=2).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert len(out["tl_heat"]) == 2
    last = {k: [v[-1]] for k, v in out.items()}
    twice = {k: [v[-1], v[-1]] for k, v in out.items()}
    targets = [dict(boxes=torch.tensor([[8.0, 8.0, 40.0, 30.0]]), labels=torch.tensor([1]))]
    one, two = model.loss(last, targets), model.loss(twice, targets)
    for key in ("loss_heatmap", "loss_pull", "loss_push", "loss_offset"):
        torch.testing.assert_close(two[key], 2 * one[key])
    noisy = {k: [torch.randn_like(v[0]), v[1]] for k, v in out.items()}
    a, b = model.decode(out, [(64, 64)]), model.decode(noisy, [(64, 64)])
    torch.testing.assert_close(a[0]["boxes"], b[0]["boxes"])
    torch.testing.assert_close(a[0]["scores"], b[0]["scores"])


def test_cornerfcos_normal_targets_go_to_the_level_of_half_the_larger_side():
    """FCOS's rule at the box's centre, where max(l, t, r, b) is half the larger side: with the
    small model's ranges (0, 32), (32, 64), (64, ∞) a 40-px box goes to P3, a 64-px and a 100-px box
    to P4 and a 130-px box to P5. "all" gives every box to every level."""
    normal = create_model("cornerfcos_multi_normal_small", num_classes=2)
    everything = create_model("cornerfcos_multi_all_small", num_classes=2)
    boxes = torch.tensor([[0.0, 0.0, 40.0, 8.0], [10.0, 10.0, 22.0, 74.0], [0.0, 0.0, 100.0, 100.0],
                          [5.0, 5.0, 135.0, 60.0]])
    targets = [dict(boxes=boxes, labels=torch.tensor([0, 1, 0, 1]))]
    learnt = []
    for level, stride in enumerate(normal.strides):
        tgt = normal.prepare_targets(targets, (160 // stride, 160 // stride), level=level)
        learnt.append(tgt["index"].tolist())
        assert tgt["tl_heat"].amax().item() == (1.0 if learnt[-1] else 0.0)
    assert normal.strides == [8, 16, 32] and learnt == [[0], [1, 2], [3]]
    for level, stride in enumerate(everything.strides):
        tgt = everything.prepare_targets(targets, (160 // stride, 160 // stride), level=level)
        assert tgt["index"].tolist() == [0, 1, 2, 3]
