"""Retrieval metrics of a ranked gallery (thesis B's sketch-based retrieval, Tables 4.3–4.4).

Symbols: Q queries, G gallery items. ``similarity[q, g]`` is higher for a better match; an item
is *relevant* to a query when their labels are equal.

One ranking per query serves every metric: the gallery sorted by descending similarity, **ties
broken by gallery index** (the lower index first; a stable sort of ``-similarity``). With no ties
``mAP`` equals scikit-learn's ``average_precision_score(relevant, similarity)`` per query; with
ties scikit-learn counts a tied group as one threshold, whereas here the tie order above decides
(so that ``P@k``, ``mRR`` and both APs read the same list).

* ``mAP``: mean over queries of the non-interpolated average precision of the whole ranking,
  ``AP = (1 / R) · Σ_{i relevant} P@i`` with R the query's relevant items (scikit-learn's
  definition; Doodle2Search reports it).
* ``mAP_interp``: the same with the precision replaced by its interpolated envelope
  ``max_{j ≥ i} P@j`` (the PASCAL VOC 2010+ all-point form SAKE reports); never below ``mAP``.
* ``mRR``: mean of ``1 / rank`` of the first relevant item.
* ``P@k``: mean fraction of relevant items among the first ``k`` (÷ ``k`` also when G < k).
* ``mAP@k``: mean AP of the first ``k`` items alone, ÷ the relevant items among them (scikit-
  learn's AP of the truncated list, Doodle2Search's ``mAP@200``); 0 when none is among them.

A query whose label is absent from the gallery has no defined AP: it is left out of every mean and
counted in ``queries_without_match``; when no query has a match, every metric is 0.0 (no NaN).
All metrics are fractions in [0, 1].
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["retrieval_metrics", "rank_gallery"]

METRIC_KEYS = ("mAP", "mAP_interp", "mRR", "P@k", "mAP@k")


def _as_tensor(x: Any, name: str, dim: int) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimension(s), got shape {tuple(t.shape)}")
    return t


def rank_gallery(similarity: torch.Tensor) -> torch.Tensor:
    """Gallery indices ``[Q, G]`` of each query's ranking: descending similarity, ties by index."""
    return torch.sort(-similarity, dim=1, stable=True).indices


def retrieval_metrics(similarity: Any, query_labels: Any, gallery_labels: Any, k: int = 10,
                      chunk: int = 512) -> dict[str, float]:
    """``mAP``, ``mAP_interp``, ``mRR``, ``P@k`` and ``mAP@k`` of a ``[Q, G]`` similarity matrix
    (see the module docstring for the definitions, the tie rule and queries without a match).

    Args:
        similarity: ``[Q, G]`` scores (tensor or array), higher is more similar.
        query_labels: ``[Q]`` class labels. gallery_labels: ``[G]``.
        k: the cut-off of ``P@k`` and ``mAP@k``.
        chunk: queries ranked at once (memory ``chunk × G``).

    Returns:
        The five metrics (fractions), ``k``, ``queries`` (Q) and ``queries_without_match``.
    """
    sim = _as_tensor(similarity, "similarity", 2).float()
    q_lab = _as_tensor(query_labels, "query_labels", 1).to(sim.device)
    g_lab = _as_tensor(gallery_labels, "gallery_labels", 1).to(sim.device)
    num_q, num_g = sim.shape
    if q_lab.shape[0] != num_q or g_lab.shape[0] != num_g:
        raise ValueError(f"similarity is {num_q}×{num_g} but there are {q_lab.shape[0]} query and "
                         f"{g_lab.shape[0]} gallery labels")
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    sums = dict.fromkeys(METRIC_KEYS, 0.0)
    scored = 0
    for start in range(0, num_q, chunk):
        s = sim[start:start + chunk]
        order = rank_gallery(s)  # [q, G]
        rel = g_lab[order] == q_lab[start:start + chunk, None]  # [q, G] relevant at each rank
        n_rel = rel.sum(1)  # [q]
        has = n_rel > 0
        if not bool(has.any()):
            continue
        rel, n_rel = rel[has].float(), n_rel[has].float()
        hits = rel.cumsum(1)  # [q', G] relevant items within the first i
        ranks = torch.arange(1, num_g + 1, dtype=torch.float32, device=sim.device)
        precision = hits / ranks  # [q', G] P@i
        envelope = precision.flip(1).cummax(1).values.flip(1)  # [q', G] max_{j≥i} P@j
        first = rel.argmax(1).float()  # [q'] index of the first relevant item
        kk = min(k, num_g)
        hits_k = hits[:, kk - 1]  # [q'] relevant among the first k
        sums["mAP"] += float(((precision * rel).sum(1) / n_rel).sum())
        sums["mAP_interp"] += float(((envelope * rel).sum(1) / n_rel).sum())
        sums["mRR"] += float((1.0 / (first + 1)).sum())
        sums["P@k"] += float((hits_k / k).sum())
        ap_k = (precision[:, :kk] * rel[:, :kk]).sum(1) / hits_k.clamp(min=1)
        sums["mAP@k"] += float(ap_k.sum())
        scored += int(has.sum())
    out: dict[str, Any] = {key: (value / scored if scored else 0.0) for key, value in sums.items()}
    out.update(k=k, queries=num_q, queries_without_match=num_q - scored)
    return out
