"""FCOS: Fully Convolutional One-Stage object detection (Tian et al., ICCV 2019), and NL-FCOS.

On the dense-detector core (:class:`~hybridvision.detectors.base.DenseDetector`: backbone → neck
→ head), FCOS brings its head, label assignment, loss, decoding and target encoding. Presets
(``fcos_r50_fpn``, ``nl_fcos_small``, …) are in ``detectors/presets/fcos.py``.

Head (one for every level): two towers of ``num_convs`` × (3×3 conv, GroupNorm, ReLU), one for
classification, one for regression; an optional attention block (non-local: thesis A's NL-FCOS) at
the start of the cls and/or reg tower, one module shared across levels; cls logits (K, bias prior
0.01), box regression (l, t, r, b ≥ 0 through a learnable per-level scale) and centerness (1, on
the regression tower: the "improved" FCOS).

Outputs of ``FCOS.forward(images)`` (same in train and eval):

* ``cls_logits``: ``list[[B, K, H_l, W_l]]`` — per-class logits;
* ``bbox_reg``: ``list[[B, 4, H_l, W_l]]`` — distances (l, t, r, b) from the location to the box
  sides, ≥ 0, in units of the level's stride when ``norm_reg_targets`` (default) else in pixels;
* ``centerness``: ``list[[B, 1, H_l, W_l]]`` — centerness logits.

Symbols: B images, K classes, L locations over all levels (Σ_l H_l·W_l), M ground-truth boxes of
one image, s stride of a level, P candidates or positives.
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridvision.constants import IMAGENET_MEAN, IMAGENET_STD
from hybridvision.detectors.base import Detections, DenseDetector, PostProcess, Targets, check_targets
from hybridvision.errors import UserInputError
from hybridvision.layers.blocks import group_norm
from hybridvision.layers.registry import create_attn
from hybridvision.losses import focal_loss_sum, giou_loss_ltrb, iou_loss_ltrb, reduce_mean
from hybridvision.ops.points import (
    distances_to_boxes,
    flatten_levels,
    level_locations,
    per_location,
    point_box_distances,
    unflatten_levels,
)
from hybridvision.ops.postprocess import (
    clip_boxes_per_image,
    empty_detections,
    logit,
    nms_per_image,
)

__all__ = [
    "FCOS",
    "FCOSHead",
    "assign_targets",
    "centerness_target",
    "compute_locations",
    "default_size_ranges",
    "FCOS_SIZE_RANGES",
]

INF = float("inf")
# Tian et al. Sec. 3.2: max(l, t, r, b) of a positive location must lie in its level's range.
FCOS_SIZE_RANGES: tuple[tuple[float, float], ...] = (
    (0, 64), (64, 128), (128, 256), (256, 512), (512, INF),
)
compute_locations = level_locations  # the name FCOS's papers and tests use


def default_size_ranges(num_levels: int) -> list[tuple[float, float]]:
    """The paper's ranges for the first ``num_levels`` levels, the last one open-ended."""
    if not 1 <= num_levels <= len(FCOS_SIZE_RANGES):
        raise UserInputError(f"FCOS default size ranges exist for 1..5 levels, got {num_levels}")
    ranges = list(FCOS_SIZE_RANGES[:num_levels])
    ranges[-1] = (ranges[-1][0], INF)
    return ranges


# ---------------------------------------------------------------------------------------------
# Assignment and targets (pure functions)
# ---------------------------------------------------------------------------------------------


