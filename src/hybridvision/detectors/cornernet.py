"""CornerNet: objects as paired keypoints (Law & Deng, ECCV 2018), and NL-CornerNet (thesis A).

Each box is its top-left and bottom-right corner. Per corner type a prediction module (two 3×3
conv-BN-ReLU branches → corner pooling: *top* + *left* pool for top-left corners, *bottom* +
*right* for bottom-right → sum → 3×3 conv-BN, plus a 1×1 conv-BN skip → ReLU → 3×3 conv-BN-ReLU)
feeds three heads: a class heatmap (K), a 1-D embedding ("tag") that pairs the two corners of one
object, and a sub-cell offset (2). NL-CornerNet (thesis A) replaces each corner pooling by a
non-local block (``pool="nl"``); ``pool="conv"`` replaces it by a plain 3×3 conv.

Every stack of the hourglass backbone has its own modules and heads (intermediate supervision:
the loss sums over stacks); decoding reads the last stack. CornerFCOS (thesis A's hybrid) is the
same detector on an FCOS backbone and FPN: one module pair shared by every pyramid level, targets
on every level (``level_ranges=None``: each level learns every box) or on the level whose size
range holds half the box's larger side (FCOS's max(l, t, r, b) at the box's centre), and decoding
from every level.

Outputs of ``CornerNet.forward(images)`` (same in train and eval), one entry per stack (or
pyramid level) at its stride s: ``tl_heat`` / ``br_heat`` ``list[[B, K, H/s, W/s]]`` (logits),
``tl_tag`` / ``br_tag`` ``list[[B, 1, H/s, W/s]]``, ``tl_offset`` / ``br_offset``
``list[[B, 2, H/s, W/s]]``.

Symbols: B images, K classes, M objects of the batch, k corners kept per type and image.
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
from hybridvision.losses import heatmap_focal_loss, pull_push_loss
from hybridvision.ops.corner_pool import cascade_corner_pool, center_pool, corner_pool
from hybridvision.ops.heatmap import draw_gaussians, gather_at, gaussian_radius, heatmap_peaks, topk_peaks
from hybridvision.ops.postprocess import clip_boxes_per_image, empty_detections, nms_per_image
from hybridvision.ops.triplets import central_region_check

__all__ = ["CornerNet", "CornerModule", "StackNeck", "CORNER_POOLS"]

CORNER_POOLS = ("corner", "nl", "conv", "cascade")
_CORNERS = {"tl": ("top", "left"), "br": ("bottom", "right")}
_HEADS = {"tl": ("heat", "tag", "offset"), "br": ("heat", "tag", "offset"), "ct": ("heat", "offset")}


def _conv_bn_relu(cin: int, cout: int, relu: bool = True, stride: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class StackNeck(nn.Module):
    """The identity neck of a stacked backbone: passes each stack's stride-4 output through."""

    def __init__(self, channels: int, stride: int = 4, stacks: int = 1) -> None:
        super().__init__()
        self.out_channels = channels
        self.strides = [stride] * stacks

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return list(features)


