"""The two-branch network of sketch-based image retrieval (Bui et al., "Compact descriptors for
sketch-based image retrieval using a triplet loss convolutional neural network", CVIU 2017;
thesis B §2.x and §3.x, Fig. 2.14).

A sketch branch (grey input) and a photo branch (RGB input) each have their own stem and early
stages; the last ``shared_stages`` stages and the head are **one module** used by both branches.
The head (thesis B §3.x): global average pool → FC(``hidden``) → BN → ReLU → FC(``embed_dim``) —
the embedding, compared by cosine / Euclidean distance of unit vectors — → a linear classifier
(both softmax losses train it; linear after the embedding, so it adds no capacity to the
classifier).

Training runs in stages (:class:`~hybridvision.retrieval.two_branch.TwoBranchSBIR` supplies the
pieces; the SBIR task runs them):

1. each branch alone as a classifier (:meth:`TwoBranchSBIR.branch_classifier`: its early stages,
   then a private copy of the later stages and head);
2. the early stages frozen (:meth:`TwoBranchSBIR.freeze_unshared`), (sketch, photo) pairs,
   contrastive loss + both softmax losses;
3. everything trainable, (sketch, photo+, photo−) triplets, triplet loss + softmax losses;
4. (optional) stage 3 on another dataset.

Any registered classification backbone with ``stem``, ``stages`` and ``num_features`` (every
hybrid network: ResNet26, SAN10, HIB, Pure NL) can be the branches.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

import hybridvision.backbones.hybrid  # noqa: F401  registers the classification backbones
from hybridvision.errors import UserInputError
from hybridvision.registry import build_model, model_task

__all__ = ["EmbeddingHead", "TwoBranchSBIR", "BranchClassifier", "MODALITIES"]

MODALITIES = ("sketch", "photo")


class EmbeddingHead(nn.Module):
    """``[B, C, h, w]`` → ``(embedding [B, E], logits [B, K])``: pool → FC → BN → ReLU → FC → classifier."""

    def __init__(self, channels: int, num_classes: int, hidden: int = 1024, embed_dim: int = 128) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.embed = nn.Linear(hidden, embed_dim)
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.relu(self.bn(self.fc(torch.flatten(self.pool(x), 1))))  # [B, hidden]
        e = self.embed(h)  # [B, E]
        return e, self.classifier(e)


class BranchClassifier(nn.Module):
    """Stage 1: one branch trained alone as a classifier — its own early stages (shared with the
    two-branch model: they are the same modules) and private copies of the later stages and head."""

    def __init__(self, early: nn.Module, late: nn.Module, head: EmbeddingHead) -> None:
        super().__init__()
        self.early, self.late, self.head = early, late, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.late(self.early(x)))[1]  # [B, K] logits


class TwoBranchSBIR(nn.Module):
    """Sketch and photo branches with shared last stages and head.

    Args:
        backbone: a registered classification model with ``stem`` and ``stages``.
        num_classes: K of the softmax losses (the training classes).
        shared_stages: how many of the last stages both branches share (0 … all; the seed: 2).
        hidden, embed_dim: the head's FC sizes (1024, 128 as the seed).
        sketch_chans, photo_chans: input channels of the branches (1 and 3).
        **backbone_kwargs: options of the backbone's builder (``width``, ``preact``, ...).
    """

    def __init__(self, backbone: str = "resnet26", *, num_classes: int, shared_stages: int = 2, hidden: int = 1024,
                 embed_dim: int = 128, sketch_chans: int = 1, photo_chans: int = 3,
                 **backbone_kwargs: Any) -> None:
        super().__init__()
        if model_task(backbone) != "classification":
            raise UserInputError(f"SBIR backbone {backbone!r} is not a classification model; use one of the "
                                 "hybrid networks (hybridvision list --task classification)")
        sketch = build_model(backbone, num_classes=num_classes, in_chans=sketch_chans, **backbone_kwargs)
        photo = build_model(backbone, num_classes=num_classes, in_chans=photo_chans, **backbone_kwargs)
        if not all(hasattr(m, a) for m in (sketch, photo) for a in ("stem", "stages", "num_features")):
            raise UserInputError(f"SBIR backbone {backbone!r} has no stem/stages to split into branches")
        n = len(photo.stages)
        if not 0 <= shared_stages <= n:
            raise UserInputError(f"SBIR shared_stages={shared_stages} must be in 0..{n} (the stages of {backbone})")
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.shared_stages = shared_stages
        self.embed_dim = embed_dim
        self.sketch_early = nn.Sequential(sketch.stem, *sketch.stages[: n - shared_stages])
        self.photo_early = nn.Sequential(photo.stem, *photo.stages[: n - shared_stages])
        self.shared = nn.Sequential(*photo.stages[n - shared_stages:])  # one module, both branches
        self.head = EmbeddingHead(int(photo.num_features), num_classes, hidden, embed_dim)

    def early(self, modality: str) -> nn.Module:
        if modality not in MODALITIES:
            raise ValueError(f"modality {modality!r} must be one of {MODALITIES}")
        return self.sketch_early if modality == "sketch" else self.photo_early

    def forward(self, x: torch.Tensor, modality: str = "sketch") -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, C, H, W]`` images of ``modality`` → ``(embedding [B, E], logits [B, K])``."""
        return self.head(self.shared(self.early(modality)(x)))

    @torch.no_grad()
    def embed(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Unit-length embeddings ``[B, E]`` for retrieval (eval mode is the caller's)."""
        return nn.functional.normalize(self(x, modality)[0], dim=1)

    # -- the training stages -------------------------------------------------------------------

    def branch_classifier(self, modality: str) -> BranchClassifier:
        """Stage 1's classifier of one branch: its early stages (the very modules of this model)
        with private copies of the shared stages and head."""
        return BranchClassifier(self.early(modality), copy.deepcopy(self.shared), copy.deepcopy(self.head))

    def adopt_photo_classifier(self, photo: BranchClassifier) -> None:
        """After stage 1: the shared stages and head start from the photo classifier's."""
        self.shared.load_state_dict(photo.late.state_dict())
        self.head.load_state_dict(photo.head.state_dict())

    def unshared_parameters(self) -> list[nn.Parameter]:
        return [*self.sketch_early.parameters(), *self.photo_early.parameters()]

    def freeze_unshared(self, frozen: bool = True) -> None:
        """Stage 2: the branches' own stages stop learning (and keep their BN statistics: eval
        mode while frozen, see :meth:`train`); stage 3 unfreezes them."""
        for p in self.unshared_parameters():
            p.requires_grad_(not frozen)
        self._frozen = frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> TwoBranchSBIR:
        super().train(mode)
        if getattr(self, "_frozen", False):
            self.sketch_early.eval()
            self.photo_early.eval()
        return self