def assign_targets(
    locations: torch.Tensor,
    strides: torch.Tensor,
    size_ranges: torch.Tensor,
    boxes: torch.Tensor,
    *,
    center_sampling_radius: float = 1.5,
) -> torch.Tensor:
    """FCOS label assignment for one image.

    A location is positive for a box if it lies inside the box — inside its centre region
    (centre ± ``radius``·stride, clipped to the box) when ``center_sampling_radius > 0`` — and
    max(l, t, r, b) is within its level's size range. Among several such boxes the one of
    smallest area wins (Tian et al. Sec. 3.2; centre sampling from the FCOS "improvements").

    Args:
        locations: ``[L, 2]`` (x, y) pixel coordinates.
        strides: ``[L]`` stride of each location's level.
        size_ranges: ``[L, 2]`` (low, high) range of max(l, t, r, b) for each location.
        boxes: ``[M, 4]`` xyxy ground-truth boxes.
        center_sampling_radius: radius in strides; 0 disables centre sampling.

    Returns:
        ``[L]`` int64 index of the matched box, -1 for background.
    """
    num_loc = locations.shape[0]
    if boxes.numel() == 0:
        return torch.full((num_loc,), -1, dtype=torch.long, device=locations.device)
    ltrb = point_box_distances(locations, boxes)  # [L, M, 4]
    if center_sampling_radius > 0:
        cx = (boxes[:, 0] + boxes[:, 2]) / 2  # [M]
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        rad = strides[:, None].to(boxes.dtype) * center_sampling_radius  # [L, 1]
        centre_box = torch.stack(
            [
                torch.maximum(cx - rad, boxes[:, 0]),
                torch.maximum(cy - rad, boxes[:, 1]),
                torch.minimum(cx + rad, boxes[:, 2]),
                torch.minimum(cy + rad, boxes[:, 3]),
            ],
            dim=-1,
        )  # [L, M, 4]
        inside = point_box_distances(locations, centre_box).amin(dim=-1) > 0  # [L, M]
    else:
        inside = ltrb.amin(dim=-1) > 0  # [L, M]
    max_reg = ltrb.amax(dim=-1)  # [L, M]
    in_range = (max_reg >= size_ranges[:, 0:1]) & (max_reg <= size_ranges[:, 1:2])  # [L, M]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # [M]
    cost = area[None, :].expand(num_loc, -1).masked_fill(~(inside & in_range), INF)  # [L, M]
    min_area, matched = cost.min(dim=1)  # ties: the first (lowest index) box of equal area
    return matched.masked_fill(min_area == INF, -1)


def centerness_target(ltrb: torch.Tensor) -> torch.Tensor:
    """Centerness* = √(min(l,r)/max(l,r) · min(t,b)/max(t,b)): ``[..., 4] -> [...]``."""
    lr, tb = ltrb[..., 0::2], ltrb[..., 1::2]
    ratio = (lr.amin(-1) / lr.amax(-1).clamp(min=1e-12)) * (tb.amin(-1) / tb.amax(-1).clamp(min=1e-12))
    return ratio.clamp(min=0).sqrt()


# ---------------------------------------------------------------------------------------------
# Head
# ---------------------------------------------------------------------------------------------