class CornerModule(nn.Module):
    """The prediction module of one corner type and one stack, with its three heads.

    Args:
        channels: C of the backbone output.
        num_classes: K.
        corner: ``"tl"`` (top + left pooling), ``"br"`` (bottom + right), or ``"ct"`` — the
            centre keypoint of CenterNet triplets: centre pooling, heads heat and offset only.
        pool: ``"corner"`` (corner pooling), ``"nl"`` (a non-local block replaces each pooling:
            NL-CornerNet), ``"conv"`` (a 3×3 conv replaces it) or ``"cascade"`` (cascade corner
            pooling, Duan et al. 2019: two more 3×3 conv-BN-ReLU branches look along the edges);
            ignored for ``"ct"``.
        pool_channels: channels of the two branches (128).
        pool_stride: 1, or 2 for thesis A's "-64" size reduction: the two branches convolve with
            stride 2, so the pooling runs at half the map's resolution (64² for a 128² map), and
            the pooled map is upsampled back (nearest) before the merge.
        attn, attn_kwargs: the non-local block of ``pool="nl"`` (its own ``reduce`` option is
            NL-CornerNet-64's form: the reduction inside the block).
        prior_prob: initial corner probability (0.1 → heatmap bias −2.19).
    """

    def __init__(self, channels: int, num_classes: int, corner: str, *, pool: str = "corner",
                 pool_channels: int = 128, pool_stride: int = 1, attn: str = "nonlocal_thesis_a",
                 attn_kwargs: dict[str, Any] | None = None, prior_prob: float = 0.1) -> None:
        super().__init__()
        if pool not in CORNER_POOLS:
            raise UserInputError(f"CornerNet pool={pool!r} must be one of {', '.join(CORNER_POOLS)}")
        if pool_stride not in (1, 2):
            raise UserInputError(f"CornerNet pool_stride={pool_stride!r} must be 1 or 2 (the '-64' reduction)")
        self.directions = _CORNERS.get(corner, ())
        self.pool = "center" if corner == "ct" else pool
        self.pool_stride = pool_stride
        self.branch1 = _conv_bn_relu(channels, pool_channels, stride=pool_stride)
        self.branch2 = _conv_bn_relu(channels, pool_channels, stride=pool_stride)
        if self.pool == "cascade":
            self.look1 = _conv_bn_relu(channels, pool_channels, stride=pool_stride)
            self.look2 = _conv_bn_relu(channels, pool_channels, stride=pool_stride)
        if self.pool == "nl":
            self.replace1: nn.Module = create_attn(attn, pool_channels, **dict(attn_kwargs or {}))
            self.replace2: nn.Module = create_attn(attn, pool_channels, **dict(attn_kwargs or {}))
        elif self.pool == "conv":
            self.replace1 = nn.Conv2d(pool_channels, pool_channels, 3, padding=1)
            self.replace2 = nn.Conv2d(pool_channels, pool_channels, 3, padding=1)
        self.merge = _conv_bn_relu(pool_channels, channels, relu=False)
        self.skip = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.out = _conv_bn_relu(channels, channels)
        self.heads = nn.ModuleDict()
        sizes = {"heat": num_classes, "tag": 1, "offset": 2}
        for name in _HEADS[corner]:
            out = sizes[name]
            head = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(channels, out, 1))
            if name == "heat":
                nn.init.constant_(head[-1].bias, -math.log((1 - prior_prob) / prior_prob))
            self.heads[name] = head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a, b = self.branch1(x), self.branch2(x)  # [B, 128, H/s, W/s] each (s = pool_stride)
        if self.pool == "corner":
            pooled = corner_pool(a, self.directions[0]) + corner_pool(b, self.directions[1])
        elif self.pool == "cascade":
            d0, d1 = self.directions
            pooled = cascade_corner_pool(a, self.look1(x), d0, d1) + cascade_corner_pool(b, self.look2(x), d1, d0)
        elif self.pool == "center":
            pooled = center_pool(a, b)
        else:
            pooled = self.replace1(a) + self.replace2(b)
        if self.pool_stride > 1:
            pooled = F.interpolate(pooled, size=x.shape[-2:], mode="nearest")  # back to [B, 128, H, W]
        y = self.out(F.relu(self.merge(pooled) + self.skip(x)))  # [B, C, H, W]
        return {name: head(y) for name, head in self.heads.items()}


class CornerHead(nn.Module):
    """A top-left and a bottom-right :class:`CornerModule` for each stack, or one pair shared by
    every input (``shared=True``: CornerFCOS's pyramid levels)."""

    def __init__(self, channels: int, num_classes: int, entries: int, *, shared: bool = False,
                 centers: bool = False, **module_kwargs: Any) -> None:
        super().__init__()
        n = 1 if shared else entries
        self.shared = shared
        self.kinds = ["tl", "br", *(["ct"] if centers else [])]
        self.modules_by_kind = nn.ModuleDict({
            kind: nn.ModuleList(CornerModule(channels, num_classes, kind, **module_kwargs) for _ in range(n))
            for kind in self.kinds})

    @property
    def tl(self) -> nn.ModuleList:
        return self.modules_by_kind["tl"]

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        out: dict[str, list[torch.Tensor]] = {f"{c}_{k}": [] for c in self.kinds for k in _HEADS[c]}
        for i, feat in enumerate(features):
            for kind in self.kinds:
                module = self.modules_by_kind[kind][0 if self.shared else i]
                for key, value in module(feat).items():
                    out[f"{kind}_{key}"].append(value)
        return out


