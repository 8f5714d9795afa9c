"""Mosaic augmentation for detection (Bochkovskiy et al., "YOLOv4: Optimal Speed and Accuracy of
Object Detection", 2020, §3.3): four training images side by side, one window of the model's size
cut from around their common corner.

Each of the four images has already been through the run's per-image train transform, so it is
``S × S`` (``augment.crop=true``, the default). They fill the quadrants of a ``2S × 2S`` canvas
(the sample's own image top-left, three random others); the ``S × S`` window is centred on a point
drawn uniformly from the integers strictly inside ``(S/2, 3S/2)²``, so it holds a part of every
image and the seams between them. Boxes shift with their image and are clipped to it and to the
window; a box keeps its label only when at least :data:`MIN_VISIBLE` of its area (as the
per-image transform left it) is inside the window, and at least 1 px on each side — a quarter of
a digit is no longer that digit, so it becomes background.

Why: the model sees objects next to the edges of other images and cut by the window, as it does
when :func:`~hybridvision.engine.tiling.predict_tiled` slides windows over a large image made of
many scenes; and every sample holds objects of four images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["MIN_VISIBLE", "mosaic", "MosaicDataset"]

Target = dict[str, Any]

# A box cut by the window keeps its label when at least this share of its area is inside.
MIN_VISIBLE = 0.5


def mosaic(parts: list[tuple[Tensor, Target]], centre: tuple[int, int]) -> tuple[Tensor, Target]:
    """Four ``(image [C, S, S], target)`` pairs (top-left, top-right, bottom-left, bottom-right)
    → one ``[C, S, S]`` image cut from their ``2S × 2S`` canvas, centred on ``centre = (cx, cy)``
    (canvas pixels, each in ``[S/2, 3S/2]``), and its target: boxes ``[N, 4]`` xyxy in the window,
    with ``labels`` (and ``iscrowd`` when all parts have it); ``image_id`` and ``orig_size`` are the
    first part's (other per-box keys, such as masks, are not carried)."""
    if len(parts) != 4:
        raise ValueError(f"a mosaic takes 4 images, got {len(parts)}")
    first = parts[0][0]
    c, s = int(first.shape[0]), int(first.shape[-1])
    for image, _ in parts:
        if tuple(image.shape) != (c, s, s) or image.dtype != first.dtype:
            raise ValueError(f"mosaic parts must all be [{c}, {s}, {s}] {first.dtype} (augment.crop=true), "
                             f"got {tuple(image.shape)} {image.dtype}")
    cx, cy = int(centre[0]), int(centre[1])
    if not (s // 2 <= cx <= s + s // 2 and s // 2 <= cy <= s + s // 2):
        raise ValueError(f"mosaic centre {centre} outside [{s // 2}, {s + s // 2}]²")
    x0, y0 = cx - s // 2, cy - s // 2  # the window's top-left corner on the canvas
    canvas = parts[0][0].new_zeros((c, 2 * s, 2 * s))
    boxes, labels, crowd = [], [], []
    for k, (image, target) in enumerate(parts):
        qx, qy = (k % 2) * s, (k // 2) * s
        canvas[:, qy:qy + s, qx:qx + s] = image
        b = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4).clamp(0, s)  # in its image
        boxes.append(b + b.new_tensor([qx - x0, qy - y0, qx - x0, qy - y0]))  # [n, 4] window pixels
        labels.append(torch.as_tensor(target["labels"], dtype=torch.int64).reshape(-1))
        crowd.append(target.get("iscrowd"))
    image = canvas[:, y0:y0 + s, x0:x0 + s].clone()  # [C, S, S]
    b = torch.cat(boxes)
    clipped = b.clamp(0, s)
    area = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    wh = clipped[:, 2:] - clipped[:, :2]
    keep = (wh >= 1).all(dim=1) & (wh.prod(dim=1) >= MIN_VISIBLE * area)
    out = {k: v for k, v in parts[0][1].items() if k not in ("boxes", "labels", "iscrowd", "area")}
    out["boxes"] = clipped[keep]
    out["labels"] = torch.cat(labels)[keep]
    if all(torch.is_tensor(x) for x in crowd):
        out["iscrowd"] = torch.cat([x.reshape(-1) for x in crowd])[keep]
    return image, out


class MosaicDataset(Dataset):
    """A training dataset whose samples are, with probability ``p``, a :func:`mosaic` of
    themselves and three random others (drawn with ``torch``'s generator, like the per-image
    transforms, so a seeded run draws the same mosaics); otherwise the sample unchanged.

    ``off_from_epoch``: from this (0-based) epoch on, as set by :meth:`set_epoch` (the trainer
    calls it before each epoch), no more mosaics — the last epochs train on whole images again, as
    YOLOX does (Ge et al., "YOLOX: Exceeding YOLO Series in 2021": strong augmentation off
    for the last 15 epochs). ``None``: mosaics throughout."""

    def __init__(self, dataset: Dataset, p: float, off_from_epoch: int | None = None) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"mosaic probability must be in [0, 1], got {p}")
        self.dataset, self.p, self.off_from_epoch = dataset, float(p), off_from_epoch
        self.active = True

    def set_epoch(self, epoch: int) -> None:
        """Mosaics on before ``off_from_epoch``, off from it on (and pass the epoch on)."""
        self.active = self.off_from_epoch is None or epoch < self.off_from_epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        first = self.dataset[index]
        if not self.active or self.p == 0 or float(torch.rand(())) >= self.p:
            return first
        others = torch.randint(0, len(self), (3,)).tolist()
        parts = [first] + [self.dataset[j] for j in others]
        s = int(first[0].shape[-1])
        cx, cy = (int(v) for v in torch.randint(s // 2 + 1, s + s // 2, (2,)))  # strictly inside: 4 images
        return mosaic(parts, (cx, cy))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dataset!r}, p={self.p}, off_from_epoch={self.off_from_epoch})"
