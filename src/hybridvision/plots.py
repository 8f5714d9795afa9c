"""Plots a run writes to ``plots/``: loss curves, detections, ground truth vs. predictions, attention.

Everything renders off-screen (matplotlib's Agg canvas, or PIL directly), never opens a window
and never touches pyplot's global state, so it is safe in training loops, on servers and in DDP
workers. Every file is written atomically (temp file + ``os.replace``).

Images follow the toolkit contract: ``[3, H, W]`` float tensors in [0, 1] (uint8 tensors, ``[1, H, W]``
grey images and PIL images are accepted too); boxes are ``[N, 4]`` xyxy pixels.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes

from hybridvision.errors import UserInputError
from hybridvision.fileio import atomic_write_bytes

__all__ = [
    "save_image",
    "plot_loss_curve",
    "draw_detections",
    "save_gt_pred_grid",
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


_save_pil = save_image


def _save_figure(fig: Any, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # no bbox_inches="tight": the PNG is exactly figsize * dpi
    return atomic_write_bytes(path, buf.getvalue())


def _new_figure(figsize: tuple[float, float], dpi: int):
    """A figure on its own Agg canvas (no pyplot: no global figure list, no backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


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


def _palette(label: int) -> tuple[int, int, int]:
    """A fixed colour per class, so one class has one colour in every picture.

    tab20's dark shades first, then its light ones: neighbouring labels get distinct hues.
    """
    from matplotlib import colormaps

    label = int(label) % 20
    r, g, b, _ = colormaps["tab20"]((2 * label) % 20 + label // 10)
    return int(r * 255), int(g * 255), int(b * 255)


# ---------------------------------------------------------------------------------------------
# loss curve
# ---------------------------------------------------------------------------------------------
def _is_loss_key(key: str) -> bool:
    return key == "loss" or key.startswith("loss_")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise UserInputError(f"{path}: metrics file not found; point to a run's metrics.jsonl") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"{path}: cannot read metrics file ({e})") from None
    records = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if i == last:  # a run killed mid-write leaves a partial last line: ignore it
                continue
            raise UserInputError(f"{path}:{i + 1}: not a JSON record; each line must be one JSON object") from None
        if not isinstance(rec, dict):
            raise UserInputError(f"{path}:{i + 1}: expected a JSON object, got {type(rec).__name__}")
        records.append(rec)
    return records


def plot_loss_curve(
    metrics_jsonl_path: str | os.PathLike,
    out_png: str | os.PathLike,
    *,
    figsize: tuple[float, float] = (10.0, 4.0),
    dpi: int = 100,
) -> Path:
    """Plot training losses (and learning rate, and validation AP) from a run's ``metrics.jsonl``.

    Records like ``{"epoch": 0, "step": 10, "loss": .., "loss_cls": .., "lr": ..}`` give one line
    per loss key (``loss`` and ``loss_*``) against ``step`` (``epoch`` or the record index when
    there is no step), with ``lr`` on a twin axis. Records holding ``"AP"`` (validation) are drawn
    per epoch in a second panel, with ``AP50`` when present. Records whose ``split``/``phase`` is
    not ``"train"`` never enter the loss panel.

    Returns:
        The path written; the PNG is ``figsize * dpi`` pixels.
    """
    path = Path(metrics_jsonl_path)
    records = _read_jsonl(path)
    train = [
        r for r in records
        if any(_is_loss_key(k) and _num(v) for k, v in r.items())
        and "AP" not in r
        and str(r.get("split", r.get("phase", "train"))) == "train"
    ]  # fmt: skip
    val = [r for r in records if _num(r.get("AP"))]

    fig = _new_figure(figsize, dpi)
    ax_loss, ax_ap = (fig.subplots(1, 2) if val else (fig.subplots(1, 1), None))

    x_key = next((k for k in ("step", "epoch") if train and all(_num(r.get(k)) for r in train)), None)
    xs = [r[x_key] if x_key else i for i, r in enumerate(train)]
    loss_keys = sorted({k for r in train for k, v in r.items() if _is_loss_key(k) and _num(v)},
                       key=lambda k: (k != "loss", k))  # total first
    positive = []
    for key in loss_keys:
        pts = [(x, r[key]) for x, r in zip(xs, train) if _num(r.get(key))]
        ax_loss.plot([p[0] for p in pts], [p[1] for p in pts], label=key, lw=2.0 if key == "loss" else 1.0)
        positive += [p[1] for p in pts if math.isfinite(p[1])]
    # Losses that span decades (early training) read better on a log axis.
    if positive and min(positive) > 0 and max(positive) / min(positive) > 100:
        ax_loss.set_yscale("log")
    ax_loss.set_xlabel(x_key or "record")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    ax_loss.grid(alpha=0.3)
    if not loss_keys:
        ax_loss.text(0.5, 0.5, "no loss records", ha="center", va="center", transform=ax_loss.transAxes)
    handles, labels = ax_loss.get_legend_handles_labels()
    lr_pts = [(x, r["lr"]) for x, r in zip(xs, train) if _num(r.get("lr"))]
    if lr_pts:
        ax_lr = ax_loss.twinx()
        (line,) = ax_lr.plot([p[0] for p in lr_pts], [p[1] for p in lr_pts], color="gray", ls="--", lw=1.0)
        ax_lr.set_ylabel("lr")
        handles, labels = handles + [line], labels + ["lr"]
    if handles:
        ax_loss.legend(handles, labels, fontsize="small", loc="upper right")

    if ax_ap is not None:
        vx = [r["epoch"] if _num(r.get("epoch")) else i for i, r in enumerate(val)]
        for key in ("AP", "AP50"):
            pts = [(x, 100.0 * r[key]) for x, r in zip(vx, val) if _num(r.get(key)) and r[key] >= 0]
            if pts:
                ax_ap.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
        ax_ap.set_xlabel("epoch")
        ax_ap.set_ylabel("%")
        ax_ap.set_title("validation")
        ax_ap.grid(alpha=0.3)
        ax_ap.legend(fontsize="small")
    fig.tight_layout()
    return _save_figure(fig, out_png)


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
    colors = [color] * len(labels_l) if color is not None else [_palette(lab) for lab in labels_l]
    out = draw_bounding_boxes(img, clipped, labels=texts, colors=colors, width=width, fill_labels=True)
    return to_pil_image(out)


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
    return _save_pil(canvas, out_png)


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
    return _save_pil(out, out_png)
