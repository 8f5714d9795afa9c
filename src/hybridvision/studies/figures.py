"""The pictures of a study's ``report.html`` beyond its tables and curves.

Per row (the lowest finished seed of each): precision–recall curves and per-class AP for
detection, per-class accuracy for classification, and a grid of the same validation images
predicted by every row side by side (the idea of thesis A's Figure 4.1: one picture, every
model's answer). Each figure is returned as ``(title, callable)``; :mod:`hybridvision.studies.html`
draws it and, should one fail, writes a note in its place instead of losing the report.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from hybridvision.api import load_trained, prepare_image
from hybridvision.config import TrainConfig
from hybridvision.engine.tasks import make_task, unwrap
from hybridvision.drawing import draw_detections, draw_retrieval_grid
from hybridvision.evaluation.analysis import detection_analysis, per_class_accuracy
from hybridvision.plots import plot_per_class_accuracy, plot_per_class_ap, plot_pr_curves

__all__ = ["detection_figures", "classification_figures", "sbir_figures", "first_runs", "labelled_grid"]

GRID_IMAGES = 4  # validation images in the side-by-side grid
SCORE_THRESH = 0.3  # detections drawn in the grid (decoders keep up to 100 low-score boxes)


def first_runs(runs: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One finished run per row, in study order, all of one seed: the lowest seed every row with a
    finished run has finished (so the pictures compare like with like); failing that, each row's
    lowest finished seed."""
    finished = {(r["row"], r["seed"]) for r in records}
    rows = list(dict.fromkeys(r["row"] for r in runs if (r["row"], r["seed"]) in finished))
    seeds = sorted({r["seed"] for r in runs})
    common = [s for s in seeds if all((row, s) in finished for row in rows)]
    chosen: dict[str, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: r["seed"]):
        if (run["row"], run["seed"]) in finished and run["row"] not in chosen \
                and (not common or run["seed"] == common[0]):
            chosen[run["row"]] = run
    return [chosen[row] for row in rows if row in chosen]


def _seed_note(chosen: Sequence[dict[str, Any]]) -> str:
    seeds = sorted({run["seed"] for run in chosen})
    return (f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(
        f"{run['row']}: {run['seed']}" for run in chosen)) + ", last weights"


def _val_bundle(cfg: TrainConfig):
    """The validation split every row was evaluated on (no training images decoded)."""
    return make_task(cfg).build_data(cfg.updated({"cache_images": False}, source="study report"))


