"""Unimodal zero-shot retrieval: pooled classifier features, the per-class query/catalogue split,
and the ranking on a hand case (separable classes → every metric 1; shuffled → the chance level)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridvision.factory import create_model
from hybridvision.retrieval.zero_shot import embed_all, pooled_features, split_queries, zero_shot_retrieval


def test_pooled_features_are_the_heads_input():
    model = create_model("resnet26", num_classes=5, in_chans=1, width=0.25).eval()
    x = torch.rand(2, 1, 32, 32)
    feats = pooled_features(model, x)  # [2, D]
    with torch.no_grad():
        torch.testing.assert_close(model.head[-1](feats), model(x))  # the classifier reads them
    emb, labels = embed_all(model, [(x, torch.tensor([3, 4]))])
    assert emb.shape == feats.shape and labels.tolist() == [3, 4]
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_split_is_per_class_disjoint_and_seeded():
    labels = [0] * 10 + [1] * 7
    q, g = split_queries(labels, 2, 4, seed=1)
    assert len(q) == 4 and len(g) == 8 and not set(q) & set(g)
    assert sorted(np.asarray(labels)[q].tolist()) == [0, 0, 1, 1]
    q2, g2 = split_queries(labels, 2, 4, seed=1)
    assert (q == q2).all() and (g == g2).all()


def test_separable_embeddings_retrieve_perfectly_and_shuffled_ones_do_not():
    rng = np.random.default_rng(0)
    labels = torch.tensor(np.repeat(np.arange(4), 12))
    centres = torch.eye(4)
    emb = centres[labels] + 0.05 * torch.tensor(rng.normal(size=(48, 4)), dtype=torch.float32)
    perfect = zero_shot_retrieval(emb, labels, queries_per_class=2, catalogue_per_class=10, k=5)
    assert perfect["mAP"] == pytest.approx(1.0) and perfect["P@k"] == pytest.approx(1.0)
    shuffled = zero_shot_retrieval(emb[torch.randperm(48, generator=torch.Generator().manual_seed(0))], labels,
                                   queries_per_class=2, catalogue_per_class=10, k=5)
    assert shuffled["mAP"] < 0.6  # chance is about a quarter
