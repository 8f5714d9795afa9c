"""Corner pooling (ops/corner_pool.py) against Python loops, gradcheck in double, the two forms
against each other and through ONNX; CornerNet's pull/push losses on hand cases."""

from __future__ import annotations

import pytest
import torch

from hybridvision.losses import pull_push_loss
from hybridvision.ops import cascade_corner_pool, center_pool, corner_pool

DIRECTIONS = ["top", "bottom", "left", "right"]


def corner_pool_loop(x: torch.Tensor, direction: str) -> torch.Tensor:
    """The definition, one cell at a time: e.g. top pool at (i, j) = max over rows i..H−1."""
    out = torch.empty_like(x)
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            if direction == "top":
                region = x[..., i:, j]
            elif direction == "bottom":
                region = x[..., : i + 1, j]
            elif direction == "left":
                region = x[..., i, j:]
            else:
                region = x[..., i, : j + 1]
            out[..., i, j] = region.amax(dim=-1)
    return out


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("method", ["cummax", "logstep"])
@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 1, 1, 9), (1, 2, 8, 1), (2, 1, 16, 13)])
def test_corner_pool_equals_a_loop(direction, method, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    torch.testing.assert_close(corner_pool(x, direction, method=method), corner_pool_loop(x, direction))


def test_the_two_forms_agree_on_ties_and_hand_values():
    x = torch.tensor([[[[1.0, 3.0, 2.0], [0.0, 3.0, 5.0], [4.0, -1.0, 5.0]]]])
    assert corner_pool(x, "top")[0, 0].tolist() == [[4.0, 3.0, 5.0], [4.0, 3.0, 5.0], [4.0, -1.0, 5.0]]
    assert corner_pool(x, "right")[0, 0].tolist() == [[1.0, 3.0, 3.0], [0.0, 3.0, 5.0], [4.0, 4.0, 5.0]]
    for d in DIRECTIONS:
        torch.testing.assert_close(corner_pool(x, d, method="logstep"), corner_pool(x, d))
    with pytest.raises(ValueError, match="direction"):
        corner_pool(x, "up")
    with pytest.raises(ValueError, match="method"):
        corner_pool(x, "top", method="scan")


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("method", ["cummax", "logstep"])
def test_corner_pool_gradcheck(direction, method):
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: corner_pool(t, direction, method=method), (x,))


def test_center_and_cascade_pooling_on_a_hand_case():
    rows = torch.tensor([[[[1.0, 0.0, 2.0], [0.0, 5.0, 0.0]]]])
    cols = torch.tensor([[[[3.0, 0.0, 1.0], [0.0, 0.0, 4.0]]]])
    # row maxima [2, 5], column maxima [3, 0, 4]
    assert center_pool(rows, cols)[0, 0].tolist() == [[5.0, 2.0, 6.0], [8.0, 5.0, 9.0]]
    x = torch.zeros(1, 1, 3, 3)
    look = torch.zeros(1, 1, 3, 3)
    look[0, 0, 0, 2] = 7.0  # the boundary maximum, right of the top-left corner's row
    x[0, 0, 2, 0] = 1.0
    out = cascade_corner_pool(x, look, "top", "left")
    # left pool of look brings 7 to every cell of row 0; then top pool looks down each column
    assert out[0, 0, 0].tolist() == [7.0, 7.0, 7.0] and out[0, 0, 1, 0] == 1.0
    torch.testing.assert_close(out, cascade_corner_pool(x, look, "top", "left", method="logstep"))


