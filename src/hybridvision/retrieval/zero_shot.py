"""Unimodal zero-shot sketch retrieval (thesis B, Table 4.3): a classifier trained on some classes
embeds sketches of classes it never saw; queries rank a catalogue by cosine similarity.

Protocol (thesis B's): 45 unseen classes, per class 500 catalogue and 50 query sketches, the
embedding the global-average-pooled last stage of the classifier (2048-d for ResNet26), cosine
similarity, mAP / mRR / P@10 (:func:`~hybridvision.evaluation.retrieval.retrieval_metrics`). The
CPU presets scale the counts down; :func:`split_queries` draws them per class by seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridvision.evaluation.retrieval import retrieval_metrics

__all__ = ["pooled_features", "embed_all", "split_queries", "zero_shot_retrieval"]


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W]`` images → the global-average-pooled last stage ``[B, D]`` of a classifier
    with ``forward_features`` (every hybrid network)."""
    return model.forward_features(x)[-1].mean(dim=(2, 3))


@torch.no_grad()
def embed_all(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu",
              embed=pooled_features) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unit embeddings [N, D], labels [N])`` of every ``(images, labels)`` batch, eval mode."""
    was = model.training
    model.eval()
    feats, labels = [], []
    for images, y in batches:
        feats.append(F.normalize(embed(model, images.to(device)).float(), dim=1).cpu())
        labels.append(torch.as_tensor(y))
    model.train(was)
    return torch.cat(feats), torch.cat(labels)


def split_queries(labels: Sequence[int], queries_per_class: int, catalogue_per_class: int | None = None,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded random ``queries_per_class`` items as queries and (up to)
    ``catalogue_per_class`` others as the catalogue → ``(query indices, catalogue indices)``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    queries, catalogue = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        queries.append(idx[:queries_per_class])
        rest = idx[queries_per_class:]
        catalogue.append(rest if catalogue_per_class is None else rest[:catalogue_per_class])
    return np.sort(np.concatenate(queries)), np.sort(np.concatenate(catalogue))


def zero_shot_retrieval(embeddings: torch.Tensor, labels: torch.Tensor, queries_per_class: int,
                        catalogue_per_class: int | None = None, seed: int = 0, k: int = 10) -> dict[str, float]:
    """Queries and catalogue drawn from the embedded unseen-class sketches (:func:`split_queries`),
    ranked by cosine similarity → :func:`retrieval_metrics` (mAP, mAP_interp, mRR, P@k, mAP@k)."""
    q, g = split_queries(labels.tolist(), queries_per_class, catalogue_per_class, seed)
    e = F.normalize(embeddings.float(), dim=1)
    sim = e[torch.as_tensor(q)] @ e[torch.as_tensor(g)].T  # [Q, G] cosine
    return retrieval_metrics(sim, labels[torch.as_tensor(q)], labels[torch.as_tensor(g)], k=k)