class CornerNet(DenseDetector):
    """CornerNet on the dense-detector core: a stacked backbone → :class:`StackNeck` →
    :class:`CornerHead` (or, for CornerFCOS, a backbone → FPN ``neck`` → a shared head).

    Args:
        backbone: returns one stride-4 map per stack and exposes ``feature_info`` (and
            ``size_divisible``, the input multiple it needs).
        num_classes: K.
        neck: a pyramid neck (``out_channels``, ``strides``); None: :class:`StackNeck`.
        shared_head: one module pair for every neck output (CornerFCOS) instead of one per stack.
        level_ranges: per neck output, the (low, high) range of half a box's larger side that it
            learns (CornerFCOS "normal" targets: FCOS's size ranges on FCOS's regression target
            max(l, t, r, b) at the box's centre); None: every output learns every box (stacks;
            CornerFCOS "all"). The same ranges on the whole larger side (FCOS's target at the
            corner) trained worse on the built-in amounts (README, ``cornerfcos`` study).
        decode_all: decode every output and merge by NMS (CornerFCOS); False: the last only.
        center_keypoints: CenterNet keypoint triplets (Duan et al. 2019): a centre heatmap and
            offset (centre pooling); a decoded box is kept only when one of the ``center_topk``
            best centre keypoints of its class lies in its central region
            (:func:`~hybridvision.ops.triplets.central_region_check`), scored by the three.
        pool, pool_channels, pool_stride, attn, attn_kwargs: the prediction modules' pooling
            (:class:`CornerModule`).
        min_overlap: of the corner Gaussians' radius (0.3, CornerNet's config).
        radius_form: ``"corrected"`` or ``"original"`` (:func:`~hybridvision.ops.gaussian_radius`).
        pull_weight, push_weight, offset_weight: loss weights (0.1, 0.1, 1).
        topk: corners kept per type and image (100; at least ``detections_per_img``).
        tag_thresh: largest tag distance of a pair (0.5).
        score_thresh: pairs need a score (mean of the corner scores) > this (0.01).
        nms_method, nms_thresh: NMS of the pairs (Soft-NMS, Gaussian, as the paper; 0.5).
        detections_per_img: 100.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        neck: nn.Module | None = None,
        shared_head: bool = False,
        level_ranges: Sequence[tuple[float, float]] | None = None,
        decode_all: bool = False,
        center_keypoints: bool = False,
        center_topk: int = 70,
        pool: str = "corner",
        pool_channels: int = 128,
        pool_stride: int = 1,
        attn: str = "nonlocal_thesis_a",
        attn_kwargs: dict[str, Any] | None = None,
        min_overlap: float = 0.3,
        radius_form: str = "corrected",
        pull_weight: float = 0.1,
        push_weight: float = 0.1,
        offset_weight: float = 1.0,
        topk: int = 100,
        tag_thresh: float = 0.5,
        score_thresh: float = 0.01,
        nms_method: str = "soft_gaussian",
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if neck is None:
            info = backbone.feature_info
            neck = StackNeck(info[-1]["channels"], info[-1]["stride"], len(info))
        head = CornerHead(neck.out_channels, num_classes, len(neck.strides), shared=shared_head, pool=pool,
                          centers=center_keypoints, pool_channels=pool_channels, pool_stride=pool_stride, attn=attn,
                          attn_kwargs=attn_kwargs)
        post = PostProcess(score_thresh=score_thresh, topk_candidates=topk, nms_thresh=nms_thresh,
                           nms_method=nms_method, detections_per_img=detections_per_img)
        super().__init__(backbone, neck, head, num_classes, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         postprocess=post)
        if level_ranges is not None and len(level_ranges) != len(self.strides):
            raise UserInputError(f"CornerNet level_ranges has {len(level_ranges)} entries for "
                                 f"{len(self.strides)} outputs; give one (low, high) per level")
        self.level_ranges = None if level_ranges is None else [(float(a), float(b)) for a, b in level_ranges]
        self.decode_all = decode_all
        self.center_keypoints = center_keypoints
        self.center_topk = center_topk
        self.kinds = ["tl", "br", *(["ct"] if center_keypoints else [])]
        if radius_form not in ("corrected", "original"):
            raise UserInputError(f"CornerNet radius_form={radius_form!r} must be 'corrected' or 'original'")
        self.min_overlap = min_overlap
        self.radius_form = radius_form
        self.pull_weight, self.push_weight, self.offset_weight = pull_weight, push_weight, offset_weight
        self.tag_thresh = tag_thresh

    topk = postprocess_alias("topk_candidates")  # corners kept per type and image

    # -- targets ----------------------------------------------------------------------------

    @torch.no_grad()
    def prepare_targets(self, targets: Targets, shape: tuple[int, int], device: torch.device | None = None,
                        *, level: int = 0) -> dict[str, torch.Tensor]:
        """Corner targets on output ``level``'s ``shape`` = (H, W) map: ``tl_heat`` / ``br_heat``
        ``[B, K, H, W]`` and per object it learns ``image``, ``labels`` ``[M]``, ``tl_cell`` /
        ``br_cell`` ``[M, 2]`` (x, y) and ``tl_offset`` / ``br_offset`` ``[M, 2]``."""
        stride = self.strides[level]
        size_range = None if self.level_ranges is None else self.level_ranges[level]
        device = device or (targets[0]["boxes"].device if targets else torch.device("cpu"))
        h, w = shape
        out: dict[str, Any] = {f"{c}_heat": torch.zeros((len(targets), self.num_classes, h, w), device=device)
                               for c in self.kinds}
        lists: dict[str, list[torch.Tensor]] = {k: [] for k in ("image", "index", "labels", "tl_cell", "br_cell",
                                                                 "tl_offset", "br_offset", "ct_cell", "ct_offset")}
        for b, t in enumerate(targets):
            boxes = t["boxes"].to(device=device, dtype=torch.float32)  # [m, 4] pixels
            labels = t["labels"].to(device)
            index = torch.arange(len(labels), device=device)
            if size_range is not None:  # the level whose range holds half the box's larger side
                half = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1) / 2  # [m] = max(l, t, r, b) at the centre
                mine = (half >= size_range[0]) & (half < size_range[1])
                boxes, labels, index = boxes[mine], labels[mine], index[mine]
            boxes = boxes / stride  # in cells
            radius = gaussian_radius(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0], self.min_overlap,
                                     form=self.radius_form).to(device)
            points = {"tl": boxes[:, :2], "br": boxes[:, 2:], "ct": (boxes[:, :2] + boxes[:, 2:]) / 2}
            for corner in self.kinds:
                xy = points[corner]
                cell = xy.floor().long()
                cell[:, 0].clamp_(0, w - 1)
                cell[:, 1].clamp_(0, h - 1)
                draw_gaussians(out[f"{corner}_heat"][b], cell, radius, labels)
                lists[f"{corner}_cell"].append(cell)
                lists[f"{corner}_offset"].append(xy - cell)
            lists["image"].append(torch.full_like(labels, b))
            lists["index"].append(index)
            lists["labels"].append(labels)
        out.update({k: torch.cat(v) for k, v in lists.items() if v})
        return out

    @torch.no_grad()
    def encode_targets(self, targets: Targets, image_sizes: Sequence[tuple[int, int]], *,
                       confidence: float = 20.0) -> dict[str, list[torch.Tensor]]:
        """The perfect prediction for every stack or level: corner logits ±``confidence``, the
        exact offsets, and tags k (the object's index among the image's objects the level
        carries) at its two corners and −100 everywhere else (so no corner pairs with a cell that
        is not a corner); objects whose corners share a cell at a level are left out of it."""
        pad = self.size_divisible
        size = (-(-max(s[0] for s in image_sizes) // pad) * pad, -(-max(s[1] for s in image_sizes) // pad) * pad)
        out: dict[str, list[torch.Tensor]] = {f"{c}_{k}": [] for c in self.kinds for k in _HEADS[c]}
        for level, shape in enumerate(self.output_shapes(size)):
            tgt = self.prepare_targets(self._separable(targets, shape, level), shape, level=level)
            index = tgt["index"].float()  # tag k for the k-th object of its image: no two share one
            b = tgt["image"]
            for corner in self.kinds:
                out[f"{corner}_heat"].append(torch.where(tgt[f"{corner}_heat"] == 1, confidence, -confidence))
                tag = torch.full((len(targets), 1, *shape), -100.0)
                offset = torch.zeros((len(targets), 2, *shape))
                x, y = tgt[f"{corner}_cell"][:, 0], tgt[f"{corner}_cell"][:, 1]
                tag[b, 0, y, x] = index
                offset[b, :, y, x] = tgt[f"{corner}_offset"]
                if corner != "ct":
                    out[f"{corner}_tag"].append(tag)
                out[f"{corner}_offset"].append(offset)
        return out

    def _separable(self, targets: Targets, shape: tuple[int, int], level: int) -> Targets:
        """``targets`` without the objects a level cannot tell apart: a corner cell shared with
        another object of the image (coarse levels with every box, CornerFCOS "all"). Finer
        levels still carry them, so the encoding stays a perfect prediction."""
        tgt = self.prepare_targets(targets, shape, level=level)
        out = []
        for b, t in enumerate(targets):
            mine = tgt["image"] == b
            keep = torch.ones(len(t["boxes"]), dtype=torch.bool)
            for corner in self.kinds:
                cells = tgt[f"{corner}_cell"][mine]  # [m', 2] of the objects this level learns
                _, inverse, counts = torch.unique(cells, dim=0, return_inverse=True, return_counts=True)
                shared = tgt["index"][mine][counts[inverse] > 1]
                keep[shared] = False
            out.append({**t, "boxes": t["boxes"][keep], "labels": t["labels"][keep]})
        return out

    # -- loss -------------------------------------------------------------------------------

    def loss(self, outputs: dict, targets: Targets) -> dict[str, torch.Tensor]:
        """Σ over stacks of: penalty-reduced focal on both heatmaps (÷ objects) + 0.1 pull +
        0.1 push + 1 · smooth-L1 of both offsets (mean over objects' coordinates)."""
        heat0 = outputs["tl_heat"][0]
        batch = heat0.shape[0]
        check_targets(targets, self.num_classes, batch)
        parts = {"loss_heatmap": heat0.new_zeros(()), "loss_pull": heat0.new_zeros(()),
                 "loss_push": heat0.new_zeros(()), "loss_offset": heat0.new_zeros(())}
        cached: dict[tuple, dict[str, torch.Tensor]] = {}
        for s in range(len(outputs["tl_heat"])):
            shape = tuple(outputs["tl_heat"][s].shape[-2:])
            key = (shape, self.strides[s], None if self.level_ranges is None else self.level_ranges[s])
            if key not in cached:  # the stacks of an hourglass share one set of targets
                cached[key] = self.prepare_targets(targets, shape, heat0.device, level=s)
            tgt = cached[key]
            b = tgt["image"]
            num_obj = float(b.numel())
            tags = {}
            for corner in _CORNERS:
                parts["loss_heatmap"] = parts["loss_heatmap"] + heatmap_focal_loss(
                    outputs[f"{corner}_heat"][s], tgt[f"{corner}_heat"], num_objects=num_obj)
                x, y = tgt[f"{corner}_cell"][:, 0], tgt[f"{corner}_cell"][:, 1]
                tags[corner] = outputs[f"{corner}_tag"][s].float()[b, 0, y, x]  # [M]
                offset = outputs[f"{corner}_offset"][s].float()[b, :, y, x]  # [M, 2]
                if num_obj:
                    parts["loss_offset"] = parts["loss_offset"] + F.smooth_l1_loss(offset, tgt[f"{corner}_offset"])
                else:
                    parts["loss_offset"] = parts["loss_offset"] + outputs[f"{corner}_offset"][s].sum() * 0.0
            if self.center_keypoints:  # the centre keypoint: focal on its heatmap, smooth-L1 offset
                parts["loss_heatmap"] = parts["loss_heatmap"] + heatmap_focal_loss(
                    outputs["ct_heat"][s], tgt["ct_heat"], num_objects=num_obj)
                x, y = tgt["ct_cell"][:, 0], tgt["ct_cell"][:, 1]
                offset = outputs["ct_offset"][s].float()[b, :, y, x]
                parts["loss_offset"] = parts["loss_offset"] + (
                    F.smooth_l1_loss(offset, tgt["ct_offset"]) if num_obj else outputs["ct_offset"][s].sum() * 0.0)
            pull, push = pull_push_loss(tags["tl"], tags["br"], b, batch)
            parts["loss_pull"] = parts["loss_pull"] + pull
            parts["loss_push"] = parts["loss_push"] + push
        total = (parts["loss_heatmap"] + self.pull_weight * parts["loss_pull"] + self.push_weight * parts["loss_push"]
                 + self.offset_weight * parts["loss_offset"])
        return {**parts, "loss": total}

    # -- decode -----------------------------------------------------------------------------

    def _check_centers(self, outputs: dict, level: int, boxes: torch.Tensor, scores: torch.Tensor,
                       labels: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Keep the boxes ``[P, 4]`` with a centre keypoint of their class in their central region
        (the ``center_topk`` best centre peaks of each image), rescored by the three keypoints."""
        stride = self.strides[level]
        heat = outputs["ct_heat"][level].float().sigmoid()
        c_scores, c_labels, ys, xs = topk_peaks(heatmap_peaks(heat), self.center_topk)  # [B, k]
        off = gather_at(outputs["ct_offset"][level].float(), ys, xs)  # [B, k, 2]
        centers = torch.stack([(xs + off[..., 0]) * stride, (ys + off[..., 1]) * stride], dim=-1)  # [B, k, 2]
        keep = torch.zeros_like(scores, dtype=torch.bool)
        new_scores = scores.clone()
        for b in img.unique().tolist():
            mine = img == b
            real = c_scores[b] > self.score_thresh
            k, s_new = central_region_check(boxes[mine], labels[mine], scores[mine], centers[b][real],
                                            c_labels[b][real], c_scores[b][real])
            keep[mine], new_scores[mine] = k, s_new
        return boxes[keep], new_scores[keep], labels[keep], img[keep]

    @torch.no_grad()
    def decode(self, outputs: dict, image_sizes: Sequence[tuple[int, int]]) -> Detections:
        """Detections from the last stack (every level with ``decode_all``): per corner type the
        heatmap's 3×3 peaks and their top ``topk``; every (top-left, bottom-right) pair of one
        level of the same class, tags within ``tag_thresh`` and the bottom-right not left of or
        above the top-left is a box scored by the mean of its corner scores; score >
        ``score_thresh``, NMS over the levels (Soft-NMS by default), 100 per image."""
        batch = len(image_sizes)
        levels = range(len(outputs["tl_heat"])) if self.decode_all else [len(outputs["tl_heat"]) - 1]
        boxes_all, scores_all, labels_all, imgs_all = [], [], [], []
        for level in levels:
            stride = self.strides[level]
            corners = {}
            for corner in _CORNERS:
                heat = outputs[f"{corner}_heat"][level].float().sigmoid()  # [B, K, H, W]
                # k >= detections_per_img: N objects need N corners of each type
                k = max(self.topk, self.detections_per_img)
                scores, labels, ys, xs = topk_peaks(heatmap_peaks(heat), k)  # [B, k]
                tag = gather_at(outputs[f"{corner}_tag"][level].float(), ys, xs)[..., 0]  # [B, k]
                off = gather_at(outputs[f"{corner}_offset"][level].float(), ys, xs)  # [B, k, 2]
                corners[corner] = (scores, labels, tag, (xs + off[..., 0]) * stride, (ys + off[..., 1]) * stride)
            tl_s, tl_l, tl_t, tl_x, tl_y = (v[:, :, None] for v in corners["tl"])  # [B, k, 1]
            br_s, br_l, br_t, br_x, br_y = (v[:, None, :] for v in corners["br"])  # [B, 1, k]
            score = (tl_s + br_s) / 2  # [B, k, k]
            valid = (tl_l == br_l) & ((tl_t - br_t).abs() <= self.tag_thresh) & (br_x >= tl_x) & (br_y >= tl_y)
            valid &= score > self.score_thresh
            img, i, j = torch.nonzero(valid, as_tuple=True)  # [P]
            boxes = torch.stack([tl_x[img, i, 0], tl_y[img, i, 0], br_x[img, 0, j], br_y[img, 0, j]], 1)
            scores, labels = score[img, i, j], tl_l[img, i, 0]
            if self.center_keypoints:
                boxes, scores, labels, img = self._check_centers(outputs, level, boxes, scores, labels, img)
            boxes_all.append(boxes)
            scores_all.append(scores)
            labels_all.append(labels)
            imgs_all.append(img)
        imgs = torch.cat(imgs_all)
        if imgs.numel() == 0:
            return empty_detections(batch, outputs["tl_heat"][-1].float())
        boxes = clip_boxes_per_image(torch.cat(boxes_all), imgs, image_sizes)
        return nms_per_image(boxes, torch.cat(scores_all), torch.cat(labels_all), imgs, batch_size=batch,
                             num_classes=self.num_classes, iou_threshold=self.nms_thresh,
                             max_per_image=self.detections_per_img, method=self.nms_method)
