"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017): the anchor-based
baseline the anchor-free detectors are compared with (thesis A, Tables 4.10–4.11).

torchvision's parts, wrapped to this toolkit's detector contract: the head
(:class:`torchvision.models.detection.retinanet.RetinaNetHead`, four 3×3 convs per branch, focal
and L1 losses), the anchors (:class:`~torchvision.models.detection.anchor_utils.AnchorGenerator`,
3 scales × 3 aspect ratios per location), the matcher (IoU ≥ 0.5 foreground, < 0.4 background,
low-quality matches allowed) and the box coder. torchvision's ``RetinaNet`` module itself resizes
its inputs and returns losses in training and boxes in evaluation; here the core
(:class:`~hybridvision.detectors.base.DenseDetector`) normalises and pads, the head's raw maps are
the outputs, and ``loss`` / ``decode`` / ``encode_targets`` are methods, as for every detector.

Outputs of ``RetinaNet.forward(images)``, one map per pyramid level l with A anchors per cell:

* ``cls_logits``: ``list[[B, A·K, H_l, W_l]]`` — per-anchor class logits (anchor-major channels);
* ``bbox_regression``: ``list[[B, A·4, H_l, W_l]]`` — (dx, dy, dw, dh) of each anchor.

Symbols: B images, K classes, A anchors per cell, N anchors of an image (Σ_l H_l·W_l·A), M boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import box_iou

from hybridvision.constants import IMAGENET_MEAN, IMAGENET_STD
from hybridvision.detectors.base import Detections, DenseDetector, PostProcess, Targets, check_targets
from hybridvision.errors import UserInputError
from hybridvision.ops.postprocess import clip_boxes_per_image, empty_detections, logit, nms_per_image

__all__ = ["RetinaNet", "RetinaNetMaps", "anchor_sizes_for"]


def anchor_sizes_for(strides: Sequence[int], base: float = 4.0) -> tuple[tuple[float, ...], ...]:
    """Anchor sizes per level: ``base``·stride × (2⁰, 2^⅓, 2^⅔) (Lin et al. Sec. 4: 32–512 px
    for P3–P7 with base 4)."""
    return tuple(tuple(base * s * 2 ** (i / 3) for i in range(3)) for s in strides)


