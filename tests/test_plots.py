"""Plots and drawings: valid PNGs of the promised size, and pixels drawn where (and only where) they should be."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from hybridvision.drawing import (GRID_HEADER, GRID_PAD, draw_detections, palette, plot_attention_overlay,
                                  save_gt_pred_grid)
from hybridvision.errors import UserInputError
from hybridvision.plots import plot_loss_curve

GREY = 128


def _png(path) -> Image.Image:
    """Open ``path``, check it is a complete PNG, and return it loaded."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()  # checks chunk CRCs: a truncated / non-atomic write fails here
    im = Image.open(path)
    im.load()
    assert im.format == "PNG"
    return im


def _only_file(folder) -> None:
    """No temp files left next to the output (atomic write cleaned up)."""
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def _grey(h: int, w: int) -> torch.Tensor:
    return torch.full((3, h, w), GREY / 255.0)


# ---------------------------------------------------------------------------------------------
# loss curve
# ---------------------------------------------------------------------------------------------
def _write_metrics(path, *, with_val: bool = True, partial_tail: bool = True) -> None:
    lines = []
    for step in range(0, 60, 5):
        loss_cls, loss_box = 2.0 / (1 + step), 1.0 / (1 + 0.1 * step)
        lines.append(json.dumps({"epoch": step // 20, "step": step, "loss": loss_cls + loss_box,
                                 "loss_cls": loss_cls, "loss_box": loss_box, "lr": 0.01 * (1 - step / 60)}))
        if with_val and step % 20 == 15:
            lines.append(json.dumps({"epoch": step // 20, "split": "val", "AP": 0.1 * step / 15, "AP50": 0.2}))
    text = "\n".join(lines) + "\n"
    if partial_tail:
        text += '{"epoch": 3, "step": 60, "lo'  # a run killed mid-write
    path.write_text(text)


@pytest.mark.parametrize("with_val", [True, False])
def test_plot_loss_curve_writes_png_of_figsize(tmp_path, with_val) -> None:
    metrics = tmp_path / "metrics.jsonl"
    _write_metrics(metrics, with_val=with_val)
    out = plot_loss_curve(metrics, tmp_path / "plots" / "loss.png", figsize=(6.0, 3.0), dpi=50)
    assert out == tmp_path / "plots" / "loss.png"
    im = _png(out)
    assert im.size == (300, 150)
    # not blank: curves, axes and text put many distinct colours on the canvas
    assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 10
    _only_file(out.parent)


def test_plot_loss_curve_overwrites_and_handles_no_losses(tmp_path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"epoch": 0, "AP": 0.3}) + "\n")
    out = tmp_path / "loss.png"
    out.write_bytes(b"old")
    plot_loss_curve(metrics, out)
    assert _png(out).size == (1000, 400)  # default figsize (10, 4) at 100 dpi


def test_plot_loss_curve_bad_input(tmp_path) -> None:
    with pytest.raises(UserInputError, match=r"missing\.jsonl: metrics file not found"):
        plot_loss_curve(tmp_path / "missing.jsonl", tmp_path / "x.png")
    bad = tmp_path / "metrics.jsonl"
    bad.write_text('{"step": 1, "loss": 1.0}\nnot json\n{"step": 2, "loss": 0.5}\n')
    with pytest.raises(UserInputError, match=r"metrics\.jsonl:2: not a JSON record"):
        plot_loss_curve(bad, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------------------------
# draw_detections
# ---------------------------------------------------------------------------------------------
def test_draw_detections_pixels_on_the_edge_only() -> None:
    img = _grey(70, 100)
    before = img.clone()
    x1, y1, x2, y2 = 20, 20, 80, 55
    out = draw_detections(img, torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32), torch.tensor([0]),
                          torch.tensor([0.9]), class_names=["a"], color=(255, 0, 0), width=2)
    assert isinstance(out, Image.Image) and out.size == (100, 70) and out.mode == "RGB"
    a = np.asarray(out)  # [H, W, 3]
    # the four edges carry the box colour (away from the label in the top-left corner)
    for x, y in [(x1, 30), (x1 + 1, 30), (x2, 30), (x2 - 1, 30), (60, y1), (60, y2), (60, y2 - 1)]:
        assert tuple(a[y, x]) == (255, 0, 0), (x, y)
    # the box interior, and everything more than 2 px outside but the label above its top-left
    # corner (on the box colour), is untouched
    assert (a[y1 + 3 : y2 - 3, x1 + 3 : x2 - 3] == GREY).all()
    assert (a[y1 - 6, x1 : x1 + 4] == (255, 0, 0)).all(axis=-1).any()  # the label's background
    outside = np.ones(a.shape[:2], dtype=bool)
    outside[y1 - 2 : y2 + 3, x1 - 2 : x2 + 3] = False
    outside[: y1, x1 - 2 : x1 + 40] = False  # the label: above the box, from its left edge
    assert (a[outside] == GREY).all()
    assert torch.equal(img, before)  # input not modified


def test_draw_detections_inputs_and_clipping() -> None:
    img = _grey(40, 50)
    pil = Image.new("RGB", (50, 40), (GREY, GREY, GREY))
    boxes = [[5.0, 5.0, 30.0, 30.0], [40.0, -10.0, 70.0, 20.0]]  # second one hangs off the top-right
    a = np.asarray(draw_detections(img, boxes, [1, 2]))
    b = np.asarray(draw_detections(pil, np.array(boxes), np.array([1, 2])))
    c = np.asarray(draw_detections((img * 255).to(torch.uint8), torch.tensor(boxes), torch.tensor([1, 2])))
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert (a[20, 49] != GREY).any()  # clipped box: its right edge lands on the last column
    assert tuple(a[20, 5]) != tuple(a[20, 45])  # a colour per class by default
    empty = draw_detections(img, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert (np.asarray(empty) == GREY).all()
    grey1 = draw_detections(img[:1], boxes, [1, 2])  # [1, H, W] grey image
    assert np.array_equal(np.asarray(grey1), a)


# ---------------------------------------------------------------------------------------------
# ground truth vs predictions grid
# ---------------------------------------------------------------------------------------------
def test_save_gt_pred_grid_layout_and_cells(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    sizes = [(40, 50), (32, 64), (48, 48)]
    images = [torch.rand(3, h, w, generator=g) for h, w in sizes]
    gts = [{"boxes": torch.tensor([[2.0, 3.0, 20.0, 25.0]]), "labels": torch.tensor([i])} for i in range(3)]
    preds = [{"boxes": torch.tensor([[4.0, 4.0, 22.0, 24.0], [10.0, 10.0, 30.0, 30.0]]),
              "scores": torch.tensor([0.8, 0.1]), "labels": torch.tensor([i, 1])} for i in range(3)]
    names = ["cat", "dog", "cow"]
    out = save_gt_pred_grid(images, gts, preds, names, tmp_path / "grid.png", max_images=2, score_thresh=0.3)
    im = np.asarray(_png(out).convert("RGB"))
    cw, ch, n = 64, 40, 2  # widest and tallest of the first two images
    assert im.shape == (GRID_HEADER + n * ch + (n + 1) * GRID_PAD, 2 * cw + 3 * GRID_PAD, 3)
    for r in range(n):
        top = GRID_HEADER + GRID_PAD + r * (ch + GRID_PAD)
        h, w = sizes[r]
        left_gt, left_pred = GRID_PAD, GRID_PAD + cw + GRID_PAD
        want_gt = np.asarray(draw_detections(images[r], gts[r]["boxes"], gts[r]["labels"], None, names))
        want_pred = np.asarray(draw_detections(images[r], preds[r]["boxes"][:1], preds[r]["labels"][:1],
                                               preds[r]["scores"][:1], names))  # 0.1 < score_thresh
        assert np.array_equal(im[top : top + h, left_gt : left_gt + w], want_gt)
        assert np.array_equal(im[top : top + h, left_pred : left_pred + w], want_pred)
    _only_file(tmp_path)


def test_save_gt_pred_grid_accepts_a_batch(tmp_path) -> None:
    batch = _grey(32, 32)[None].repeat(3, 1, 1, 1)  # [B, 3, H, W]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    out = save_gt_pred_grid(batch, [empty] * 3, [dict(empty, scores=torch.zeros(0))] * 3, None, tmp_path / "g.png")
    assert _png(out).size == (2 * 32 + 3 * GRID_PAD, GRID_HEADER + 3 * 32 + 4 * GRID_PAD)


# ---------------------------------------------------------------------------------------------
# attention overlay
# ---------------------------------------------------------------------------------------------
def test_plot_attention_overlay(tmp_path) -> None:
    H, W = 48, 64
    attn = torch.zeros(4, 4)
    attn[0, 3] = 1.0  # all weight on the top-right key
    out = plot_attention_overlay(_grey(H, W), attn, (10, 40), tmp_path / "attn.png", alpha=0.5, cmap="jet")
    im = np.asarray(_png(out).convert("RGB")).astype(int)
    assert im.shape == (H, W, 3)

    def blend(v: float) -> np.ndarray:
        return np.round(0.5 * GREY + 0.5 * np.asarray(colormaps["jet"](v)[:3]) * 255)

    np.testing.assert_allclose(im[0, W - 1], blend(1.0), atol=1)  # the hot key, upsampled to the corner
    np.testing.assert_allclose(im[0, 0], blend(0.0), atol=1)  # far from it: the coldest colour
    np.testing.assert_allclose(im[H // 2, W // 4], blend(0.0), atol=1)
    # the query point is marked: black cross at its centre, white ring around it
    assert tuple(im[40, 10]) == (0, 0, 0)
    r = max(3, min(H, W) // 32)
    ring = im[40 - r - 1 : 40 + r + 2, 10 - r - 1 : 10 + r + 2]
    assert (ring == 255).all(axis=-1).any()
    _only_file(tmp_path)


def test_plot_attention_overlay_constant_map_and_bad_shape(tmp_path) -> None:
    out = plot_attention_overlay(Image.new("RGB", (20, 10)), np.ones((3, 5)), (0, 0), tmp_path / "a.png")
    assert _png(out).size == (20, 10)
    with pytest.raises(ValueError, match=r"\[h, w\]"):
        plot_attention_overlay(_grey(8, 8), torch.ones(2, 2, 2), (0, 0), tmp_path / "b.png")


def test_the_best_detection_is_drawn_last_and_labels_grow_with_the_image() -> None:

    boxes = torch.tensor([[20.0, 30.0, 80.0, 70.0], [20.0, 30.0, 90.0, 80.0]])
    for scores, top in (([0.9, 0.4], 0), ([0.4, 0.9], 1)):  # the same boxes, the scores swapped
        a = np.asarray(draw_detections(_grey(100, 120), boxes, torch.tensor([0, 1]), torch.tensor(scores)))
        assert tuple(a[30, 60]) == palette(top) and tuple(a[21, 20]) == palette(top)  # edge, label
    small = np.asarray(draw_detections(_grey(100, 120), boxes[:1], [0], [0.9]))
    big = np.asarray(draw_detections(_grey(1000, 1200), boxes[:1] * 10, [0], [0.9]))
    label_rows = lambda a, x, top: int((a[:top, x] != GREY).any(axis=-1).sum())  # noqa: E731  above the box
    assert label_rows(big, 200 + 6, 300) >= 1.5 * label_rows(small, 20 + 1, 30) > 0