def labelled_grid(cells: Sequence[Sequence[Image.Image]], row_labels: Sequence[str], *,
                  cell: int = 192, label_width: int = 150, pad: int = 4) -> bytes:
    """PNG of ``cells[row][col]`` images (each fitted into ``cell × cell``), row names on the left."""
    rows, cols = len(cells), max(len(r) for r in cells)
    canvas = Image.new("RGB", (label_width + cols * (cell + pad) + pad, rows * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, row) in enumerate(zip(row_labels, cells)):
        y = pad + r * (cell + pad)
        draw.text((pad, y + cell // 2 - 6), label, fill="black")
        for c, img in enumerate(row):
            scale = cell / max(img.size)  # small validation images are enlarged, large ones shrunk
            fitted = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                                Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR)
            canvas.paste(fitted, (label_width + pad + c * (cell + pad), y))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def detection_figures(study: Any, preset: str, out: Path, device: torch.device, runs: Sequence[dict[str, Any]],
                      records: Sequence[dict[str, Any]]) -> list[tuple[str, Callable[[], Any]]]:
    """PR curves of every row on one axis, per-class AP, and the prediction grid."""
    chosen = first_runs(runs, records)
    if not chosen:
        return []
    state: dict[str, Any] = {}

    def analyses() -> list[tuple[str, Any]]:
        if "analyses" not in state:
            gt = _val_bundle(chosen[0]["cfg"]).meta["val_gt"]
            state["analyses"] = [
                (run["row"], detection_analysis(gt, json.loads(
                    (Path(run["cfg"].out) / "eval" / "last" / "predictions.json").read_text())))
                for run in chosen]
        return state["analyses"]

    def grid() -> bytes:
        bundle = _val_bundle(chosen[0]["cfg"])
        items = [bundle.val[i] for i in range(min(GRID_IMAGES, len(bundle.val)))]
        cells, labels = [], []
        gt_row = [draw_detections(img, t["boxes"], t["labels"], None, bundle.class_names, color=(0, 160, 0))
                  for img, t in items]
        cells.append(gt_row)
        labels.append("ground truth")
        for run in chosen:
            model, info = load_trained(Path(run["cfg"].out) / "checkpoints" / "last.safetensors", device)
            model = unwrap(model).eval()
            row = []
            for img, _ in items:
                batch, hw = prepare_image(img)
                with torch.inference_mode():
                    d = model.decode(model(batch.to(device), [hw]), [hw])[0]
                keep = d["scores"] >= SCORE_THRESH
                row.append(draw_detections(img, d["boxes"][keep].cpu(), d["labels"][keep].cpu(),
                                           d["scores"][keep].cpu(), info.get("class_names")))
            cells.append(row)
            labels.append(run["row"])
        return labelled_grid(cells, labels)

    seed_note = _seed_note(chosen)
    return [
        (f"Precision–recall, all classes, every row ({seed_note})", lambda: plot_pr_curves(analyses())),
        (f"Per-class AP ({seed_note})", lambda: plot_per_class_ap(analyses())),
        (f"The same validation images, every row (top: ground truth; boxes with score ≥ {SCORE_THRESH}; "
         f"{seed_note})", grid),
    ]


def classification_figures(study: Any, preset: str, out: Path, device: torch.device,
                           runs: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]
                           ) -> list[tuple[str, Callable[[], Any]]]:
    """Per-class accuracy of every row, and the same validation sketches labelled by each row."""
    chosen = first_runs(runs, records)
    if not chosen:
        return []
    state: dict[str, Any] = {}

    def predictions() -> dict[str, Any]:
        if not state:
            bundle = _val_bundle(chosen[0]["cfg"])
            images = torch.stack([bundle.val[i][0] for i in range(len(bundle.val))])  # [N, C, S, S]
            labels = torch.tensor([int(bundle.val[i][1]) for i in range(len(bundle.val))])
            preds = {}
            for run in chosen:
                model, _ = load_trained(Path(run["cfg"].out) / "checkpoints" / "last.safetensors", device)
                model = unwrap(model).eval()
                with torch.inference_mode():
                    preds[run["row"]] = torch.cat([model(b.to(device)).argmax(1).cpu()
                                                   for b in images.split(256)])
            state.update(images=images, labels=labels, preds=preds, names=bundle.class_names)
        return state

    def accuracy():
        s = predictions()
        return plot_per_class_accuracy([(row, per_class_accuracy(s["labels"], p, s["names"]))
                                        for row, p in s["preds"].items()])

    def grid() -> bytes:
        s = predictions()
        idx = list(range(0, len(s["labels"]), max(1, len(s["labels"]) // 6)))[:6]
        cells = []
        for p in s["preds"].values():
            right = [int(p[i]) == int(s["labels"][i]) for i in idx]
            cells.append([_captioned(s["images"][i], s["names"][int(p[i])] + ("" if ok else " ×"), ok)
                          for i, ok in zip(idx, right)])
        truth = [_captioned(s["images"][i], s["names"][int(s["labels"][i])], True) for i in idx]
        return labelled_grid([truth, *cells], ["true class", *s["preds"]], cell=128)

    seed_note = _seed_note(chosen)
    return [(f"Per-class accuracy ({seed_note})", accuracy),
            (f"The same validation sketches, every row's prediction (× and red: wrong; {seed_note})", grid)]


def _captioned(image: torch.Tensor, text: str, right: bool) -> Image.Image:
    """A ``[C, S, S]`` image in [0, 1] with ``text`` under it (green when right, red when wrong)."""
    img = image.float()
    if img.min() < 0:  # normalised: back to [0, 1] for display
        img = (img - img.min()) / (img.max() - img.min() + 1e-8)
    grey = (img.mean(0) * 255).clamp(0, 255).byte().numpy()
    pic = Image.fromarray(grey).convert("RGB").resize((112, 112))
    canvas = Image.new("RGB", (112, 128), "white")
    canvas.paste(pic, (0, 0))
    ImageDraw.Draw(canvas).text((2, 114), text[:18], fill=(0, 130, 0) if right else (200, 0, 0))
    return canvas


def sbir_figures(study: Any, preset: str, out: Path, device: torch.device,
                 runs: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]
                 ) -> list[tuple[str, Callable[[], Any]]]:
    """For each row (its stage-3 weights): the same held-out sketch queries, one per class of the
    first classes, with the top 5 photos each row ranks for them (green: the query's class)."""
    chosen = first_runs(runs, records)
    if not chosen:
        return []

    def grid() -> bytes:
        bundle = _val_bundle(chosen[0]["cfg"])
        sketches, photos = bundle.val.sketches, bundle.val.photos
        first_of: dict[int, int] = {}
        for i, y in enumerate(sketches.targets):
            first_of.setdefault(int(y), i)
        queries = [first_of[c] for c in sorted(first_of)][:GRID_IMAGES]
        g_images = [photos[i][0] for i in range(len(photos))]
        g_labels = torch.tensor(photos.targets)
        blocks = []
        for run in chosen:
            model, _ = load_trained(Path(run["cfg"].out) / "checkpoints" / "last.safetensors", device)
            model = unwrap(model).eval()
            with torch.inference_mode():
                g = torch.cat([model.embed(b.to(device), "photo").cpu() for b in torch.stack(g_images).split(128)])
                for qi in queries:
                    image, label = sketches[qi]
                    q = model.embed(image[None].to(device), "sketch").cpu()
                    top = (q @ g.T)[0].topk(min(5, len(g_images)))
                    tiles = [(_display(g_images[j]), bundle.class_names[int(g_labels[j])], float(s),
                              int(g_labels[j]) == int(label))
                             for s, j in zip(top.values.tolist(), top.indices.tolist())]
                    blocks.append((run["row"], draw_retrieval_grid(_display(image), tiles)))
        width = max(b.width for _, b in blocks) + 150
        sheet = Image.new("RGB", (width, sum(b.height for _, b in blocks)), "white")
        draw = ImageDraw.Draw(sheet)
        y = 0
        for row, block in blocks:
            draw.text((4, y + block.height // 2), row[:22], fill="black")
            sheet.paste(block, (150, y))
            y += block.height
        buf = io.BytesIO()
        sheet.save(buf, format="PNG")
        return buf.getvalue()

    return [(f"Held-out sketch queries and the top 5 photos each row ranks (green: the query's class; "
             f"{_seed_note(chosen)})", grid)]


def _display(image: torch.Tensor) -> Image.Image:
    """A normalised ``[C, S, S]`` tensor as an RGB picture (min–max stretched)."""
    img = image.float()
    img = (img - img.min()) / (img.max() - img.min() + 1e-8)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return Image.fromarray((img.permute(1, 2, 0) * 255).clamp(0, 255).byte().numpy(), "RGB")
