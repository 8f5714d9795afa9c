"""The two-branch network of sketch-based image retrieval (Bui et al., "Compact descriptors for
sketch-based image retrieval using a triplet loss convolutional neural network", CVIU 2017;
thesis B, Fig. 2.14 and the head of its chapter 3).

A sketch branch (grey input) and a photo branch (RGB input) each have their own stem and early
stages; the last ``shared_stages`` stages and the head are **one module** used by both branches.
The head (thesis B, chapter 3): global average pool → FC(``hidden``) → BN → ReLU → FC(``embed_dim``) —
the embedding, compared by cosine / Euclidean distance of unit vectors — → a linear classifier
(both softmax losses train it; linear after the embedding, so it adds no capacity to the
classifier).

Training runs in stages, each a run of its own with the previous stage's weights (``stage`` is
a model option, so a stage's checkpoint is a complete model):

1. each branch as a classifier alone: the photo branch through the shared stages and head (which
   thus start stage 2 from the photo classifier, as Bui et al.), the sketch branch through a
   private copy of them (``sketch_stage1``, used in stage 1 only);
2. the branches' own stages frozen (weights and BatchNorm statistics), (sketch, photo) pairs,
   contrastive loss + both softmax losses;
3. everything trainable, (sketch, photo+, photo−) triplets, triplet loss + softmax losses;
4. (optional) stage 3 again on another dataset.

Any registered classification backbone with ``stem``, ``stages`` and ``num_features`` (every
hybrid network: ResNet26, SAN10, HIB, Pure NL) can be the branches.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
import torch.nn as nn

import hybridvision.backbones.hybrid  # noqa: F401  registers the classification backbones
from hybridvision.errors import UserInputError
from hybridvision.options import keyword_parameters
from hybridvision.registry import build_model, model_builder, model_task, register_model

__all__ = ["EmbeddingHead", "TwoBranchSBIR", "MODALITIES", "STAGES"]

MODALITIES = ("sketch", "photo")
STAGES = (1, 2, 3)


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


class TwoBranchSBIR(nn.Module):
    """Sketch and photo branches with shared last stages and head.

    Args:
        backbone: a registered classification model with ``stem`` and ``stages``.
        num_classes: K of the softmax losses (the training classes).
        stage: the training stage the model is built for (1, 2 or 3; the module docstring); 2
            freezes the branches' own stages.
        shared_stages: how many of the last stages both branches share (0 … all; the seed: 2).
        hidden, embed_dim: the head's FC sizes (1024, 128 as the seed).
        sketch_chans, photo_chans: input channels of the branches (1 and 3).
        **backbone_kwargs: options of the backbone's builder (``width``, ``preact``, ...).
    """

    def __init__(self, backbone: str = "resnet26", *, num_classes: int, stage: Literal[1, 2, 3] = 3,
                 shared_stages: int = 2,
                 hidden: int = 1024,
                 embed_dim: int = 128, sketch_chans: int = 1, photo_chans: int = 3,
                 **backbone_kwargs: Any) -> None:
        super().__init__()
        if stage not in STAGES:
            raise UserInputError(f"SBIR stage={stage!r} must be 1, 2 or 3")
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
        # Stage 1's sketch classifier: the sketch network's own later stages and a head of its own.
        self.sketch_stage1 = nn.Sequential(*sketch.stages[n - shared_stages:],
                                           EmbeddingHead(int(photo.num_features), num_classes, hidden, embed_dim))
        self.stage = stage
        self._frozen = False
        if stage >= 2:  # the stage-1 sketch classifier is done: no gradient, no optimizer state
            self.sketch_stage1.requires_grad_(False)
        if stage == 2:
            self.freeze_unshared(True)

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

    def stage1_logits(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Stage 1: ``[B, K]`` logits of one branch as a classifier alone (the sketch branch
        through its private later stages and head, the photo branch through the shared ones)."""
        if modality == "sketch":
            return self.sketch_stage1(self.sketch_early(x))[1]
        return self(x, "photo")[1]

    def unshared_parameters(self) -> list[nn.Parameter]:
        """The branches' own stages (not the stage-1 sketch classifier's private ones)."""
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
        if self._frozen:
            self.sketch_early.eval()
            self.photo_early.eval()
        return self


# ---------------------------------------------------------------------------------------------
# Registered presets (task "sbir"): thesis B's two backbones of Table 4.4
# ---------------------------------------------------------------------------------------------


def _sbir_options(backbone: str) -> dict[str, inspect.Parameter]:
    """The options an SBIR builder on ``backbone`` forwards (``**kwargs``), as annotated parameters:
    :class:`TwoBranchSBIR`'s and the backbone builder's (but those the branches set themselves)."""
    branch = keyword_parameters(model_builder(backbone), exclude=("num_classes", "in_chans", "out_indices",
                                                                  "features_only"))
    return {**branch, **keyword_parameters(TwoBranchSBIR.__init__, exclude=("backbone", "num_classes"))}


@register_model(task="sbir", options=_sbir_options("resnet26"))
def sbir_resnet26(*, num_classes: int = 33, **kwargs: Any) -> TwoBranchSBIR:
    """Two-branch SBIR on ResNet26 (thesis B, Table 4.4): the last 2 stages and the head shared."""
    return TwoBranchSBIR("resnet26", num_classes=num_classes, **kwargs)


@register_model(task="sbir", options=_sbir_options("hib_patch_2_2_nl"))
def sbir_hib_patch_2_2_nl(*, num_classes: int = 33, **kwargs: Any) -> TwoBranchSBIR:
    """Two-branch SBIR on HIB patch 2-2 (nl), thesis B's hybrid backbone of Table 4.4."""
    return TwoBranchSBIR("hib_patch_2_2_nl", num_classes=num_classes, **kwargs)

