"""Structures that data, models and the engine share: batched images and their sizes, targets and
detections (detectron2's ``structures/``).

A leaf (it imports nothing of the package but the error type), so that ``data/`` can collate
batches without knowing a model and ``detectors/`` can pad inputs without knowing a dataset
(``docs/architecture.md``, "Layers").

Symbols: B images, N boxes of one image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hybridvision.errors import UserInputError

__all__ = ["batch_images", "Targets", "Detections"]

# list[dict(boxes=[N, 4] xyxy float pixels, labels=[N] int64 in 0..K-1)], one dict per image
Targets = list[dict[str, torch.Tensor]]
# list[dict(boxes=[N, 4] xyxy float pixels, scores=[N], labels=[N] int64)], one dict per image
Detections = list[dict[str, torch.Tensor]]


def batch_images(
    images: Sequence[torch.Tensor], size_divisible: int = 32
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Zero-pad ``[3, H_i, W_i]`` images bottom/right into one ``[B, 3, H, W]`` batch.

    H and W are the largest sizes rounded up to ``size_divisible`` (the coarsest stride), so every
    pyramid level divides evenly. Returns the batch and the original ``(H_i, W_i)`` sizes.
    """
    if len(images) == 0:
        raise UserInputError("batch_images got no images; pass at least one [3, H, W] tensor")
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    h = -(-max(s[0] for s in sizes) // size_divisible) * size_divisible
    w = -(-max(s[1] for s in sizes) // size_divisible) * size_divisible
    batch = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for b, im in enumerate(images):
        batch[b, :, : im.shape[-2], : im.shape[-1]].copy_(im)
    return batch, sizes
