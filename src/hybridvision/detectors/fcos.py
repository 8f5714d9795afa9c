"""FCOS: Fully Convolutional One-Stage object detection (Tian et al., ICCV 2019), and NL-FCOS.

Backbone (ResNet C3–C5) → neck (FPN P3–P7 or PANet N3–N7) → one head shared by every level:

* two towers of ``num_convs`` × (3×3 conv, GroupNorm(32), ReLU), one for classification and one
  for regression; optional attention block (non-local, seed 000's NL-FCOS) at the start of the
  cls and/or reg tower, one module shared across levels;
* cls logits (K, bias prior 0.01), box regression (l, t, r, b ≥ 0 through a learnable per-level
  scale) and centerness (1, on the regression tower: the "improved" FCOS).

Outputs of ``FCOS.forward(images)`` (same in train and eval):

* ``cls_logits``: ``list[[B, K, H_l, W_l]]`` — per-class logits;
* ``bbox_reg``: ``list[[B, 4, H_l, W_l]]`` — distances (l, t, r, b) from the location to the box
  sides, ≥ 0, in units of the level's stride when ``norm_reg_targets`` (default) else in pixels;
* ``centerness``: ``list[[B, 1, H_l, W_l]]`` — centerness logits.

Symbols: B images, K classes, L locations over all levels (Σ_l H_l·W_l), M ground-truth boxes of
one image, s stride of a level. A location of a level with stride s at feature cell (x, y) sits at
pixel (⌊s/2⌋ + x·s, ⌊s/2⌋ + y·s).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import batched_nms, generalized_box_iou_loss, sigmoid_focal_loss

from hybridvision.backbones.resnet import RESNET_DEPTHS, ResNet
from hybridvision.detectors.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Detections,
    Detector,
    Targets,
    check_targets,
    reduce_mean,
)
from hybridvision.errors import UserInputError
from hybridvision.layers.registry import create_attn
from hybridvision.necks.fpn import FPN
from hybridvision.necks.panet import PANet
from hybridvision.registry import register_model

__all__ = [
    "FCOS",
    "FCOSHead",
    "assign_targets",
    "centerness_target",
    "compute_locations",
    "default_size_ranges",
    "build_fcos",
]

INF = float("inf")
# Tian et al. Sec. 3.2: max(l, t, r, b) of a positive location must lie in its level's range.
FCOS_SIZE_RANGES: tuple[tuple[float, float], ...] = (
    (0, 64), (64, 128), (128, 256), (256, 512), (512, INF),
)


def default_size_ranges(num_levels: int) -> list[tuple[float, float]]:
    """The paper's ranges for the first ``num_levels`` levels, the last one open-ended."""
    if not 1 <= num_levels <= len(FCOS_SIZE_RANGES):
        raise UserInputError(f"FCOS default size ranges exist for 1..5 levels, got {num_levels}")
    ranges = list(FCOS_SIZE_RANGES[:num_levels])
    ranges[-1] = (ranges[-1][0], INF)
    return ranges


# ---------------------------------------------------------------------------------------------
# Geometry (pure functions)
# ---------------------------------------------------------------------------------------------


def compute_locations(
    shapes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Pixel coordinates (x, y) of every feature cell, row-major, one ``[H_l·W_l, 2]`` per level."""
    out = []
    for (h, w), s in zip(shapes, strides):
        xs = torch.arange(w, device=device, dtype=dtype) * s + s // 2  # [W]
        ys = torch.arange(h, device=device, dtype=dtype) * s + s // 2  # [H]
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # [H, W]
        out.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))  # [H·W, 2]
    return out


def box_ltrb(locations: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Distances from each location to each box's sides: ``[L, 2] x [M, 4] -> [L, M, 4]``.

    ``boxes`` may also be ``[L, M, 4]`` (one box per location and column, e.g. centre regions).
    """
    x, y = locations[:, 0, None], locations[:, 1, None]  # [L, 1]
    return torch.stack(
        [x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y], dim=-1
    )  # [L, M, 4]


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
    ltrb = box_ltrb(locations, boxes)  # [L, M, 4]
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
        inside = box_ltrb(locations, centre_box).amin(dim=-1) > 0  # [L, M]
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


def ltrb_to_boxes(ltrb: torch.Tensor) -> torch.Tensor:
    """Distances around a location at the origin as an xyxy box: ``[..., 4] -> [..., 4]``."""
    return torch.cat([-ltrb[..., :2], ltrb[..., 2:]], dim=-1)


def iou_loss_ltrb(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """UnitBox IoU loss −ln IoU for boxes given as distances from the same location: ``[N]``."""
    area_p = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    area_t = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    w = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 2], target[:, 2])
    h = torch.minimum(pred[:, 1], target[:, 1]) + torch.minimum(pred[:, 3], target[:, 3])
    inter = w.clamp(min=0) * h.clamp(min=0)
    iou = inter / (area_p + area_t - inter).clamp(min=eps)
    return -torch.log(iou.clamp(min=eps))