def test_logstep_exports_to_onnx_and_matches(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")

    class Pools(torch.nn.Module):
        def forward(self, x):
            return torch.cat([corner_pool(x, d) for d in DIRECTIONS], dim=1)  # cummax, except in export

    onnx = pytest.importorskip("onnx")
    x = torch.randn(1, 2, 12, 9)
    path = tmp_path / "pool.onnx"
    # the exporter `hybridvision export` uses (torch.export based)
    torch.onnx.export(Pools().eval(), (x,), str(path), input_names=["x"], output_names=["y"], dynamo=True,
                      external_data=False)
    assert {n.op_type for n in onnx.load(str(path)).graph.node} <= {"Concat", "Max", "Slice"}  # plain ops
    sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
    torch.testing.assert_close(y, Pools()(x))


def test_pull_push_on_hand_cases():
    # one image, two objects: tags (tl, br) = (1, 3) and (6, 6)
    tl, br = torch.tensor([1.0, 6.0]), torch.tensor([3.0, 6.0])
    pull, push = pull_push_loss(tl, br, torch.tensor([0, 0]), 1)
    # means 2 and 6: pull = ((1-2)² + (3-2)² + 0 + 0) / 2 = 1; |2 - 6| = 4 > 1: push 0
    assert float(pull) == pytest.approx(1.0) and float(push) == 0.0
    pull, push = pull_push_loss(torch.tensor([0.0, 0.5]), torch.tensor([0.0, 0.5]), torch.tensor([0, 0]), 1)
    # means 0 and 0.5: push = 2 · (1 − 0.5) / (2 · 1) = 0.5
    assert float(pull) == 0.0 and float(push) == pytest.approx(0.5)


def test_pull_push_one_object_batch_one_and_empty():
    tl = torch.tensor([2.0], requires_grad=True)
    br = torch.tensor([4.0], requires_grad=True)
    pull, push = pull_push_loss(tl, br, torch.tensor([0]), 1)  # batch 1, one object
    assert float(pull.detach()) == pytest.approx(2.0) and float(push.detach()) == 0.0
    (pull + push).backward()
    assert tl.grad.tolist() == [-2.0] and br.grad.tolist() == [2.0]
    # two images: each image's terms are its own, averaged over the batch of 3 (one empty)
    pull, push = pull_push_loss(torch.tensor([0.0, 0.2, 5.0]), torch.tensor([0.0, 0.2, 5.0]),
                                torch.tensor([0, 0, 2]), 3)
    assert float(push) == pytest.approx((2 * 0.8 / 2) / 3)  # image 0's pair; image 2 alone: none
    empty_pull, empty_push = pull_push_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long), 2)
    assert float(empty_pull) == 0.0 and float(empty_push) == 0.0


def test_central_region_check_on_hand_boxes():
    from hybridvision.ops.triplets import central_region_check, central_regions

    boxes = torch.tensor([[0.0, 0, 30, 60], [0, 0, 300, 300]])
    # small box (√(30·60) ≈ 42 < 150): n = 3, region = middle third; large: n = 5, middle fifth
    assert central_regions(boxes).tolist() == [[10.0, 20.0, 20.0, 40.0], [120.0, 120.0, 180.0, 180.0]]
    centers = torch.tensor([[15.0, 30], [150, 150], [100, 100], [15, 30]])
    center_labels = torch.tensor([0, 1, 1, 1])
    center_scores = torch.tensor([0.9, 0.6, 0.99, 0.3])
    keep, scores = central_region_check(boxes, torch.tensor([0, 1]), torch.tensor([0.6, 0.8]),
                                        centers, center_labels, center_scores)
    # box 0: centre 0 (class 0) inside its middle third; box 1: centre 1 inside, centre 2
    # (better score) outside its middle fifth, centre 3 is of another class
    assert keep.tolist() == [True, True]
    assert scores.tolist() == pytest.approx([(2 * 0.6 + 0.9) / 3, (2 * 0.8 + 0.6) / 3])
    keep, scores = central_region_check(boxes, torch.tensor([1, 0]), torch.tensor([0.6, 0.8]),
                                        centers, center_labels, center_scores)
    assert keep.tolist() == [True, False]  # box 0 now class 1: centre 3 inside; box 1: no class-0 centre
    assert scores.tolist() == pytest.approx([(2 * 0.6 + 0.3) / 3, 0.8])
    keep, _ = central_region_check(boxes, torch.tensor([0, 1]), torch.tensor([0.6, 0.8]),
                                   torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert keep.tolist() == [False, False]