def to_anchor_rows(maps: Sequence[torch.Tensor], d: int) -> torch.Tensor:
    """``list[[B, A·d, H_l, W_l]] -> [B, N, d]``, rows ordered level, cell (row-major), anchor —
    torchvision's layout, and the order of :class:`AnchorGenerator`'s anchors."""
    b = maps[0].shape[0]
    rows = []
    for m in maps:
        _, ad, h, w = m.shape
        rows.append(m.view(b, ad // d, d, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, d))
    return torch.cat(rows, dim=1)


def from_anchor_rows(rows: torch.Tensor, shapes: Sequence[tuple[int, int]], num_anchors: int) -> list[torch.Tensor]:
    """The inverse of :func:`to_anchor_rows`: ``[B, N, d] -> list[[B, A·d, H_l, W_l]]``."""
    b, _, d = rows.shape
    sizes = [h * w * num_anchors for h, w in shapes]
    return [
        part.reshape(b, h, w, num_anchors, d).permute(0, 3, 4, 1, 2).reshape(b, num_anchors * d, h, w).contiguous()
        for part, (h, w) in zip(rows.split(sizes, dim=1), shapes)
    ]


class RetinaNetMaps(nn.Module):
    """torchvision's :class:`RetinaNetHead`, returning its per-level maps rather than
    concatenated rows (so the core's channels-last layout and per-level decoding apply)."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, prior_prob: float = 0.01) -> None:
        super().__init__()
        self.tv = RetinaNetHead(in_channels, num_anchors, num_classes)
        if prior_prob != 0.01:
            nn.init.constant_(self.tv.classification_head.cls_logits.bias,
                              -torch.log(torch.tensor((1 - prior_prob) / prior_prob)).item())
        self.num_anchors = num_anchors

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        cls_head, reg_head = self.tv.classification_head, self.tv.regression_head
        return {
            "cls_logits": [cls_head.cls_logits(cls_head.conv(f)) for f in features],  # [B, A·K, H, W]
            "bbox_regression": [reg_head.bbox_reg(reg_head.conv(f)) for f in features],  # [B, A·4, H, W]
        }


class RetinaNet(DenseDetector):
    """RetinaNet on the dense-detector core: ``backbone`` → ``neck`` (FPN) → torchvision's head.

    Args:
        backbone, neck: as for every detector (the neck exposes ``out_channels``, ``strides``).
        num_classes: K.
        anchor_sizes: per level, the anchor sizes in pixels (default: 4·stride × 2^{0, ⅓, ⅔}).
        aspect_ratios: per-level aspect ratios (default 0.5, 1, 2 everywhere).
        fg_iou_thresh, bg_iou_thresh: the matcher's thresholds (0.5, 0.4).
        score_thresh: candidates need a class probability > this (0.05).
        topk_candidates: candidates kept per level and image before NMS (1000).
        nms_thresh: class-wise NMS IoU threshold (0.5).
        nms_method: ``"hard"``, ``"soft_gaussian"`` or ``"soft_linear"``.
        detections_per_img: detections kept per image (100: COCO's cap).
        prior_prob: initial foreground probability (0.01).
        pixel_mean, pixel_std: input normalisation.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        num_classes: int,
        *,
        anchor_sizes: Sequence[Sequence[float]] | None = None,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.4,
        score_thresh: float = 0.05,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.5,
        nms_method: str = "hard",
        detections_per_img: int = 100,
        prior_prob: float = 0.01,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        strides = list(neck.strides)
        sizes = anchor_sizes_for(strides) if anchor_sizes is None else tuple(tuple(s) for s in anchor_sizes)
        if len(sizes) != len(strides):
            raise UserInputError(f"RetinaNet anchor_sizes has {len(sizes)} entries for {len(strides)} levels")
        anchors = AnchorGenerator(sizes, (tuple(aspect_ratios),) * len(sizes))
        num_anchors = anchors.num_anchors_per_location()[0]
        head = RetinaNetMaps(neck.out_channels, num_anchors, num_classes, prior_prob)
        post = PostProcess(score_thresh=score_thresh, topk_candidates=topk_candidates, nms_thresh=nms_thresh,
                           nms_method=nms_method, detections_per_img=detections_per_img)
        super().__init__(backbone, neck, head, num_classes, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         postprocess=post)
        self.anchor_generator = anchors
        self.num_anchors = num_anchors
        self.matcher = det_utils.Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.box_coder = det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))

    # -- anchors and matching ---------------------------------------------------------------

    def anchors(self, maps: Sequence[torch.Tensor], padded_size: tuple[int, int]) -> torch.Tensor:
        """The ``[N, 4]`` anchors of one image of the padded batch size (the same for every image)."""
        fake = ImageList(maps[0].new_empty((1, 0, *padded_size)), [tuple(padded_size)])
        return self.anchor_generator(fake, [m[:1] for m in maps])[0].float()  # float even under AMP

    def _padded_size(self, maps: Sequence[torch.Tensor]) -> tuple[int, int]:
        h, w = maps[0].shape[-2:]
        return h * self.strides[0], w * self.strides[0]

    @torch.no_grad()
    def match(self, anchors: torch.Tensor, targets: Targets) -> list[torch.Tensor]:
        """Per image, ``[N]`` index of each anchor's box: ≥ 0 foreground, −1 background, −2 ignored."""
        out = []
        for t in targets:
            boxes = t["boxes"].to(anchors)
            if boxes.numel() == 0:
                out.append(torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device))
            else:
                out.append(self.matcher(box_iou(boxes, anchors)))
        return out

    # -- targets, loss ----------------------------------------------------------------------

    @torch.no_grad()
    def encode_targets(
        self, targets: Targets, image_sizes: Sequence[tuple[int, int]], *, confidence: float = 20.0
    ) -> dict[str, list[torch.Tensor]]:
        """The perfect prediction: every foreground anchor scores +``confidence`` for its box's
        class and regresses exactly onto the box; every other logit is −``confidence``."""
        pad = self.size_divisible
        padded = (-(-max(s[0] for s in image_sizes) // pad) * pad, -(-max(s[1] for s in image_sizes) // pad) * pad)
        shapes = self.output_shapes(padded)
        maps = [torch.zeros(1, 1, h, w) for h, w in shapes]
        anchors = self.anchors(maps, padded)  # [N, 4]
        cls = torch.full((len(targets), anchors.shape[0], self.num_classes), -confidence)  # [B, N, K]
        reg = torch.zeros((len(targets), anchors.shape[0], 4))  # [B, N, 4]
        for b, (t, matched) in enumerate(zip(targets, self.match(anchors, targets))):
            fg = matched >= 0
            if bool(fg.any()):
                cls[b, fg, t["labels"][matched[fg]]] = confidence
                reg[b, fg] = self.box_coder.encode_single(t["boxes"].float()[matched[fg]], anchors[fg])
        return {
            "cls_logits": from_anchor_rows(cls, shapes, self.num_anchors),
            "bbox_regression": from_anchor_rows(reg, shapes, self.num_anchors),
        }

    def loss(self, outputs: dict, targets: Targets) -> dict[str, torch.Tensor]:
        """torchvision's RetinaNet loss: sigmoid focal (÷ foreground anchors) + L1 on the box
        deltas of foreground anchors, each averaged over the images.

        Returns ``loss_cls``, ``loss_box_reg`` and their sum ``loss``.
        """
        cls_maps = outputs["cls_logits"]
        check_targets(targets, self.num_classes, cls_maps[0].shape[0])
        anchors = self.anchors(cls_maps, self._padded_size(cls_maps))
        targets = [{"boxes": t["boxes"].to(anchors), "labels": t["labels"].to(anchors.device)} for t in targets]
        matched = self.match(anchors, targets)
        head_outputs = {
            "cls_logits": to_anchor_rows(cls_maps, self.num_classes).float(),  # [B, N, K]
            "bbox_regression": to_anchor_rows(outputs["bbox_regression"], 4).float(),  # [B, N, 4]
        }
        tv = self.head.tv
        loss_cls = tv.classification_head.compute_loss(targets, head_outputs, matched)
        loss_reg = tv.regression_head.compute_loss(targets, head_outputs, [anchors] * len(targets), matched)
        return {"loss_cls": loss_cls, "loss_box_reg": loss_reg, "loss": loss_cls + loss_reg}

    # -- decode -----------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, outputs: dict, image_sizes: Sequence[tuple[int, int]]) -> Detections:
        """Per level and image: class probabilities > ``score_thresh``, the ``topk_candidates``
        best, boxes decoded from their anchors and clipped; then class-wise NMS over the levels
        and the ``detections_per_img`` best (torchvision's ``postprocess_detections``, batched)."""
        cls_maps, reg_maps = outputs["cls_logits"], outputs["bbox_regression"]
        batch = cls_maps[0].shape[0]
        if len(image_sizes) != batch:
            raise ValueError(f"decode got {len(image_sizes)} image sizes for a batch of {batch}")
        device = cls_maps[0].device
        anchors = self.anchors(cls_maps, self._padded_size(cls_maps))  # [N, 4]
        per_level = [m.shape[-2] * m.shape[-1] * self.num_anchors for m in cls_maps]
        thresh = logit(self.score_thresh)
        boxes_all, scores_all, labels_all, imgs_all = [], [], [], []
        for cls_l, reg_l, anchors_l in zip(cls_maps, reg_maps, anchors.split(per_level)):
            cls_rows = to_anchor_rows([cls_l], self.num_classes).float()  # [B, n, K]
            reg_rows = to_anchor_rows([reg_l], 4).float()  # [B, n, 4]
            flat = cls_rows.flatten(1)  # [B, n·K]
            k = min(self.topk_candidates, flat.shape[1])
            top, idx = flat.topk(k, dim=1)  # [B, k]
            keep = top > thresh
            img = torch.arange(batch, device=device)[:, None].expand(-1, k)[keep]  # [P]
            idx = idx[keep]
            anchor_idx = torch.div(idx, self.num_classes, rounding_mode="floor")
            labels_all.append(idx % self.num_classes)
            scores_all.append(top[keep].sigmoid())
            boxes_all.append(self.box_coder.decode_single(reg_rows[img, anchor_idx], anchors_l[anchor_idx]))
            imgs_all.append(img)
        imgs = torch.cat(imgs_all)
        if imgs.numel() == 0:
            return empty_detections(batch, cls_maps[0].float())
        boxes = clip_boxes_per_image(torch.cat(boxes_all), imgs, image_sizes)
        return nms_per_image(
            boxes, torch.cat(scores_all), torch.cat(labels_all), imgs, batch_size=batch,
            num_classes=self.num_classes, iou_threshold=self.nms_thresh,
            max_per_image=self.detections_per_img, method=self.nms_method,
        )