def _gn_groups(channels: int, max_groups: int) -> int:
    # GroupNorm needs groups | channels; small presets (e.g. 48 channels) take the largest divisor.
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


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
        gn_groups: GroupNorm groups (32; lowered to a divisor of C for small presets).
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
        groups = _gn_groups(c, gn_groups)

        def tower() -> nn.Sequential:
            layers: list[nn.Module] = []
            for _ in range(num_convs):
                layers += [nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(groups, c), nn.ReLU(inplace=True)]
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


class FCOS(Detector):
    """FCOS detector: ``backbone`` → ``neck`` → :class:`FCOSHead`, with loss and decode.

    Args:
        backbone: returns ``list[Tensor]`` (e.g. C3–C5), the neck's inputs.
        neck: maps them to the pyramid; must expose ``out_channels`` and ``strides``.
        num_classes: K.
        size_ranges: per-level (low, high) ranges of max(l, t, r, b); default: the paper's.
        center_sampling_radius: in strides (1.5); 0 disables centre sampling.
        reg_loss: ``"giou"`` (GIoU, torchvision) or ``"iou"`` (UnitBox −ln IoU).
        focal_alpha, focal_gamma: sigmoid focal loss parameters (0.25, 2).
        score_thresh: candidates need cls probability > this (0.05).
        score_sqrt: final score √(cls·centerness) (True) or cls·centerness.
        topk_candidates: candidates kept per level and image before NMS (1000).
        nms_thresh: class-wise NMS IoU threshold (0.6).
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
        size_ranges: Sequence[tuple[float, float]] | None = None,
        center_sampling_radius: float = 1.5,
        reg_loss: str = "giou",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        score_thresh: float = 0.05,
        score_sqrt: bool = True,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.6,
        detections_per_img: int = 100,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        **head_kwargs: Any,
    ) -> None:
        super().__init__(num_classes, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.backbone = backbone
        self.neck = neck
        self.strides: list[int] = list(neck.strides)
        num_levels = len(self.strides)
        self.head = FCOSHead(neck.out_channels, num_classes, num_levels, **head_kwargs)
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
        self.score_thresh = score_thresh
        self.score_sqrt = score_sqrt
        self.topk_candidates = topk_candidates
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.size_divisible = 32  # stride-2 convs pad, so P6/P7 need no coarser multiple

    # -- forward ----------------------------------------------------------------------------

    def forward_normalized(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        feats = self.neck(self.backbone(x))  # list of [B, C, H/s, W/s]
        return self.head(feats)  # type: ignore[return-value]

    # -- targets ----------------------------------------------------------------------------

    def _level_tensors(
        self, shapes: Sequence[tuple[int, int]], device: torch.device
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        locations = compute_locations(shapes, self.strides, device)
        counts = torch.tensor([h * w for h, w in shapes], device=device)
        per_level_strides = torch.tensor(self.strides, dtype=torch.float32, device=device)
        per_level_ranges = torch.tensor(self.size_ranges, dtype=torch.float32, device=device)
        strides = torch.repeat_interleave(per_level_strides, counts)  # [L]
        ranges = torch.repeat_interleave(per_level_ranges, counts, dim=0)  # [L, 2]
        return locations, strides, ranges

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
        locations, strides, ranges = self._level_tensors(shapes, device)
        locs = torch.cat(locations)  # [L, 2]
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

    # -- loss -------------------------------------------------------------------------------

    @staticmethod
    def _flatten(maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """``list[[B, D, H_l, W_l]] -> [B, L, D]`` (level by level, row-major)."""
        b, d = maps[0].shape[:2]
        return torch.cat([m.permute(0, 2, 3, 1).reshape(b, -1, d) for m in maps], dim=1)

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
        cls = self._flatten(cls_maps).float()  # [B, L, K]
        reg = self._flatten(outputs["bbox_reg"]).float()  # [B, L, 4]
        ctr = self._flatten(outputs["centerness"]).squeeze(-1).float()  # [B, L]
        labels = tgt["labels"]  # [B, L]
        pos = labels < self.num_classes  # [B, L]

        num_pos = reduce_mean(pos.sum().to(cls.dtype)).clamp(min=1.0)
        onehot = F.one_hot(labels, self.num_classes + 1)[..., : self.num_classes].to(cls.dtype)  # [B, L, K]
        loss_cls = sigmoid_focal_loss(
            cls, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
        ) / num_pos

        reg_p, reg_t = reg[pos], tgt["reg"][pos]  # [P, 4]
        ctr_t = centerness_target(reg_t)  # [P]
        ctr_norm = reduce_mean(ctr_t.sum()).clamp(min=1e-6)
        if self.reg_loss == "giou":
            per_box = generalized_box_iou_loss(ltrb_to_boxes(reg_p), ltrb_to_boxes(reg_t), reduction="none")
        else:
            per_box = iou_loss_ltrb(reg_p, reg_t)
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
        shapes = [tuple(m.shape[-2:]) for m in cls_maps]
        locations = compute_locations(shapes, self.strides, device)
        # sigmoid(z) > t  <=>  z > logit(t): threshold the raw logits, so only the few
        # candidates ever go through sigmoid, gather and top-k (the dense maps are read once).
        t = self.score_thresh
        logit_thresh = -math.inf if t <= 0 else (math.inf if t >= 1 else math.log(t / (1 - t)))
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
            xy = locs[ys * w + xs]  # [P, 2]
            boxes_all.append(torch.cat([xy - ltrb[:, :2], xy + ltrb[:, 2:]], dim=1))  # [P, 4]
            scores_all.append(score)
            labels_all.append(lab)
            imgs_all.append(img)

        if not boxes_all:
            empty = cls_maps[0].new_zeros((0, 4))
            no_labels = torch.zeros(0, dtype=torch.long, device=device)
            return [{"boxes": empty, "scores": empty[:, 0], "labels": no_labels} for _ in range(batch)]
        boxes = torch.cat(boxes_all)  # [P, 4]
        scores = torch.cat(scores_all)  # [P]
        labels = torch.cat(labels_all)  # [P]
        imgs = torch.cat(imgs_all)  # [P]
        if self.score_sqrt:
            scores = scores.sqrt()

        # Clip to each image's true size (the batch is padded bottom/right).
        hw_max = torch.tensor(image_sizes, dtype=boxes.dtype, device=device)[imgs]  # [P, 2] (H, W)
        boxes = torch.stack(
            [
                boxes[:, 0].clamp(min=0).minimum(hw_max[:, 1]),
                boxes[:, 1].clamp(min=0).minimum(hw_max[:, 0]),
                boxes[:, 2].clamp(min=0).minimum(hw_max[:, 1]),
                boxes[:, 3].clamp(min=0).minimum(hw_max[:, 0]),
            ],
            dim=1,
        )

        # One NMS for the whole batch: boxes of different images or classes never suppress
        # each other because their group ids differ.
        keep = batched_nms(boxes, scores, imgs * num_classes + labels, self.nms_thresh)  # by score, desc
        order = torch.sort(imgs[keep], stable=True).indices  # group by image, scores stay desc
        keep = keep[order]
        counts = torch.bincount(imgs[keep], minlength=batch)  # [B]
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(keep.numel(), device=device) - torch.repeat_interleave(starts, counts)
        keep = keep[rank < self.detections_per_img]
        per_img = counts.clamp(max=self.detections_per_img).tolist()
        return [
            {"boxes": b, "scores": s, "labels": lab}
            for b, s, lab in zip(
                boxes[keep].split(per_img), scores[keep].split(per_img), labels[keep].split(per_img)
            )
        ]


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


def build_fcos(
    *,
    num_classes: int,
    depth: int = 50,
    width: float = 1.0,
    neck: str = "fpn",
    neck_channels: int = 256,
    num_levels: int = 5,
    extra_from: str = "p5",
    backbone_preact: bool = False,
    backbone_norm: Callable[[int], nn.Module] | None = None,
    backbone_attn: str | None = None,
    backbone_attn_at: Sequence[tuple[int, int]] = (),
    backbone_attn_kwargs: dict[str, Any] | None = None,
    **fcos_kwargs: Any,
) -> FCOS:
    """Build an FCOS from a ResNet-``depth`` (C3–C5), an FPN or PANet, and FCOS options.

    Args:
        num_classes: K.
        depth: 18, 26, 34, 50 or 101.
        width: ResNet channel multiplier.
        neck: ``"fpn"`` or ``"panet"``.
        neck_channels: channels of every pyramid level.
        num_levels: 5 (P3–P7) or 3 (P3–P5).
        extra_from: FPN's P6 source, ``"p5"`` or ``"c5"`` (PANet always builds N6 from N5).
        backbone_preact, backbone_norm: ResNet block form and norm layer (BatchNorm2d).
        backbone_attn, backbone_attn_at, backbone_attn_kwargs: attention inside the ResNet
            (see :class:`~hybridvision.backbones.resnet.ResNet`).
        **fcos_kwargs: :class:`FCOS` and :class:`FCOSHead` options.
    """
    if depth not in RESNET_DEPTHS:
        raise UserInputError(f"FCOS depth={depth} is not a ResNet depth; use one of {sorted(RESNET_DEPTHS)}")
    if num_levels not in (3, 5):
        raise UserInputError(f"FCOS num_levels={num_levels} must be 3 (P3–P5) or 5 (P3–P7)")
    block, layers = RESNET_DEPTHS[depth]
    backbone = ResNet(
        block,  # type: ignore[arg-type]
        layers,
        width=width,
        out_indices=(2, 3, 4),
        preact=backbone_preact,
        norm_layer=backbone_norm or nn.BatchNorm2d,
        attn=backbone_attn,
        attn_at=backbone_attn_at,
        attn_kwargs=backbone_attn_kwargs,
    )
    chans = [f["channels"] for f in backbone.feature_info]
    strides = [f["stride"] for f in backbone.feature_info]
    if neck == "fpn":
        neck_mod: nn.Module = FPN(
            chans, strides, neck_channels, num_extra=num_levels - 3, extra_from=extra_from
        )
    elif neck == "panet":
        neck_mod = PANet(chans, strides, neck_channels, num_extra=num_levels - 3)
    else:
        raise UserInputError(f"FCOS neck={neck!r} is unknown; use 'fpn' or 'panet'")
    return FCOS(backbone, neck_mod, num_classes, **fcos_kwargs)


def _merge(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **overrides}


@register_model(task="detection")
def fcos_r18_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """FCOS, ResNet-18, FPN P3–P7, 256 channels. ``kwargs`` go to :func:`build_fcos`."""
    return build_fcos(**_merge(dict(num_classes=num_classes, depth=18), kwargs))


@register_model(task="detection")
def fcos_r50_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """FCOS, ResNet-50, FPN P3–P7 (Tian et al. 2019). ``kwargs`` go to :func:`build_fcos`."""
    return build_fcos(**_merge(dict(num_classes=num_classes, depth=50), kwargs))


@register_model(task="detection")
def fcos_r101_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """FCOS, ResNet-101, FPN P3–P7. ``kwargs`` go to :func:`build_fcos`."""
    return build_fcos(**_merge(dict(num_classes=num_classes, depth=101), kwargs))


# The demo preset: trains on the built-in digits at ~128×128 in minutes on 2 CPU cores.
DEMO_SIZE_RANGES = ((0, 32), (32, 64), (64, INF))


@register_model(task="detection")
def fcos_demo(
    *,
    num_classes: int = 10,
    depth: int = 18,
    width: float = 0.25,
    neck: str = "fpn",
    neck_channels: int = 64,
    num_levels: int = 3,
    num_convs: int = 2,
    size_ranges: Sequence[tuple[float, float]] | None = DEMO_SIZE_RANGES,
    center_sampling_radius: float = 1.5,
    **kwargs: Any,
) -> FCOS:
    """Tiny CPU FCOS: ResNet-18 at width 0.25 (16/32/64/128 ch), FPN 64 ch, 2-conv towers, P3–P5.

    Size ranges are scaled for ~128 px images; with ``num_levels=5`` and no explicit
    ``size_ranges`` the paper's ranges are used. Every knob is a keyword argument.
    """
    if num_levels != 3 and size_ranges is DEMO_SIZE_RANGES:
        size_ranges = None
    return build_fcos(
        **_merge(
            dict(
                num_classes=num_classes,
                depth=depth,
                width=width,
                neck=neck,
                neck_channels=neck_channels,
                num_levels=num_levels,
                num_convs=num_convs,
                size_ranges=size_ranges,
                center_sampling_radius=center_sampling_radius,
            ),
            kwargs,
        )
    )


# ---------------------------------------------------------------------------------------------
# NL-FCOS (seed 000, Sec. 3.3.3): a non-local block at the start of the cls and/or reg tower,
# shared across levels; NL-FCOS-PANet adds the bottom-up path. The block defaults to the
# thesis's own form (``nonlocal_thesis_a``); pass ``head_attn="nonlocal"`` for Wang et al.'s.
# ---------------------------------------------------------------------------------------------

NL_HEAD_ATTN = "nonlocal_thesis_a"


def _nl(branch: str, overrides: dict[str, Any], **defaults: Any) -> FCOS:
    return build_fcos(
        **_merge(dict(head_attn=NL_HEAD_ATTN, head_attn_branch=branch, **defaults), overrides)
    )


@register_model(task="detection")
def nl_fcos_r50_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS: ResNet-50 FPN, a non-local block at the start of both towers."""
    return _nl("both", kwargs, num_classes=num_classes, depth=50)


