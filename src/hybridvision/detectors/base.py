"""What every detector of the toolkit shares: input normalisation, target checks, batching.

The contract (DESIGN.md, DETR's criterion/postprocessor split):

* ``model(images, image_sizes=None) -> dict[str, Tensor | list[Tensor]]`` — raw head outputs, the
  same in train and eval mode; ``images`` is ``[B, 3, H, W]`` float in [0, 1], zero-padded
  bottom/right; ``image_sizes`` (the ``(h, w)`` of each image before padding) lets the model give
  padded pixels the value 0 after normalisation, as if every image had been normalised before
  batching (torchvision's ``GeneralizedRCNNTransform``).
* ``model.loss(outputs, targets) -> dict[str, Tensor]`` with a ``"loss"`` key (the total).
* ``model.decode(outputs, image_sizes) -> list[dict(boxes, scores, labels)]``.

Symbols: B images, N boxes of one image, K classes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from hybridvision.errors import DataError, UserInputError

__all__ = ["Detector", "batch_images", "check_targets", "reduce_mean", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Targets = list[dict[str, torch.Tensor]]
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


def check_targets(targets: Targets, num_classes: int, batch_size: int | None = None) -> None:
    """Raise :class:`DataError` naming the image index when a target is malformed."""
    if batch_size is not None and len(targets) != batch_size:
        raise DataError(
            f"got {len(targets)} target dicts for {batch_size} images; pass one dict per image"
        )
    for i, t in enumerate(targets):
        if "boxes" not in t or "labels" not in t:
            raise DataError(f"target {i} lacks 'boxes' or 'labels'; each target needs both keys")
        boxes, labels = t["boxes"], t["labels"]
        if boxes.ndim != 2 or boxes.shape[-1] != 4 or labels.ndim != 1 or len(labels) != len(boxes):
            raise DataError(
                f"target {i}: boxes must be [N, 4] and labels [N], got {tuple(boxes.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise DataError(
                f"target {i}: labels must lie in 0..{num_classes - 1}, got "
                f"{int(labels.min())}..{int(labels.max())}; remap the dataset's category ids"
            )
        if len(boxes) and not bool(((boxes[:, 2:] >= boxes[:, :2]).all())):
            raise DataError(f"target {i}: boxes must be xyxy with x2 >= x1 and y2 >= y1")


def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over distributed workers (identity without ``torch.distributed``).

    Loss normalisers such as the number of positives are averaged over GPUs, so every worker
    divides by the same number (FCOS / detectron2 practice).
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x = x / dist.get_world_size()
    return x


class Detector(nn.Module):
    """Base class: normalises inputs with ``pixel_mean`` / ``pixel_std`` buffers.

    Subclasses implement :meth:`forward_normalized`, :meth:`loss` and :meth:`decode`.
    Normalising inside the model keeps preprocessing with the weights (export, predict), as in
    detectron2's ``pixel_mean`` / ``pixel_std``.

    Args:
        num_classes: K.
        pixel_mean, pixel_std: per-channel statistics of inputs in [0, 1].
    """

    def __init__(
        self,
        num_classes: int,
        *,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise UserInputError(f"num_classes={num_classes} must be >= 1")
        self.num_classes = num_classes
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(
        self, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]] | None = None
    ) -> torch.Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> standardised ``[B, 3, H, W]``.

        With ``image_sizes``, everything right of / below each image's ``(h, w)`` becomes 0 (the
        mean), not ``-mean / std``: zero padding would otherwise look like a dark border to the
        network, and differently so for each image of a mixed-size batch.
        """
        if images.ndim != 4 or images.shape[1] != self.pixel_mean.shape[1]:
            raise ValueError(
                f"expected images [B, {self.pixel_mean.shape[1]}, H, W], got {tuple(images.shape)}"
            )
        x = (images - self.pixel_mean) / self.pixel_std
        if image_sizes is not None:
            if len(image_sizes) != x.shape[0]:
                raise ValueError(f"got {len(image_sizes)} image sizes for {x.shape[0]} images")
            H, W = x.shape[-2:]
            for b, (h, w) in enumerate(image_sizes):
                if h < H:
                    x[b, :, h:, :] = 0
                if w < W:
                    x[b, :, :, w:] = 0
        return x

    def forward(
        self, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]] | None = None
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        return self.forward_normalized(self.normalize(images, image_sizes))

    def forward_normalized(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        raise NotImplementedError

    def loss(self, outputs: dict, targets: Targets) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, outputs: dict, image_sizes: Sequence[tuple[int, int]]) -> Detections:
        raise NotImplementedError

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> Detections:
        """Convenience: batch (if a list), forward and decode, in the model's current mode."""
        if not isinstance(images, torch.Tensor):
            images, image_sizes = batch_images(images, getattr(self, "size_divisible", 32))
        if image_sizes is None:
            image_sizes = [tuple(images.shape[-2:])] * images.shape[0]  # type: ignore[list-item]
        return self.decode(self(images, image_sizes), image_sizes)

