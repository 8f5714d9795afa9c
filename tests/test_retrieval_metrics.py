"""Retrieval metrics against per-query oracles: scikit-learn's ``average_precision_score``, direct
counting for P@k and the reciprocal rank, on random cases with ties and with queries whose class
is absent from the gallery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from hybridvision.evaluation.retrieval import retrieval_metrics


def _oracle(sim: np.ndarray, q_lab: np.ndarray, g_lab: np.ndarray, k: int) -> dict[str, float]:
    """Per query, in plain Python: the ranking (descending score, ties by gallery index) and the
    metrics of the module docstring; scikit-learn computes both APs' non-interpolated part."""
    per = {"mAP": [], "mAP_interp": [], "mRR": [], "P@k": [], "mAP@k": []}
    for q in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda g: (-sim[q, g], g))
        rel = [int(g_lab[g] == q_lab[q]) for g in order]
        if not any(rel):
            continue
        rank_score = -np.arange(len(order), dtype=float)  # distinct scores in ranking order
        per["mAP"].append(average_precision_score(rel, rank_score))
        prec = [sum(rel[: i + 1]) / (i + 1) for i in range(len(rel))]
        interp = [max(prec[i:]) for i in range(len(prec))]
        per["mAP_interp"].append(sum(p for p, r in zip(interp, rel) if r) / sum(rel))
        per["mRR"].append(1.0 / (rel.index(1) + 1))
        per["P@k"].append(sum(rel[:k]) / k)
        top = rel[:k]
        per["mAP@k"].append(average_precision_score(top, rank_score[:k]) if any(top) else 0.0)
    return {key: float(np.mean(v)) if v else 0.0 for key, v in per.items()}


@pytest.mark.parametrize("seed", range(6))
def test_metrics_equal_per_query_oracles_with_ties_and_unmatched_queries(seed):
    rng = np.random.default_rng(seed)
    num_q, num_g, classes = 12, 40, 6
    sim = rng.integers(0, 5, size=(num_q, num_g)).astype(np.float32)  # few values: many ties
    g_lab = rng.integers(0, classes - 1, size=num_g)  # class 5 never in the gallery
    q_lab = rng.integers(0, classes, size=num_q)
    q_lab[0] = 5
    got = retrieval_metrics(sim, q_lab, g_lab, k=10, chunk=5)  # chunks of queries: same answer
    want = _oracle(sim, q_lab, g_lab, 10)
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-5, abs_tol=1e-6), key
    assert got["queries_without_match"] == int((q_lab == 5).sum()) >= 1
    assert got["mAP_interp"] >= got["mAP"] - 1e-7


def test_without_ties_map_is_sklearn_on_the_raw_scores():
    rng = np.random.default_rng(7)
    sim = rng.normal(size=(8, 30))
    q_lab, g_lab = rng.integers(0, 3, 8), rng.integers(0, 3, 30)
    want = np.mean([average_precision_score(g_lab == q_lab[q], sim[q]) for q in range(8)])
    assert math.isclose(retrieval_metrics(torch.tensor(sim), q_lab, g_lab)["mAP"], want, rel_tol=1e-5)


def test_hand_case():
    # one query of class 1; ranking: [0 (rel), 1, 2 (rel), 3]; ties resolved by index (items 1, 2)
    sim = [[0.9, 0.5, 0.5, 0.1]]
    got = retrieval_metrics(sim, [1], [1, 0, 1, 0], k=2)
    assert got["mAP"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert got["mRR"] == 1.0 and got["P@k"] == 0.5 and got["mAP@k"] == 1.0
    # the interpolated envelope lifts nothing here (precision only falls), so it equals mAP
    assert got["mAP_interp"] == pytest.approx(got["mAP"])
    # ranking [miss, hit, hit]: P@i = 0, 1/2, 2/3; the envelope lifts rank 2 to 2/3
    lifted = retrieval_metrics([[0.9, 0.5, 0.4]], [1], [0, 1, 1], k=5)
    assert lifted["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2) and lifted["mAP_interp"] == pytest.approx(2 / 3)
    assert lifted["mRR"] == 0.5 and lifted["P@k"] == pytest.approx(2 / 5)  # ÷ k although G = 3
    # a query whose class is absent: no NaN, every metric 0, counted
    none = retrieval_metrics(sim, [7], [1, 0, 1, 0])
    assert none["queries_without_match"] == 1 and all(none[k] == 0.0 for k in ("mAP", "mRR", "P@k"))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="query"):
        retrieval_metrics(np.zeros((2, 3)), [0], [0, 1, 2])
    with pytest.raises(ValueError, match="k=0"):
        retrieval_metrics(np.zeros((1, 3)), [0], [0, 1, 2], k=0)
