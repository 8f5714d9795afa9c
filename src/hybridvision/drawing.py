"""Pictures drawn on images with PIL: the boxes ``predict`` draws, the ground-truth-beside-predictions
grid of a run and of ``hybridvision demo``, a retrieval query beside its results, and the attention
overlay of ``hybridvision explain``.

Everything is drawn off-screen with PIL (matplotlib is used only for its fixed ``tab20`` colour
table and the overlay's colour map, never for a figure), so it is safe in training loops, on
servers and in DDP workers. Every file is written atomically (:func:`save_image`).

Charts (loss curves, PR curves, per-class bars, dataset statistics) are matplotlib figures and
live in :mod:`hybridvision.plots`.

Images follow the toolkit contract: ``[3, H, W]`` float tensors in [0, 1] (uint8 tensors, ``[1, H, W]``
grey images and PIL images are accepted too); boxes are ``[N, 4]`` xyxy pixels.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageColor, ImageDraw, ImageFont
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes

from hybridvision.fileio import atomic_write_bytes

__all__ = [
    "GRID_HEADER",
    "GRID_PAD",
    "palette",
    "save_image",
    "draw_detections",
    "save_gt_pred_grid",
    "draw_retrieval_grid",
    "plot_attention_overlay",
]

ImageLike = torch.Tensor | Image.Image | np.ndarray
Color = str | tuple[int, int, int]

# Grid layout of save_gt_pred_grid (pixels): a title strip on top, a gap around every cell.
GRID_PAD = 4
GRID_HEADER = 16


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def save_image(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PIL image as PNG, atomically (the one writer: umask mode, disk-full errors)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def _to_uint8_chw(image: ImageLike) -> torch.Tensor:
    """Any accepted image as a ``[3, H, W]`` uint8 CPU tensor."""
    if isinstance(image, Image.Image):
        return pil_to_tensor(image.convert("RGB"))
    if isinstance(image, np.ndarray):  # [H, W, 3] or [H, W], as PIL/OpenCV users hold them
        t = torch.from_numpy(np.ascontiguousarray(image))
        image = t.permute(2, 0, 1) if t.dim() == 3 else t[None]
    t = image.detach().cpu()
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"expected an image [3, H, W] or [1, H, W], got shape {tuple(t.shape)}")
    if t.is_floating_point():
        t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
    else:
        t = t.to(torch.uint8)
    return t.expand(3, -1, -1).contiguous() if t.shape[0] == 1 else t


def palette(label: int) -> tuple[int, int, int]:
    """A fixed colour per class, so one class has one colour in every picture.

    tab20's dark shades first, then its light ones: neighbouring labels get distinct hues.
    """
    from matplotlib import colormaps

    label = int(label) % 20
    r, g, b, _ = colormaps["tab20"]((2 * label) % 20 + label // 10)
    return int(r * 255), int(g * 255), int(b * 255)


# ---------------------------------------------------------------------------------------------
# detections
# ---------------------------------------------------------------------------------------------
def draw_detections(
    image: ImageLike,
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    labels: torch.Tensor | np.ndarray | Sequence[int],
    scores: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    color: Color | None = None,
    *,
    width: int = 2,
) -> Image.Image:
    """Draw labelled boxes on an image (``torchvision.utils.draw_bounding_boxes`` underneath).

    Args:
        image: ``[3, H, W]`` float in [0, 1] (or uint8, or grey ``[1, H, W]``) tensor, or a PIL image.
        boxes: ``[N, 4]`` xyxy pixels; clipped to the image.
        labels: ``[N]`` contiguous class indices.
        scores: optional ``[N]``; shown after the class name.
        class_names: names indexed by label; the number is shown when missing.
        color: one colour for every box; by default a fixed colour per class.
        width: line width in pixels.

    Returns:
        A new RGB PIL image of the input's size; the input is not modified.
    """
    img = _to_uint8_chw(image)  # [3, H, W] uint8
    h, w = img.shape[-2:]
    boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32) if not isinstance(boxes, torch.Tensor) else boxes)
    boxes_t = boxes_t.detach().cpu().float().reshape(-1, 4)  # [N, 4]
    labels_l = [int(v) for v in torch.as_tensor(labels).reshape(-1).tolist()]
    if len(labels_l) != len(boxes_t):
        raise ValueError(f"{len(boxes_t)} boxes but {len(labels_l)} labels")
    scores_l = None if scores is None else [float(v) for v in torch.as_tensor(scores).reshape(-1).tolist()]
    if not len(boxes_t):
        return to_pil_image(img)

    # Clip into the image and make x2 >= x1, y2 >= y1: torchvision refuses inverted boxes, and a
    # box hanging off the border should still show its visible part.
    x1 = boxes_t[:, 0].clamp(0, w - 1)
    y1 = boxes_t[:, 1].clamp(0, h - 1)
    x2 = torch.maximum(boxes_t[:, 2].clamp(0, w - 1), x1)
    y2 = torch.maximum(boxes_t[:, 3].clamp(0, h - 1), y1)
    clipped = torch.stack([x1, y1, x2, y2], dim=1)  # [N, 4]

    texts = []
    for i, lab in enumerate(labels_l):
        name = class_names[lab] if class_names is not None and 0 <= lab < len(class_names) else str(lab)
        texts.append(name if scores_l is None else f"{name} {scores_l[i]:.2f}")
    colors = [color] * len(labels_l) if color is not None else [palette(lab) for lab in labels_l]
    # Lowest score first, so the best detections are drawn last, on top of the others.
    order = list(range(len(labels_l)))
    if scores_l is not None:
        order.sort(key=lambda i: scores_l[i])
    line = max(width, round(min(h, w) / 300))
    boxed = draw_bounding_boxes(img, clipped[order], colors=[colors[i] for i in order], width=line)
    pil = to_pil_image(boxed)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=max(10, round(min(h, w) / 45)))  # text sized to the image
    for i in order:
        x, y = float(clipped[i, 0]), float(clipped[i, 1])
        _, t, _, b = draw.textbbox((0, 0), texts[i], font=font)  # the glyphs span rows t..b
        ty = y - b - 2 if y - b - 2 + t >= 1 else y + 1 - t  # above the box, else inside its top
        left, top, right, bottom = draw.textbbox((x + 1, ty), texts[i], font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=colors[i])
        draw.text((x + 1, ty), texts[i], fill=_label_ink(colors[i]), font=font)
    return pil


def _label_ink(colour: Color) -> str:
    """Black or white, whichever reads better on ``colour``."""
    rgb = ImageColor.getrgb(colour) if isinstance(colour, str) else tuple(colour)[:3]
    return "black" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else "white"


def _detections_of(target: Mapping[str, Any], score_thresh: float | None) -> tuple[Any, Any, Any]:
    boxes = torch.as_tensor(target["boxes"]).reshape(-1, 4)
    labels = torch.as_tensor(target["labels"]).reshape(-1)
    scores = target.get("scores")
    if scores is not None:
        scores = torch.as_tensor(scores).reshape(-1)
        if score_thresh is not None:
            keep = scores >= score_thresh
            boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
    return boxes, labels, scores


def save_gt_pred_grid(
    images: Sequence[ImageLike] | torch.Tensor,
    gts: Sequence[Mapping[str, Any]],
    preds: Sequence[Mapping[str, Any]],
    class_names: Sequence[str] | None,
    out_png: str | os.PathLike,
    *,
    max_images: int = 8,
    score_thresh: float = 0.3,
) -> Path:
    """Save a grid whose rows show ground truth (left) beside predictions (right).

    Args:
        images: ``[3, H, W]`` images (or a ``[B, 3, H, W]`` batch); sizes may differ.
        gts: targets ``dict(boxes, labels)`` per image.
        preds: detections ``dict(boxes, scores, labels)`` per image; those below ``score_thresh``
            are left out (decoders keep up to 100 low-score boxes, which would hide the picture).
        class_names: names indexed by label (or None).
        out_png: where to write.
        max_images: at most this many rows.

    Returns:
        The path written. The PNG is ``2 * Wmax + 3 * GRID_PAD`` wide and
        ``GRID_HEADER + n * Hmax + (n + 1) * GRID_PAD`` high; cell (row r, col c) starts at
        ``(GRID_PAD + c * (Wmax + GRID_PAD), GRID_HEADER + GRID_PAD + r * (Hmax + GRID_PAD))``.
    """
    n = min(len(images), len(gts), len(preds), max_images)
    if n == 0:
        raise ValueError("save_gt_pred_grid needs at least one image")
    cells = []
    for i in range(n):
        gb, gl, _ = _detections_of(gts[i], None)
        pb, pl, ps = _detections_of(preds[i], score_thresh)
        cells.append((
            draw_detections(images[i], gb, gl, None, class_names),
            draw_detections(images[i], pb, pl, ps, class_names),
        ))
    cw = max(c[0].width for c in cells)
    ch = max(c[0].height for c in cells)
    canvas = Image.new("RGB", (2 * cw + 3 * GRID_PAD, GRID_HEADER + n * ch + (n + 1) * GRID_PAD), "white")
    draw = ImageDraw.Draw(canvas)
    for col, title in enumerate(("ground truth", f"predictions (score >= {score_thresh:g})")):
        draw.text((GRID_PAD + col * (cw + GRID_PAD), 2), title, fill="black")
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            canvas.paste(cell, (GRID_PAD + c * (cw + GRID_PAD), GRID_HEADER + GRID_PAD + r * (ch + GRID_PAD)))
    return save_image(canvas, out_png)


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------
def plot_attention_overlay(
    image: ImageLike,
    attn_map: torch.Tensor | np.ndarray,
    point: tuple[float, float],
    out_png: str | os.PathLike,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> Path:
    """Overlay one query's attention weights on the image (the non-local block's "where it looks").

    Wang et al. (non-local networks, CVPR 2018, Fig. 3) visualise, for a query position, the row
    of the attention matrix over the key positions. ``attn_map`` is that row reshaped to the key
    grid ``[h, w]``; it is upsampled bilinearly to the image, min-max normalised, coloured with
    ``cmap`` and blended with weight ``alpha``. The query ``point`` (x, y in image pixels) is
    marked with a ring and a cross.

    Returns:
        The path written; the PNG has the image's size.
    """
    img = _to_uint8_chw(image)  # [3, H, W]
    H, W = img.shape[-2:]
    attn = torch.as_tensor(np.asarray(attn_map) if not isinstance(attn_map, torch.Tensor) else attn_map)
    attn = attn.detach().cpu().float()
    if attn.dim() != 2:
        raise ValueError(f"attn_map must be [h, w], got shape {tuple(attn.shape)}")
    up = F.interpolate(attn[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]  # [H, W]
    lo, hi = up.min(), up.max()
    norm = (up - lo) / (hi - lo) if hi > lo else torch.zeros_like(up)

    from matplotlib import colormaps

    heat = colormaps[cmap](norm.numpy())[..., :3] * 255.0  # [H, W, 3]
    base = img.permute(1, 2, 0).numpy().astype(np.float64)  # [H, W, 3]
    blend = ((1.0 - alpha) * base + alpha * heat).round().clip(0, 255).astype(np.uint8)

    out = Image.fromarray(blend)  # [H, W, 3] uint8 -> RGB
    draw = ImageDraw.Draw(out)
    x, y = float(point[0]), float(point[1])
    r = max(3, min(H, W) // 32)
    draw.ellipse((x - r, y - r, x + r, y + r), outline="white", width=2)
    draw.line((x - r, y, x + r, y), fill="black", width=1)
    draw.line((x, y - r, x, y + r), fill="black", width=1)
    return save_image(out, out_png)


# ---------------------------------------------------------------------------------------------
# retrieval
# ---------------------------------------------------------------------------------------------
def draw_retrieval_grid(query: Image.Image, results: Sequence[tuple[Image.Image, str, float, bool | None]],
                        thumb: int = 112) -> Image.Image:
    """The query, then its ranked results left to right: each thumbnail with its rank, score and
    caption (its class folder); the border green / red when the result's class is / is not the
    query's (grey when the query's class is unknown)."""
    pad, text_h = 6, 28
    width = (len(results) + 1) * (thumb + pad) + pad
    grid = Image.new("RGB", (width, thumb + text_h + 2 * pad), "white")
    draw = ImageDraw.Draw(grid)

    def place(img: Image.Image, col: int, colour: str, lines: Sequence[str]) -> None:
        x = pad + col * (thumb + pad)
        tile = img.convert("RGB")
        tile.thumbnail((thumb - 6, thumb - 6))
        draw.rectangle((x, pad, x + thumb - 1, pad + thumb - 1), outline=colour, width=3)
        grid.paste(tile, (x + (thumb - tile.width) // 2, pad + (thumb - tile.height) // 2))
        for j, line in enumerate(lines):
            draw.text((x + 2, pad + thumb + 2 + 12 * j), line[:18], fill="black")

    place(query, 0, "blue", ["query"])
    for r, (img, caption, score, correct) in enumerate(results, 1):
        colour = "grey" if correct is None else ("green" if correct else "red")
        place(img, r, colour, [f"#{r} {score:.3f}", caption])
    return grid