class Scale(nn.Module):
    """A learnable scalar multiplier (one per pyramid level, FCOS Sec. 3.2)."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class FCOSHead(nn.Module):
    """The FCOS head, shared by every pyramid level.

    Args:
        in_channels: channels C of every neck level.
        num_classes: K.
        num_levels: number of levels (one learnable scale each).
        num_convs: convs per tower (4 in the paper).
        gn_groups: GroupNorm groups at most (32; :func:`group_norm` takes the largest divisor).
        prior_prob: initial foreground probability, sets the cls bias (Lin et al. 2017).
        centerness_on_reg: centerness predicted from the regression tower (improved FCOS) rather
            than the classification tower (the paper's first version).
        norm_reg_targets: regression in stride units through ReLU (improved FCOS); False uses
            exp() and pixels (the paper's first version).
        head_attn: attention block name for ``create_attn`` placed at the start of a tower.
        head_attn_branch: ``"cls"``, ``"reg"`` or ``"both"`` (one block per branch).
        head_attn_kwargs: keyword arguments of that block.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_levels: int,
        *,
        num_convs: int = 4,
        gn_groups: int = 32,
        prior_prob: float = 0.01,
        centerness_on_reg: bool = True,
        norm_reg_targets: bool = True,
        head_attn: str | None = None,
        head_attn_branch: str = "both",
        head_attn_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if head_attn_branch not in ("cls", "reg", "both"):
            raise UserInputError(
                f"FCOS head_attn_branch={head_attn_branch!r} must be 'cls', 'reg' or 'both'"
            )
        c = in_channels

        def tower() -> nn.Sequential:
            layers: list[nn.Module] = []
            for _ in range(num_convs):
                layers += [nn.Conv2d(c, c, 3, padding=1), group_norm(c, gn_groups), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers)

        self.cls_tower = tower()
        self.bbox_tower = tower()
        self.cls_logits = nn.Conv2d(c, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(c, 4, 3, padding=1)
        self.centerness = nn.Conv2d(c, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        self.centerness_on_reg = centerness_on_reg
        self.norm_reg_targets = norm_reg_targets

        for mod in [self.cls_tower, self.bbox_tower, self.cls_logits, self.bbox_pred, self.centerness]:
            for m in mod.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=0.01)
                    nn.init.zeros_(m.bias)
        # Start every location at foreground probability ``prior_prob`` so the focal loss of the
        # vast background does not swamp the first iterations (Lin et al. 2017, Sec. 4.1).
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))

        # Attention blocks are created after the init above, so they keep their own init
        # (e.g. zero-init of the non-local output projection).
        kw = dict(head_attn_kwargs or {})
        use_cls = head_attn is not None and head_attn_branch in ("cls", "both")
        use_reg = head_attn is not None and head_attn_branch in ("reg", "both")
        self.cls_attn: nn.Module = create_attn(head_attn, c, **kw) if use_cls else nn.Identity()
        self.reg_attn: nn.Module = create_attn(head_attn, c, **kw) if use_reg else nn.Identity()

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        cls_logits, bbox_reg, centerness = [], [], []
        for feat, scale in zip(features, self.scales):
            cls_feat = self.cls_tower(self.cls_attn(feat))  # [B, C, H, W]
            reg_feat = self.bbox_tower(self.reg_attn(feat))  # [B, C, H, W]
            cls_logits.append(self.cls_logits(cls_feat))  # [B, K, H, W]
            ctr_feat = reg_feat if self.centerness_on_reg else cls_feat
            centerness.append(self.centerness(ctr_feat))  # [B, 1, H, W]
            reg = scale(self.bbox_pred(reg_feat))  # [B, 4, H, W]
            bbox_reg.append(F.relu(reg) if self.norm_reg_targets else torch.exp(reg))
        return {"cls_logits": cls_logits, "bbox_reg": bbox_reg, "centerness": centerness}


# ---------------------------------------------------------------------------------------------
# Detector
# ---------------------------------------------------------------------------------------------


class FCOS(DenseDetector):
    """FCOS on the dense-detector core: ``backbone`` → ``neck`` → :class:`FCOSHead`.

    Args:
        backbone: returns ``list[Tensor]`` (e.g. C3–C5) and exposes ``feature_info``.
        neck: maps them to the pyramid; exposes ``out_channels`` and ``strides``.
        num_classes: K.
        head: the head; default: an :class:`FCOSHead` built from ``head_kwargs``.
        size_ranges: per-level (low, high) ranges of max(l, t, r, b); default: the paper's.
        center_sampling_radius: in strides (1.5); 0 disables centre sampling.
        reg_loss: ``"giou"`` (GIoU, torchvision) or ``"iou"`` (UnitBox −ln IoU).
        focal_alpha, focal_gamma: sigmoid focal loss parameters (0.25, 2).
        score_thresh: candidates need cls probability > this (0.05).
        score_sqrt: final score √(cls·centerness) (True) or cls·centerness.
        topk_candidates: candidates kept per level and image before NMS (1000).
        nms_thresh: class-wise NMS IoU threshold (0.6); N_t of linear Soft-NMS.
        nms_method: ``"hard"``, ``"soft_gaussian"`` or ``"soft_linear"`` (Soft-NMS, Bodla et al.
            2017; :func:`hybridvision.ops.soft_nms`).
        detections_per_img: detections kept per image (100).
        pixel_mean, pixel_std: input normalisation.
        **head_kwargs: :class:`FCOSHead` options (``num_convs``, ``gn_groups``, ``head_attn``, ...).
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        num_classes: int,
        *,
        head: nn.Module | None = None,
        size_ranges: Sequence[tuple[float, float]] | None = None,
        center_sampling_radius: float = 1.5,
        reg_loss: str = "giou",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        score_thresh: float = 0.05,
        score_sqrt: bool = True,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.6,
        nms_method: str = "hard",
        detections_per_img: int = 100,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        **head_kwargs: Any,
    ) -> None:
        num_levels = len(neck.strides)
        if head is None:
            head = FCOSHead(neck.out_channels, num_classes, num_levels, **head_kwargs)
        post = PostProcess(score_thresh=score_thresh, topk_candidates=topk_candidates, nms_thresh=nms_thresh,
                           nms_method=nms_method, detections_per_img=detections_per_img)
        super().__init__(backbone, neck, head, num_classes, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         postprocess=post)
        ranges = default_size_ranges(num_levels) if size_ranges is None else [tuple(r) for r in size_ranges]
        if len(ranges) != num_levels:
            raise UserInputError(
                f"FCOS size_ranges has {len(ranges)} entries for {num_levels} pyramid levels; "
                "give one (low, high) per level"
            )
        if reg_loss not in ("giou", "iou"):
            raise UserInputError(f"FCOS reg_loss={reg_loss!r} must be 'giou' or 'iou'")
        self.size_ranges = [(float(lo), float(hi)) for lo, hi in ranges]
        self.center_sampling_radius = center_sampling_radius
        self.norm_reg_targets = self.head.norm_reg_targets
        self.reg_loss = reg_loss
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.score_sqrt = score_sqrt

    # -- targets ----------------------------------------------------------------------------

    @torch.no_grad()
    def prepare_targets(
        self, targets: Targets, shapes: Sequence[tuple[int, int]], device: torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-location training targets for a batch.

        Returns a dict with ``matched`` ``[B, L]`` (box index or -1), ``labels`` ``[B, L]``
        (class, K for background) and ``reg`` ``[B, L, 4]`` (l, t, r, b; divided by the stride
        when ``norm_reg_targets``), locations ordered level by level, row-major.
        """
        device = device or (targets[0]["boxes"].device if targets else torch.device("cpu"))
        locs = torch.cat(level_locations(shapes, self.strides, device))  # [L, 2]
        strides = per_location(self.strides, shapes, device)  # [L]
        ranges = per_location(self.size_ranges, shapes, device)  # [L, 2]
        matched, labels, reg = [], [], []
        for t in targets:
            boxes = t["boxes"].to(device=device, dtype=torch.float32)  # [M, 4]
            idx = assign_targets(
                locs, strides, ranges, boxes, center_sampling_radius=self.center_sampling_radius
            )  # [L]
            pos = idx >= 0
            safe = idx.clamp(min=0)
            lab = torch.full_like(idx, self.num_classes)
            ltrb = locs.new_zeros((locs.shape[0], 4))
            if boxes.numel():
                lab = torch.where(pos, t["labels"].to(device)[safe], lab)
                b = boxes[safe]  # [L, 4] the matched box of every location
                x, y = locs[:, 0], locs[:, 1]
                ltrb = torch.stack([x - b[:, 0], y - b[:, 1], b[:, 2] - x, b[:, 3] - y], dim=1)
                ltrb = ltrb * pos[:, None]  # [L, 4], zero at background
            if self.norm_reg_targets:
                ltrb = ltrb / strides[:, None]
            matched.append(idx)
            labels.append(lab)
            reg.append(ltrb)
        return {"matched": torch.stack(matched), "labels": torch.stack(labels), "reg": torch.stack(reg)}

    @torch.no_grad()
    def encode_targets(
        self, targets: Targets, image_sizes: Sequence[tuple[int, int]], *, confidence: float = 20.0
    ) -> dict[str, list[torch.Tensor]]:
        """The perfect prediction: logits ``±confidence`` for the assigned class and centerness
        at every positive location, the exact (l, t, r, b) targets as regression.

        ``image_sizes`` are the padded batch's image sizes; the batch is as large as the largest,
        rounded up to ``size_divisible``.
        """
        h = max(s[0] for s in image_sizes)
        w = max(s[1] for s in image_sizes)
        pad = self.size_divisible
        shapes = self.output_shapes((-(-h // pad) * pad, -(-w // pad) * pad))
        tgt = self.prepare_targets(targets, shapes)
        labels, reg = tgt["labels"], tgt["reg"]  # [B, L], [B, L, 4]
        pos = labels < self.num_classes  # [B, L]
        cls = torch.full((*labels.shape, self.num_classes), -confidence, device=labels.device)
        cls[pos, labels[pos]] = confidence  # [B, L, K]
        ctr = torch.where(pos, confidence, -confidence)[..., None]  # [B, L, 1]
        return {
            "cls_logits": unflatten_levels(cls, shapes),
            "bbox_reg": unflatten_levels(reg, shapes),
            "centerness": unflatten_levels(ctr, shapes),
        }

    # -- loss -------------------------------------------------------------------------------

    def loss(self, outputs: dict, targets: Targets) -> dict[str, torch.Tensor]:
        """FCOS loss: focal / N_pos + centerness-weighted GIoU / Σ centerness + BCE / N_pos.

        Returns ``loss_cls``, ``loss_box_reg``, ``loss_centerness`` and their sum ``loss``.
        """
        cls_maps = outputs["cls_logits"]
        batch = cls_maps[0].shape[0]
        check_targets(targets, self.num_classes, batch)
        shapes = [tuple(m.shape[-2:]) for m in cls_maps]
        tgt = self.prepare_targets(targets, shapes, cls_maps[0].device)

        # Losses in float32 even under autocast: focal and log terms underflow in half precision.
        cls = flatten_levels(cls_maps).float()  # [B, L, K]
        reg = flatten_levels(outputs["bbox_reg"]).float()  # [B, L, 4]
        ctr = flatten_levels(outputs["centerness"]).squeeze(-1).float()  # [B, L]
        labels = tgt["labels"]  # [B, L]
        pos = labels < self.num_classes  # [B, L]

        num_pos = reduce_mean(pos.sum().to(cls.dtype)).clamp(min=1.0)
        onehot = F.one_hot(labels, self.num_classes + 1)[..., : self.num_classes].to(cls.dtype)  # [B, L, K]
        loss_cls = focal_loss_sum(cls, onehot, self.focal_alpha, self.focal_gamma) / num_pos

        reg_p, reg_t = reg[pos], tgt["reg"][pos]  # [P, 4]
        ctr_t = centerness_target(reg_t)  # [P]
        ctr_norm = reduce_mean(ctr_t.sum()).clamp(min=1e-6)
        per_box = giou_loss_ltrb(reg_p, reg_t) if self.reg_loss == "giou" else iou_loss_ltrb(reg_p, reg_t)
        loss_reg = (per_box * ctr_t).sum() / ctr_norm
        loss_ctr = F.binary_cross_entropy_with_logits(ctr[pos], ctr_t, reduction="sum") / num_pos
        # With no positives the sums above are 0 but still connected to the graph, so DDP sees
        # gradients for every parameter.
        return {
            "loss_cls": loss_cls,
            "loss_box_reg": loss_reg,
            "loss_centerness": loss_ctr,
            "loss": loss_cls + loss_reg + loss_ctr,
        }

    # -- decode -----------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, outputs: dict, image_sizes: Sequence[tuple[int, int]]) -> Detections:
        """Detections per image: candidates with cls > ``score_thresh``, top-k per level by
        cls·centerness, boxes clipped to ``image_sizes`` ((H, W) per image), class-wise NMS,
        ``detections_per_img`` best. Vectorised over the batch; one NMS call for all images.
        """
        cls_maps, reg_maps, ctr_maps = outputs["cls_logits"], outputs["bbox_reg"], outputs["centerness"]
        batch, num_classes = cls_maps[0].shape[:2]
        if len(image_sizes) != batch:
            raise ValueError(f"decode got {len(image_sizes)} image sizes for a batch of {batch}")
        device = cls_maps[0].device
        locations = level_locations([tuple(m.shape[-2:]) for m in cls_maps], self.strides, device)
        logit_thresh = logit(self.score_thresh)
        topk = self.topk_candidates

        boxes_all, scores_all, labels_all, imgs_all = [], [], [], []
        for cls_l, reg_l, ctr_l, locs, stride in zip(cls_maps, reg_maps, ctr_maps, locations, self.strides):
            h, w = cls_l.shape[-2:]
            cand = cls_l > logit_thresh  # [B, K, H, W]
            if int(cand.flatten(1).sum(1).max()) > topk:
                # Too many candidates in some image: keep its top-k by cls·centerness.
                score_map = (cls_l.sigmoid() * ctr_l.sigmoid()).masked_fill_(~cand, -1.0)  # [B, K, H, W]
                top, flat = score_map.flatten(1).topk(topk, dim=1, sorted=False)  # [B, k]
                keep = top > 0  # images with fewer candidates pad with -1
                score, flat = top[keep], flat[keep]  # [P]
                img = torch.arange(batch, device=device)[:, None].expand(-1, topk)[keep]
                lab = torch.div(flat, h * w, rounding_mode="floor")
                ys = torch.div(flat % (h * w), w, rounding_mode="floor")
                xs = flat % w
            else:
                img, lab, ys, xs = torch.nonzero(cand, as_tuple=True)  # [P] each
                if img.numel() == 0:
                    continue
                score = cls_l[img, lab, ys, xs].sigmoid() * ctr_l[img, 0, ys, xs].sigmoid()  # [P]
            ltrb = reg_l[img, :, ys, xs]  # [P, 4]
            if self.norm_reg_targets:
                ltrb = ltrb * stride
            boxes_all.append(distances_to_boxes(locs[ys * w + xs], ltrb))  # [P, 4]
            scores_all.append(score)
            labels_all.append(lab)
            imgs_all.append(img)

        if not boxes_all:
            return empty_detections(batch, cls_maps[0])
        imgs = torch.cat(imgs_all)  # [P]
        scores = torch.cat(scores_all)  # [P]
        if self.score_sqrt:
            scores = scores.sqrt()
        boxes = clip_boxes_per_image(torch.cat(boxes_all), imgs, image_sizes)  # [P, 4]
        return nms_per_image(
            boxes, scores, torch.cat(labels_all), imgs, batch_size=batch, num_classes=num_classes,
            iou_threshold=self.nms_thresh, max_per_image=self.detections_per_img, method=self.nms_method,
        )
