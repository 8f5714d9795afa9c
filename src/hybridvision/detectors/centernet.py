"""CenterNet: objects as points (Zhou, Wang & Krähenbühl, "Objects as Points", arXiv 1904.07850,
2019), and NL-CenterNet.

Every object is its box centre: a class heatmap peaks at the centre's cell of a stride-4 map, and
two small maps regress, at that cell, the box size (w, h) and the centre's sub-cell offset. There
is no anchor and no NMS: decoding keeps the heatmap's 3×3 local maxima and the 100 best of them
(:mod:`hybridvision.ops.heatmap`).

On the dense-detector core (:class:`~hybridvision.detectors.base.DenseDetector`): backbone (a
ResNet's C5) → neck (:class:`~hybridvision.necks.upsample.DeconvUpsample`, to stride 4) →
:class:`CenterNetHead`. NL-CenterNet — the toolkit's question asked of CenterNet, which nobody
has published — puts a non-local block on the stride-4 feature (``head_attn_at="neck"``) or at
the start of each head (``"heads"``). Presets are in ``detectors/presets/centernet.py``.

Outputs of ``CenterNet.forward(images)`` (same in train and eval), one stride-4 level:

* ``heatmap``: ``[B, K, H/4, W/4]`` — centre logits per class;
* ``size``: ``[B, 2, H/4, W/4]`` — box (w, h) in cells (pixels / 4);
* ``offset``: ``[B, 2, H/4, W/4]`` — centre (x, y) minus its cell's integer coordinates.

Symbols: B images, K classes, H×W the heatmap, M objects of the batch, k peaks per image.
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridvision.constants import IMAGENET_MEAN, IMAGENET_STD
from hybridvision.detectors.base import (Detections, DenseDetector, PostProcess, Targets, check_targets,
                                         postprocess_alias)
from hybridvision.errors import UserInputError
from hybridvision.layers.registry import create_attn
from hybridvision.losses import heatmap_focal_loss, reduce_mean
from hybridvision.ops.heatmap import draw_gaussians, gather_at, gaussian_radius, heatmap_peaks, topk_peaks
from hybridvision.ops.postprocess import (
    clip_boxes_per_image,
    empty_detections,
    nms_per_image,
    split_by_image,
)

__all__ = ["CenterNet", "CenterNetHead"]


class CenterNetHead(nn.Module):
    """Three heads on the stride-4 feature: 3×3 conv (``head_channels``) → ReLU → 1×1 conv.

    Args:
        in_channels: channels of the neck's output.
        num_classes: K.
        head_channels: hidden channels of each head (64 for ResNets in the paper).
        prior_prob: initial centre probability; the heatmap bias is −log((1 − p) / p)
            (0.1 → −2.19, the released code's value).
        head_attn: attention block name for ``create_attn`` (e.g. ``"nonlocal"``), or None.
        head_attn_at: ``"neck"`` — one block on the stride-4 feature, before all heads — or
            ``"heads"`` — one block at the start of each head.
        head_attn_kwargs: keyword arguments of that block.
    """

    OUTPUTS = {"heatmap": None, "size": 2, "offset": 2}  # None: K channels

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        head_channels: int = 64,
        prior_prob: float = 0.1,
        head_attn: str | None = None,
        head_attn_at: str = "neck",
        head_attn_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if head_attn_at not in ("neck", "heads"):
            raise UserInputError(f"CenterNet head_attn_at={head_attn_at!r} must be 'neck' or 'heads'")
        kw = dict(head_attn_kwargs or {})
        use_heads = head_attn is not None and head_attn_at == "heads"
        self.attn: nn.Module = (create_attn(head_attn, in_channels, **kw)
                                if head_attn is not None and head_attn_at == "neck" else nn.Identity())
        self.heads = nn.ModuleDict()
        self.head_attn = nn.ModuleDict()
        for name, out in self.OUTPUTS.items():
            head = nn.Sequential(
                nn.Conv2d(in_channels, head_channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(head_channels, num_classes if out is None else out, 1),
            )
            if name == "heatmap":
                nn.init.constant_(head[-1].bias, -math.log((1 - prior_prob) / prior_prob))
            else:  # the released code: N(0, 0.001) weights and zero bias for regression heads
                for m in head.modules():
                    if isinstance(m, nn.Conv2d):
                        nn.init.normal_(m.weight, std=0.001)
                        nn.init.zeros_(m.bias)
            self.heads[name] = head
            self.head_attn[name] = create_attn(head_attn, in_channels, **kw) if use_heads else nn.Identity()

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.attn(features[0])  # [B, C, H, W], the one stride-4 level
        return {name: head(self.head_attn[name](x)) for name, head in self.heads.items()}


class CenterNet(DenseDetector):
    """CenterNet on the dense-detector core: ``backbone`` → ``neck`` (one stride-4 output) →
    :class:`CenterNetHead`.

    Args:
        backbone: returns ``list[Tensor]`` and exposes ``feature_info``.
        neck: maps them to one level; exposes ``out_channels`` and ``strides`` (one entry).
        num_classes: K.
        head: the head; default: a :class:`CenterNetHead` built from ``head_kwargs``.
        min_overlap: the IoU a box from a keypoint inside the Gaussian's radius keeps (0.7).
        radius_form: ``"corrected"`` or ``"original"`` :func:`~hybridvision.ops.gaussian_radius`
            (the released code trained with the original).
        heatmap_weight, size_weight, offset_weight: loss weights (1, 0.1, 1 in the paper).
        topk: peaks kept per image before the score threshold (100; at least ``detections_per_img``).
        score_thresh: detections need a peak score > this (0.01).
        nms_thresh: class-wise box NMS after the peaks, or None (default: the paper's decode has
            no NMS; its author reports +0.5 AP for large objects with it).
        nms_method: ``"hard"``, ``"soft_gaussian"`` or ``"soft_linear"`` when ``nms_thresh`` is set.
        detections_per_img: detections kept per image (100).
        pixel_mean, pixel_std: input normalisation.
        **head_kwargs: :class:`CenterNetHead` options (``head_channels``, ``head_attn``, ...).
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        num_classes: int,
        *,
        head: nn.Module | None = None,
        min_overlap: float = 0.7,
        radius_form: str = "corrected",
        heatmap_weight: float = 1.0,
        size_weight: float = 0.1,
        offset_weight: float = 1.0,
        topk: int = 100,
        score_thresh: float = 0.01,
        nms_thresh: float | None = None,
        nms_method: str = "hard",
        detections_per_img: int = 100,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        **head_kwargs: Any,
    ) -> None:
        if len(neck.strides) != 1:
            raise UserInputError(f"CenterNet needs a neck with one output level, got strides {neck.strides}")
        if head is None:
            head = CenterNetHead(neck.out_channels, num_classes, **head_kwargs)
        post = PostProcess(score_thresh=score_thresh, topk_candidates=topk, nms_thresh=nms_thresh,
                           nms_method=nms_method, detections_per_img=detections_per_img)
        super().__init__(backbone, neck, head, num_classes, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         postprocess=post)
        if radius_form not in ("corrected", "original"):
            raise UserInputError(f"CenterNet radius_form={radius_form!r} must be 'corrected' or 'original'")
        if not 0 < min_overlap < 1:
            raise UserInputError(f"CenterNet min_overlap={min_overlap} must lie in (0, 1), e.g. 0.7")
        self.stride = self.strides[0]
        self.min_overlap = min_overlap
        self.radius_form = radius_form
        self.heatmap_weight = heatmap_weight
        self.size_weight = size_weight
        self.offset_weight = offset_weight

    topk = postprocess_alias("topk_candidates")  # peaks kept per image

    # -- targets ----------------------------------------------------------------------------

    @torch.no_grad()
    def prepare_targets(
        self, targets: Targets, shape: tuple[int, int], device: torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """Training targets on a ``shape`` = (H, W) heatmap.

        Returns ``heatmap`` ``[B, K, H, W]`` (Gaussians, 1 at each centre cell) and, per object
        of the batch, ``image``, ``ys``, ``xs`` ``[M]`` (its centre cell), ``size`` ``[M, 2]``
        ((w, h) in cells) and ``offset`` ``[M, 2]`` (centre − cell).
        """
        device = device or (targets[0]["boxes"].device if targets else torch.device("cpu"))
        h, w = shape
        heat = torch.zeros((len(targets), self.num_classes, h, w), device=device)
        image, ys, xs, sizes, offsets = [], [], [], [], []
        for b, t in enumerate(targets):
            boxes = t["boxes"].to(device=device, dtype=torch.float32) / self.stride  # [m, 4] in cells
            labels = t["labels"].to(device)
            wh = boxes[:, 2:] - boxes[:, :2]  # [m, 2]
            valid = (wh > 0).all(dim=1)
            boxes, labels, wh = boxes[valid], labels[valid], wh[valid]
            centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # [m, 2] (x, y)
            cell = centre.floor().long()
            cell[:, 0].clamp_(0, w - 1)
            cell[:, 1].clamp_(0, h - 1)
            radius = gaussian_radius(wh[:, 1], wh[:, 0], self.min_overlap, form=self.radius_form).to(device)
            draw_gaussians(heat[b], cell, radius, labels)
            image.append(torch.full_like(labels, b))
            ys.append(cell[:, 1])
            xs.append(cell[:, 0])
            sizes.append(wh)
            offsets.append(centre - cell)
        return {  # one (possibly empty) entry per image in every list
            "heatmap": heat,
            "image": torch.cat(image).long(),
            "ys": torch.cat(ys),
            "xs": torch.cat(xs),
            "size": torch.cat(sizes),
            "offset": torch.cat(offsets),
        }

    @torch.no_grad()
    def encode_targets(
        self, targets: Targets, image_sizes: Sequence[tuple[int, int]], *, confidence: float = 20.0
    ) -> dict[str, torch.Tensor]:
        """The perfect prediction: heatmap logit +``confidence`` at every centre cell and
        −``confidence`` elsewhere, the exact size and offset at the centre cells."""
        pad = self.size_divisible
        h = -(-max(s[0] for s in image_sizes) // pad) * pad
        w = -(-max(s[1] for s in image_sizes) // pad) * pad
        shape = self.output_shapes((h, w))[0]
        tgt = self.prepare_targets(targets, shape)
        peaks = tgt["heatmap"] == 1
        heat = torch.where(peaks, confidence, -confidence)  # [B, K, H, W]
        size = heat.new_zeros((len(targets), 2, *shape))
        offset = heat.new_zeros((len(targets), 2, *shape))
        size[tgt["image"], :, tgt["ys"], tgt["xs"]] = tgt["size"]
        offset[tgt["image"], :, tgt["ys"], tgt["xs"]] = tgt["offset"]
        return {"heatmap": heat, "size": size, "offset": offset}

    # -- loss -------------------------------------------------------------------------------

    def loss(self, outputs: dict, targets: Targets) -> dict[str, torch.Tensor]:
        """Penalty-reduced focal loss on the heatmap ÷ objects + 0.1 · L1 size + 1 · L1 offset
        (each L1 averaged over the objects' coordinates), as Zhou et al. Eq. 1–3.

        Returns ``loss_heatmap``, ``loss_size``, ``loss_offset`` and their weighted sum ``loss``.
        """
        heat_logits = outputs["heatmap"]
        check_targets(targets, self.num_classes, heat_logits.shape[0])
        tgt = self.prepare_targets(targets, tuple(heat_logits.shape[-2:]), heat_logits.device)
        num_obj = reduce_mean(torch.tensor(float(tgt["image"].numel()), device=heat_logits.device))
        loss_heat = heatmap_focal_loss(heat_logits, tgt["heatmap"], num_objects=num_obj)
        b, y, x = tgt["image"], tgt["ys"], tgt["xs"]
        size_p = outputs["size"].float()[b, :, y, x]  # [M, 2]
        offset_p = outputs["offset"].float()[b, :, y, x]  # [M, 2]
        if b.numel():
            loss_size = F.l1_loss(size_p, tgt["size"])
            loss_offset = F.l1_loss(offset_p, tgt["offset"])
        else:  # still connected to the graph, so every parameter gets a (zero) gradient
            loss_size = outputs["size"].sum() * 0.0
            loss_offset = outputs["offset"].sum() * 0.0
        total = (self.heatmap_weight * loss_heat + self.size_weight * loss_size
                 + self.offset_weight * loss_offset)
        return {"loss_heatmap": loss_heat, "loss_size": loss_size, "loss_offset": loss_offset, "loss": total}

    # -- decode -----------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, outputs: dict, image_sizes: Sequence[tuple[int, int]]) -> Detections:
        """Detections per image: the heatmap's 3×3 local maxima inside the image (not in the
        batch's padding), the ``topk`` best over classes and positions, boxes from size and offset
        at those cells, score > ``score_thresh``, clipped to ``image_sizes``; class-wise NMS only
        with ``nms_thresh``."""
        heat = outputs["heatmap"].float().sigmoid()  # [B, K, H, W]
        batch = heat.shape[0]
        if len(image_sizes) != batch:
            raise ValueError(f"decode got {len(image_sizes)} image sizes for a batch of {batch}")
        rows = torch.arange(heat.shape[-2], device=heat.device)
        cols = torch.arange(heat.shape[-1], device=heat.device)
        cells = torch.tensor([[-(-h // self.stride), -(-w // self.stride)] for h, w in image_sizes],
                             device=heat.device)  # [B, 2] cells covering each image
        inside = (rows[None, :, None] < cells[:, 0, None, None]) & (cols[None, None, :] < cells[:, 1, None, None])
        heat = heat * inside[:, None].to(heat.dtype)  # no peak in the padding of a smaller image
        # at least detections_per_img peaks, so that raising it (predict --max-det, eval --max-dets) is enough
        k = max(self.topk, self.detections_per_img)
        scores, labels, ys, xs = topk_peaks(heatmap_peaks(heat), k)  # [B, k] each
        size = gather_at(outputs["size"].float(), ys, xs).clamp(min=0)  # [B, k, 2]
        offset = gather_at(outputs["offset"].float(), ys, xs)  # [B, k, 2]
        cx = (xs + offset[..., 0]) * self.stride
        cy = (ys + offset[..., 1]) * self.stride
        half_w, half_h = size[..., 0] * self.stride / 2, size[..., 1] * self.stride / 2
        boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)  # [B, k, 4]

        keep = scores > self.score_thresh  # [B, k], each row still best first
        if not bool(keep.any()):
            return empty_detections(batch, heat)
        images = torch.arange(batch, device=heat.device)[:, None].expand_as(scores)[keep]  # [P]
        boxes = clip_boxes_per_image(boxes[keep], images, image_sizes)
        scores, labels = scores[keep], labels[keep]
        if self.nms_thresh is not None:
            return nms_per_image(
                boxes, scores, labels, images, batch_size=batch, num_classes=self.num_classes,
                iou_threshold=self.nms_thresh, max_per_image=self.detections_per_img, method=self.nms_method,
            )
        counts = keep.sum(dim=1)  # [B]; rows were already sorted, so the first ones are the best
        rank = torch.arange(len(images), device=heat.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        first = rank < self.detections_per_img
        return split_by_image(boxes[first], scores[first], labels[first],
                              counts.clamp(max=self.detections_per_img).tolist())

    # -- test-time augmentation -------------------------------------------------------------

    def flip_width(self, width: int) -> int:
        """The width inside which the flip test mirrors an image of ``width`` pixels: a multiple of
        the stride, so that mirroring the output map inside ⌈w / 4⌉ cells is exact."""
        return -(-int(width) // self.stride) * self.stride

    def merge_flipped(self, outputs: dict, flipped: dict, image_sizes: Sequence[tuple[int, int]]
                      ) -> dict[str, torch.Tensor]:
        """Flip test (Zhou et al. Sec. 4): the mean of the heatmap probabilities and of the sizes
        of each image and of its mirror (mirrored back inside the image's own ⌈w / 4⌉ columns);
        the offsets of the image alone.

        ``flipped`` are the outputs for the images mirrored inside :meth:`flip_width` columns
        (:func:`~hybridvision.detectors.tta.flip_images`), as the model returns them.
        """
        back = {key: flipped[key].float().clone() for key in ("heatmap", "size")}
        for b, (_, w) in enumerate(image_sizes):
            cols = -(-int(w) // self.stride)
            for key in back:
                back[key][b, :, :, :cols] = flipped[key][b, :, :, :cols].float().flip(-1)
        prob = (outputs["heatmap"].float().sigmoid() + back["heatmap"].sigmoid()) / 2
        return {
            "heatmap": torch.logit(prob, eps=1e-6),
            "size": (outputs["size"].float() + back["size"]) / 2,
            "offset": outputs["offset"],
        }
