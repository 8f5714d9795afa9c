"""Thesis B's contrastive and triplet losses on hand cases, and batch hard-negative mining."""

from __future__ import annotations

import pytest
import torch

from hybridvision.retrieval.losses import contrastive_loss, hardest_negatives, triplet_loss

E0, E1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])  # unit vectors, D² = 2 apart
DIAG = torch.tensor([0.6, 0.8])  # unit, D² to E0 = 0.4² + 0.8² = 0.8


def test_contrastive_on_hand_pairs():
    sketch = torch.stack([E0, E0, E0, E0 * 3])  # the last is normalised to E0
    photo = torch.stack([DIAG, DIAG, E1, E0])
    same = torch.tensor([True, False, False, True])
    # pairs: same, D² 0.8 → 0.4; other, D² 0.8 < m = 1 → ½(1 − 0.8) = 0.1; other, D² 2 → 0; same, D² 0 → 0
    assert contrastive_loss(sketch, photo, same, margin=1.0).item() == pytest.approx((0.4 + 0.1 + 0 + 0) / 4)
    # without normalisation the scale counts: D²(3·E0, E0) = 4 → ½·4 = 2
    raw = contrastive_loss(sketch[3:], photo[3:], same[3:], normalize=False)
    assert raw.item() == pytest.approx(2.0)


def test_triplet_on_hand_triplets_and_its_gradient():
    anchor = torch.stack([E0, E0]).requires_grad_()
    positive = torch.stack([DIAG, E0])
    negative = torch.stack([E1, DIAG])
    # first: ½ max(0, 0.2 + 0.8 − 2) = 0; second: ½ max(0, 0.2 + 0 − 0.8) = 0 → 0
    assert triplet_loss(anchor, positive, negative).item() == pytest.approx(0.0)
    # margin 1.5: first ½(1.5 + 0.8 − 2) = 0.15; second ½(1.5 + 0 − 0.8) = 0.35
    loss = triplet_loss(anchor, positive, negative, margin=1.5)
    assert loss.item() == pytest.approx((0.15 + 0.35) / 2)
    loss.backward()
    assert torch.isfinite(anchor.grad).all() and anchor.grad.abs().sum() > 0


def test_hardest_negative_is_the_nearest_photo_of_another_class():
    sketch = torch.stack([E0, E1])
    photo = torch.stack([E0, DIAG, E1])  # labels 0, 1, 1
    idx = hardest_negatives(sketch, photo, torch.tensor([0, 1]), torch.tensor([0, 1, 1]))
    # sketch 0 (class 0): photos 1 and 2 are negatives, DIAG is nearer to E0; sketch 1: only photo 0
    assert idx.tolist() == [1, 0]
    none = hardest_negatives(sketch[:1], photo[:1], torch.tensor([0]), torch.tensor([0]))
    assert none.tolist() == [-1]
