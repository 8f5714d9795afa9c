"""COCO-format detection dataset and batch collation.

Symbols: N boxes in an image, K classes, B images in a batch.

:class:`CocoDetection` reads a COCO JSON (https://cocodataset.org/#format-data) and yields
``(image, target)`` in the toolkit's contract (docs/architecture.md):

* ``image``: float32 ``[3, H, W]`` in [0, 1];
* ``target``: ``boxes`` ``[N, 4]`` float32 xyxy in pixels, ``labels`` ``[N]`` int64 contiguous in
  ``0..K-1``, ``image_id`` (int, the COCO id) and ``orig_size`` (``(h, w)`` ints of the file, kept
  through transforms so the evaluator can map predictions back to original pixels).

The dataset owns the map between COCO ``category_id``s and contiguous labels: categories sorted
by id get labels 0..K-1 (``label_to_cat_id[label]``, ``cat_id_to_label[cat_id]``,
``class_names[label]``); evaluation maps back with ``label_to_cat_id``. Crowd annotations
(``iscrowd=1``) are not training targets (the evaluator still reads them from the JSON as
"ignore" regions); images without annotations are kept, with empty ``[0, 4]`` boxes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from hybridvision import imageio
from hybridvision.data.validate import check_coco, raise_for_findings
from hybridvision.errors import DataError, UserInputError
from hybridvision.fileio import read_json
from hybridvision.structures import batch_images

__all__ = ["CocoDetection", "collate_detection", "load_image", "load_image_uint8"]

Target = dict[str, Any]


def load_image(path: str | os.PathLike) -> Tensor:
    """Read an image file as float32 ``[3, H, W]`` RGB in [0, 1]; :class:`DataError` if it fails
    (:func:`hybridvision.imageio.load_image`: refuses decompression bombs)."""
    return imageio.load_image(path)


def load_image_uint8(path: str | os.PathLike) -> Tensor:
    """Read an image file as uint8 ``[3, H, W]`` RGB; :class:`DataError` if it fails."""
    return imageio.load_image_uint8(path)


class CocoDetection(Dataset):
    """A COCO-format detection dataset.

    Args:
        ann_file: COCO JSON with ``images``, ``annotations``, ``categories``.
        images_dir: folder that the images' ``file_name`` is relative to.
        transforms: optional ``callable(image, target) -> (image, target)``, e.g. from
            :func:`hybridvision.data.transforms.build_detection_transforms`.
        validate: run :func:`~hybridvision.data.validate.check_coco` first and raise one
            :class:`DataError` listing the problems (count + first few, one per line).
        check_images: when validating, also open and verify every image file.

    Attributes:
        label_to_cat_id: ``list[int]``, COCO category id of each contiguous label.
        cat_id_to_label: ``dict[int, int]``, the inverse.
        class_names: ``list[str]``, category name of each label.
        ids: COCO image id of each dataset index.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        images_dir: str | os.PathLike,
        transforms: Callable[[Tensor, Target], tuple[Tensor, Target]] | None = None,
        *,
        validate: bool = True,
        check_images: bool = True,
        cache_images: bool = False,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.images_dir = Path(images_dir)
        self.transforms = transforms
        self.cache_images = cache_images
        self._cache: dict[int, Tensor] = {}
        if validate:
            raise_for_findings(
                check_coco(ann_file, images_dir, check_images=check_images), what=str(ann_file)
            )
        try:
            data = read_json(ann_file, what="COCO annotation")
        except UserInputError as e:
            raise DataError(str(e)) from None
        try:
            cats = sorted(data["categories"], key=lambda c: c["id"])
            self.label_to_cat_id: list[int] = [int(c["id"]) for c in cats]
            self.class_names: list[str] = [str(c["name"]) for c in cats]
            self.cat_id_to_label: dict[int, int] = {c: i for i, c in enumerate(self.label_to_cat_id)}
            self.images: list[dict] = []
            seen: set[int] = set()
            for im in data["images"]:
                if im["id"] not in seen:
                    seen.add(im["id"])
                    self.images.append(im)
            self.ids: list[int] = [int(im["id"]) for im in self.images]
            per_image: dict[int, list[dict]] = {i: [] for i in self.ids}
            for a in data["annotations"]:
                if a["image_id"] in per_image:
                    per_image[a["image_id"]].append(a)
            # Training targets per image: [N, 4] xywh and [N] labels; crowd and unusable boxes
            # are dropped (unusable ones can only be present with validate=False).
            self._boxes: list[np.ndarray] = []
            self._labels: list[np.ndarray] = []
            for i in self.ids:
                keep = [
                    a for a in per_image[i]
                    if not a.get("iscrowd", 0) and _usable(a["bbox"]) and a["category_id"] in self.cat_id_to_label
                ]
                self._boxes.append(np.array([a["bbox"] for a in keep], np.float32).reshape(-1, 4))
                self._labels.append(np.array([self.cat_id_to_label[a["category_id"]] for a in keep], np.int64))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(
                f"{ann_file}: cannot read as COCO ({e.__class__.__name__}: {e}); "
                "run `hybridvision data check` for the full list of problems"
            ) from None

    @property
    def num_classes(self) -> int:
        """K, the number of categories (contiguous labels are 0..K-1)."""
        return len(self.label_to_cat_id)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        return self.images_dir / self.images[index]["file_name"]

    def get_target(self, index: int, image_size: tuple[int, int] | None = None) -> Target:
        """The untransformed target of ``index`` without reading pixels; ``image_size`` (h, w)
        defaults to the record's size and clips the boxes."""
        im = self.images[index]
        h, w = image_size if image_size is not None else (int(im["height"]), int(im["width"]))
        xywh = torch.from_numpy(self._boxes[index])  # [N, 4]
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)  # [N, 4] xyxy
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)  # within the 1-px validator tolerance: clip
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        return {
            "boxes": boxes,
            "labels": torch.from_numpy(self._labels[index]),
            "image_id": self.ids[index],
            "orig_size": (h, w),
        }

    def preload(self) -> CocoDetection:
        """Decode every image once into memory (uint8); later reads skip file decoding.

        Worth it for small datasets on CPU, where PNG decoding costs as much as a training
        step's compute; loader workers forked afterwards share the decoded images.
        """
        for i in range(len(self)):
            if i not in self._cache:
                self._cache[i] = load_image_uint8(self.image_path(i))
        return self

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        # Decode and augment in uint8 (resampling uint8 is ~3× cheaper), convert to float last.
        image = self._cache.get(index)
        if image is None:
            image = load_image_uint8(self.image_path(index))  # [3, H, W] uint8
            if self.cache_images:
                self._cache[index] = image
        target = self.get_target(index, (int(image.shape[-2]), int(image.shape[-1])))
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        if image.dtype == torch.uint8:
            image = image.float().div_(255.0)  # [3, H, W] in [0, 1]
        return image, target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(ann_file='{self.ann_file}', images={len(self)}, "
            f"classes={self.num_classes}, transforms={self.transforms is not None})"
        )


def _usable(box: Any) -> bool:
    return (
        isinstance(box, (list, tuple))
        and len(box) == 4
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)
        and box[2] > 0
        and box[3] > 0
    )


def collate_detection(
    batch: Sequence[tuple[Tensor, Target]], size_divisible: int = 32
) -> tuple[Tensor, list[Target], list[tuple[int, int]]]:
    """Stack ``(image, target)`` pairs into a zero-padded batch.

    Images are padded at the bottom/right (so box coordinates stay valid) to the batch's largest
    height and width, rounded up to a multiple of ``size_divisible`` (the largest stride the
    detector downsamples by, so every feature map tiles the image exactly).

    Returns:
        images: ``[B, 3, H, W]``.
        targets: the targets, unchanged, as a list.
        image_sizes: ``(h, w)`` of each image before padding.
    """
    if len(batch) == 0:
        raise ValueError("collate_detection: empty batch")
    images, sizes = batch_images([b[0] for b in batch], max(1, int(size_divisible)))
    return images, [b[1] for b in batch], sizes
