"""The dense-detector core: backbone → neck → head composed once, with what every detector shares.

A detector of this package is a :class:`DenseDetector` subclass that brings four things — a head
module, ``encode_targets``, ``loss`` and ``decode`` — and nothing else; the core owns input
normalisation, padding, the composition and the output contract (docs/architecture.md; detectron2's
``DenseDetector`` and DETR's criterion/postprocessor split are the models):

* ``model(images, image_sizes=None) -> dict[str, Tensor | list[Tensor]]`` — raw head outputs, the
  same in train and eval mode; ``images`` is ``[B, 3, H, W]`` float in [0, 1], zero-padded
  bottom/right to a multiple of ``size_divisible`` (the backbone's coarsest stride); ``image_sizes``
  (the ``(h, w)`` of each image before padding) lets the model give padded pixels the value 0
  after normalisation, as if every image had been normalised before batching (torchvision's
  ``GeneralizedRCNNTransform``).
* ``model.loss(outputs, targets) -> dict[str, Tensor]`` with a ``"loss"`` key (the total).
* ``model.decode(outputs, image_sizes) -> list[dict(boxes, scores, labels)]``.
* ``model.encode_targets(targets, image_sizes) -> outputs`` — the perfect prediction: head outputs
  that decode back to the targets. One generic test gives every registered detector the round
  trip encode → decode → COCO AP = 1.0 (``tests/test_detector_registry.py``).

Targets: ``list[dict(boxes=[N, 4] xyxy float pixels, labels=[N] int64 in 0..K-1)]``.
Symbols: B images, N boxes of one image, K classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridvision.constants import IMAGENET_MEAN, IMAGENET_STD
from hybridvision.errors import DataError, UserInputError
from hybridvision.ops.postprocess import check_nms_method
from hybridvision.structures import Detections, Targets, batch_images

# batch_images, Targets and Detections live in hybridvision.structures (below data/ and detectors/);
# they are re-exported here for the importers of detectors.base.
__all__ = ["DenseDetector", "MERGE_IOU", "PostProcess", "backbone_size_divisible", "postprocess_alias",
           "batch_images", "check_targets", "Targets", "Detections"]


@dataclass
class PostProcess:
    """How a dense detector turns raw outputs into detections; one per model
    (``model.postprocess``), read by ``decode`` and by every caller that merges detections
    (tiling, TTA) — the dense core owns it, the families fill in their defaults.

    Attributes:
        score_thresh: a candidate needs a score > this.
        topk_candidates: candidates kept before NMS (FCOS, RetinaNet: per level and image;
            CenterNet: peaks per image; CornerNet: corners per type and image — their ``topk``).
        nms_thresh: class-wise NMS IoU threshold (N_t of linear Soft-NMS); None: no NMS in the
            model's own decode (CenterNet's default).
        nms_method: ``"hard"``, ``"soft_gaussian"`` or ``"soft_linear"``
            (:data:`~hybridvision.ops.postprocess.NMS_METHODS`).
        detections_per_img: detections kept per image.
    """

    score_thresh: float = 0.05
    topk_candidates: int = 1000
    nms_thresh: float | None = 0.6
    nms_method: str = "hard"
    detections_per_img: int = 100

    @property
    def merge_iou(self) -> float:
        """The IoU threshold for merging detections of several passes (tiles, TTA views):
        ``nms_thresh``, else :data:`MERGE_IOU` for a model that runs no NMS."""
        return MERGE_IOU if self.nms_thresh is None else float(self.nms_thresh)


# IoU threshold of the merge of several passes for a model without its own NMS threshold.
MERGE_IOU = 0.5


def postprocess_alias(name: str) -> property:
    """A property that reads and sets ``model.postprocess.<name>`` (``model.score_thresh = 0.01``
    keeps working; CenterNet and CornerNet call ``topk_candidates`` ``topk``)."""

    def get(self: DenseDetector) -> object:
        return getattr(self.postprocess, name)

    def put(self: DenseDetector, value: object) -> None:
        if name == "nms_method":
            value = self.checked_nms_method(str(value))
        setattr(self.postprocess, name, value)

    return property(get, put, doc=f"``postprocess.{name}`` (:class:`PostProcess`).")


def backbone_size_divisible(backbone: nn.Module) -> int:
    """The input multiple a backbone needs: its ``size_divisible`` attribute (every backbone of
    the package has one), else — for a minimal backbone that declares only ``feature_info`` — its
    coarsest stride."""
    multiple = getattr(backbone, "size_divisible", None)
    if multiple is None:
        multiple = max(int(f["stride"]) for f in backbone.feature_info)
    return int(multiple)


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
        if len(boxes) and not bool((boxes[:, 2:] >= boxes[:, :2]).all()):
            raise DataError(f"target {i}: boxes must be xyxy with x2 >= x1 and y2 >= y1")


class DenseDetector(nn.Module):
    """backbone → neck → head, with input normalisation and padding; the base of every detector.

    Normalising inside the model keeps preprocessing with the weights (export, predict), as
    detectron2's ``pixel_mean`` / ``pixel_std`` buffers do.

    Args:
        backbone: returns ``list[Tensor]`` and exposes ``feature_info`` (``channels``, ``stride``
            per output) and ``size_divisible`` — the backbone contract
            (:class:`hybridvision.backbones.base.Backbone`).
        neck: maps those maps to the pyramid; exposes ``out_channels`` and ``strides``.
        head: maps the pyramid to the raw outputs ``dict[str, list[Tensor]]``.
        num_classes: K.
        pixel_mean, pixel_std: per-channel statistics of inputs in [0, 1].
        postprocess: the decoding settings (:class:`PostProcess`; a copy is kept, its
            ``nms_method`` validated). ``model.score_thresh`` etc. read and set its fields.

    Subclasses implement :meth:`loss`, :meth:`decode` and :meth:`encode_targets`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        num_classes: int,
        *,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        postprocess: PostProcess | None = None,
    ) -> None:
        super().__init__()
        post = replace(postprocess) if postprocess is not None else PostProcess()
        post.nms_method = self.checked_nms_method(post.nms_method)
        self.postprocess = post
        if num_classes < 1:
            raise UserInputError(f"num_classes={num_classes} must be >= 1")
        self.num_classes = num_classes
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1))
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.strides: list[int] = list(neck.strides)
        # The one input multiple every caller pads to (training, predict, tiling, TTA, export,
        # bench): the backbone's ``size_divisible`` (a stacked hourglass needs 2^(depth+2)), else
        # its coarsest stride; extra neck levels (stride-2 convs) pad themselves, so P6/P7 need no
        # coarser multiple. :meth:`forward` pads any other input to it.
        self.size_divisible = backbone_size_divisible(backbone)
        # NHWC ("channels_last") weights and activations: on CPU (oneDNN) and on GPU tensor
        # cores the convolutions run faster in this layout (FCOS-R50 inference 0.83× torchvision's
        # time against 1.04× in NCHW, BENCHMARKS.md). Subclasses build every module before
        # calling this __init__, so the whole network is converted here.
        self.to(memory_format=torch.channels_last)

    score_thresh = postprocess_alias("score_thresh")
    topk_candidates = postprocess_alias("topk_candidates")
    nms_thresh = postprocess_alias("nms_thresh")
    nms_method = postprocess_alias("nms_method")
    detections_per_img = postprocess_alias("detections_per_img")

    def checked_nms_method(self, method: str) -> str:
        """``method`` if it is an NMS method of :mod:`hybridvision.ops.postprocess`, else a
        :class:`UserInputError` naming the detector and the valid ones."""
        try:
            return check_nms_method(method)
        except ValueError as err:
            raise UserInputError(f"{type(self).__name__} {err}") from None

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

    def pad_to_divisible(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H', W']`` zero-padded bottom/right to multiples of
        ``size_divisible`` (a no-op for inputs batched by :func:`batch_images` with it). After
        normalisation 0 is the mean, as :meth:`normalize` gives padded pixels."""
        d = self.size_divisible
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % d, -w % d
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return x

    def forward(
        self, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]] | None = None
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        x = self.pad_to_divisible(self.normalize(images, image_sizes)).contiguous(memory_format=torch.channels_last)
        features = self.neck(self.backbone(x))  # [B, C, H/s, W/s] (NHWC in memory)
        return self.head(features)

    def loss(self, outputs: dict, targets: Targets) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, outputs: dict, image_sizes: Sequence[tuple[int, int]]) -> Detections:
        raise NotImplementedError

    def encode_targets(
        self, targets: Targets, image_sizes: Sequence[tuple[int, int]]
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Head outputs that decode to exactly ``targets`` (the perfect prediction)."""
        raise NotImplementedError

    def output_shapes(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        """``(H_l, W_l)`` of every pyramid level for a padded input of ``image_size``."""
        h, w = image_size
        return [(-(-h // s), -(-w // s)) for s in self.strides]

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> Detections:
        """Convenience: batch (if a list), forward and decode, in the model's current mode."""
        if not isinstance(images, torch.Tensor):
            images, image_sizes = batch_images(images, self.size_divisible)
        if image_sizes is None:
            image_sizes = [tuple(images.shape[-2:])] * images.shape[0]  # type: ignore[list-item]
        return self.decode(self(images, image_sizes), image_sizes)
