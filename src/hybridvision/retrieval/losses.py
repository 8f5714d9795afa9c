"""The metric-learning losses of two-branch sketch-based retrieval (Bui et al., "Compact
descriptors for sketch-based image retrieval using a triplet loss convolutional neural network",
CVIU 2017; thesis B, Eq. 2.8 and 2.10), on L2-normalised embeddings.

With D² the squared Euclidean distance between a sketch embedding and a photo embedding:

* contrastive (Eq. 2.8): ``½ D²`` for a pair of one class, ``½ max(0, m − D²)`` for a pair of
  two classes; mean over pairs;
* triplet (Eq. 2.10): ``½ max(0, m + D²(a, p) − D²(a, n))``; mean over triplets.

The seed writes the margin on D² and does not give its value; the defaults here (1.0 for the
contrastive pairs: negatives pushed to cosine ≤ 0.5; 0.2 for triplets) are this toolkit's.

Symbols: N pairs or triplets, E the embedding size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["contrastive_loss", "triplet_loss", "hardest_negatives", "squared_distance"]


def squared_distance(a: torch.Tensor, b: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Row-wise ``||a_i − b_i||²`` of ``[N, E]`` embeddings (L2-normalised first by default)."""
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return (a - b).pow(2).sum(dim=1)


def contrastive_loss(sketch: torch.Tensor, photo: torch.Tensor, same: torch.Tensor, margin: float = 1.0,
                     normalize: bool = True) -> torch.Tensor:
    """Thesis B's Eq. 2.8 over ``N`` (sketch, photo) pairs.

    Args:
        sketch, photo: ``[N, E]`` embeddings.
        same: ``[N]`` bool, True where the pair shows one class.
        margin: m, on the squared distance.
        normalize: L2-normalise the embeddings first (thesis B's length-128 unit vectors).
    """
    d2 = squared_distance(sketch, photo, normalize)  # [N]
    same = same.to(dtype=torch.bool, device=d2.device)
    per_pair = torch.where(same, 0.5 * d2, 0.5 * torch.relu(margin - d2))
    return per_pair.mean()


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.2,
                 normalize: bool = True) -> torch.Tensor:
    """Thesis B's Eq. 2.10 over ``N`` (sketch anchor, photo of its class, photo of another class)
    triplets, each ``[N, E]``."""
    d_pos = squared_distance(anchor, positive, normalize)  # [N]
    d_neg = squared_distance(anchor, negative, normalize)  # [N]
    return (0.5 * torch.relu(margin + d_pos - d_neg)).mean()


def hardest_negatives(sketch: torch.Tensor, photo: torch.Tensor, sketch_labels: torch.Tensor,
                      photo_labels: torch.Tensor) -> torch.Tensor:
    """Hard-negative mining in a batch: for each sketch, the index of the nearest photo (cosine,
    i.e. squared distance of unit vectors) of another class; ``-1`` where the batch has none.

    ``sketch`` ``[N, E]``, ``photo`` ``[M, E]``, labels ``[N]`` and ``[M]`` → ``[N]`` indices.
    """
    sim = F.normalize(sketch, dim=1) @ F.normalize(photo, dim=1).T  # [N, M]
    other = sketch_labels[:, None] != photo_labels[None, :]  # [N, M]
    sim = sim.masked_fill(~other, float("-inf"))
    best = sim.argmax(dim=1)  # [N]
    return torch.where(other.any(dim=1), best, torch.full_like(best, -1))