@register_model(task="detection")
def nl_fcos_r50_fpn_cls(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS-cls: the non-local block only at the start of the classification tower."""
    return _nl("cls", kwargs, num_classes=num_classes, depth=50)


@register_model(task="detection")
def nl_fcos_r50_fpn_reg(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS-reg: the non-local block only at the start of the regression tower."""
    return _nl("reg", kwargs, num_classes=num_classes, depth=50)


@register_model(task="detection")
def nl_fcos_r101_fpn(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS-101: ResNet-101 FPN, non-local blocks on both towers."""
    return _nl("both", kwargs, num_classes=num_classes, depth=101)


@register_model(task="detection")
def nl_fcos_r50_panet(*, num_classes: int = 80, **kwargs: Any) -> FCOS:
    """NL-FCOS-PANet: ResNet-50, FPN + PANet bottom-up path (N3–N7), NL on both towers."""
    return _nl("both", kwargs, num_classes=num_classes, depth=50, neck="panet")


# Small CPU analogues of the study's rows. They start from the demo's settings but are frozen
# here, so retuning ``fcos_demo`` does not silently change the study.
SMALL_FCOS: dict[str, Any] = dict(
    depth=18, width=0.25, neck_channels=64, num_levels=3, num_convs=2, size_ranges=DEMO_SIZE_RANGES
)


@register_model(task="detection")
def fcos_small(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small FCOS baseline (ResNet-18 ×0.25, FPN 64 ch, P3–P5, 2-conv towers) for CPU studies."""
    return build_fcos(**_merge(dict(num_classes=num_classes, **SMALL_FCOS), kwargs))


@register_model(task="detection")
def nl_fcos_small(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small NL-FCOS (non-local on both towers)."""
    return _nl("both", kwargs, num_classes=num_classes, **SMALL_FCOS)


@register_model(task="detection")
def nl_fcos_small_cls(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small NL-FCOS-cls."""
    return _nl("cls", kwargs, num_classes=num_classes, **SMALL_FCOS)


@register_model(task="detection")
def nl_fcos_small_reg(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small NL-FCOS-reg."""
    return _nl("reg", kwargs, num_classes=num_classes, **SMALL_FCOS)


@register_model(task="detection")
def nl_fcos_small_panet(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small NL-FCOS-PANet."""
    return _nl("both", kwargs, num_classes=num_classes, **{**SMALL_FCOS, "neck": "panet"})


@register_model(task="detection")
def nl_fcos_small_deep(*, num_classes: int = 10, **kwargs: Any) -> FCOS:
    """Small analogue of NL-FCOS-101: the deeper ResNet-34 ×0.25 backbone, NL on both towers."""
    return _nl("both", kwargs, num_classes=num_classes, **{**SMALL_FCOS, "depth": 34})
