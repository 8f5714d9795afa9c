"""Top-k accuracy against hand counts and a per-sample loop."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from hybridvision.evaluation.classification import ClassificationMeter, topk_accuracy

# Hand-counted example: ranks of the target among the logits (1 = best).
LOGITS = torch.tensor([
    [0.1, 0.5, 0.2, 0.9],   # target 1: order 3,1,2,0 -> rank 2
    [2.0, 1.0, 0.0, -1.0],  # target 0: rank 1
    [0.0, 0.1, 0.2, 0.3],   # target 0: rank 4
])  # fmt: skip
TARGETS = torch.tensor([1, 0, 0])


def test_topk_hand_count() -> None:
    acc = topk_accuracy(LOGITS, TARGETS, ks=(1, 2, 3, 4))
    assert acc == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3),
                   "top3": pytest.approx(2 / 3), "top4": pytest.approx(1.0)}
    # k beyond the number of classes: every sample counts (the default ks=(1, 5) on 4 classes)
    assert topk_accuracy(LOGITS, TARGETS) == {"top1": pytest.approx(1 / 3), "top5": pytest.approx(1.0)}


def test_topk_matches_rank_loop() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=g)
    targets = torch.randint(0, 10, (64,), generator=g)
    ks = (1, 3, 5)
    expected = {f"top{k}": 0 for k in ks}
    for row, t in zip(logits.tolist(), targets.tolist()):
        rank = 1 + sum(v > row[t] for v in row)  # no ties in random floats
        for k in ks:
            expected[f"top{k}"] += rank <= k
    got = topk_accuracy(logits, targets, ks)
    assert got == {key: pytest.approx(v / 64) for key, v in expected.items()}


def test_soft_targets_and_bad_shapes() -> None:
    one_hot = torch.nn.functional.one_hot(TARGETS, 4).float() * 0.9 + 0.025  # label smoothing
    assert topk_accuracy(LOGITS, one_hot, ks=(1, 2)) == topk_accuracy(LOGITS, TARGETS, ks=(1, 2))
    with pytest.raises(ValueError):
        topk_accuracy(LOGITS, TARGETS[:2])
    with pytest.raises(ValueError):
        topk_accuracy(LOGITS, TARGETS, ks=(0,))
    assert topk_accuracy(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)) == {"top1": 0.0, "top5": 0.0}


def test_meter_accumulates_like_one_batch() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 7, generator=g)
    targets = torch.randint(0, 7, (50,), generator=g)
    meter = ClassificationMeter(ks=(1, 5))
    assert meter.compute() == {"top1": 0.0, "top5": 0.0, "count": 0}
    for lo, hi in [(0, 13), (13, 14), (14, 50)]:
        meter.update(logits[lo:hi], targets[lo:hi])
    out = meter.compute()
    assert out["count"] == 50 and "loss" not in out
    whole = topk_accuracy(logits, targets, ks=(1, 5))
    assert out["top1"] == pytest.approx(whole["top1"]) and out["top5"] == pytest.approx(whole["top5"])
    meter.reset()
    assert meter.compute()["count"] == 0


def test_meter_loss_is_weighted_by_batch_size() -> None:
    meter = ClassificationMeter(ks=(1,))
    meter.update(LOGITS[:2], TARGETS[:2], loss=torch.tensor(1.0))
    meter.update(LOGITS[2:], TARGETS[2:], loss=4.0)
    assert meter.compute()["loss"] == pytest.approx((2 * 1.0 + 1 * 4.0) / 3)
    assert meter.compute()["top1"] == pytest.approx(1 / 3)


def test_meter_all_reduce_single_process(tmp_path) -> None:
    meter = ClassificationMeter(ks=(1, 2))
    meter.update(LOGITS, TARGETS, loss=2.0)
    before = meter.compute()
    meter.all_reduce()  # not initialised: a no-op
    assert meter.compute() == before
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        meter.all_reduce()
    finally:
        dist.destroy_process_group()
    assert meter.compute() == before
