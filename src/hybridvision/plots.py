"""Charts a run, an evaluation and a dataset get, drawn with matplotlib: loss curves and the results
grid (``plots/`` of a run); the evaluation's PR curves, confusion matrix and per-class AP / accuracy
bars; a dataset's class counts, box sizes and box centres.

The evaluation and dataset plots come as functions that return a matplotlib ``Figure`` (for a
study's report: several models on one axis), :func:`figure_png` turns one into PNG bytes, and
``save_*`` functions write the files a run or a command writes.

Everything renders off-screen on matplotlib's Agg canvas, never opens a window and never touches
pyplot's global state, so it is safe in training loops, on servers and in DDP workers. Every file
is written atomically (temp file + ``os.replace``).

Pictures drawn on images with PIL (detections, the ground-truth-beside-predictions grid, the
retrieval grid, the attention overlay) are :mod:`hybridvision.drawing`.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridvision.drawing import palette
from hybridvision.errors import UserInputError
from hybridvision.evaluation.analysis import SIZE_EDGES, DatasetStats, DetectionAnalysis
from hybridvision.fileio import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "figure_png",
    "plot_loss_curve",
    "plot_results",
    "plot_pr_curves",
    "plot_confusion_matrix",
    "plot_per_class_ap",
    "plot_per_class_accuracy",
    "save_analysis_plots",
    "plot_class_counts",
    "plot_box_sizes",
    "plot_box_centres",
    "save_dataset_stats_plots",
]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def figure_png(fig: Figure) -> bytes:
    """A figure as PNG bytes, exactly ``figsize * dpi`` pixels (no ``bbox_inches="tight"``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _save_figure(fig: Any, path: str | os.PathLike) -> Path:
    return atomic_write_bytes(path, figure_png(fig))


def _new_figure(figsize: tuple[float, float], dpi: int):
    """A figure on its own Agg canvas (no pyplot: no global figure list, no backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


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


def _smooth(values: Sequence[float], frac: float = 0.05) -> np.ndarray:
    """A centred moving average over about ``frac`` of the points (ultralytics' dotted line)."""
    v = np.asarray(values, dtype=np.float64)
    k = max(1, int(round(len(v) * frac)) // 2 * 2 + 1)  # odd window
    if k == 1 or len(v) < 3:
        return v
    pad = np.pad(v, k // 2, mode="edge")
    return np.convolve(pad, np.ones(k) / k, mode="valid")


def plot_results(
    metrics_jsonl_path: str | os.PathLike,
    out_png: str | os.PathLike,
    *,
    ncols: int = 5,
    panel_size: tuple[float, float] = (3.2, 2.6),
    dpi: int = 100,
) -> tuple[Path, list[str]]:
    """Every loss and every evaluated metric of a run, one small panel each (ultralytics'
    ``results.png``), from its ``metrics.jsonl``.

    Training records (those with ``loss``/``loss_*`` keys) give one panel per loss key against
    ``step``, with a moving average dotted over the raw line; evaluation records (numeric keys
    and no loss) give one panel per metric against ``epoch`` (``val/AP``, ``val/top1`` …), in the
    order the file first names them. A metric value of -1 (COCO's "no ground truth in this size
    bucket") is not drawn; a panel with no drawable point says so.

    Returns:
        ``(path, titles)``: the PNG written (``ncols`` panels a row, each ``panel_size`` inches at
        ``dpi``) and the panel titles in grid order (``train/<loss>``, then ``val/<metric>``).

    Raises:
        UserInputError: the file is missing or unreadable, or holds no loss or metric record.
    """
    records = _read_jsonl(Path(metrics_jsonl_path))
    train = [r for r in records if any(_is_loss_key(k) and _num(v) for k, v in r.items())]
    val = [r for r in records if not any(_is_loss_key(k) for k in r)]
    loss_keys = sorted({k for r in train for k, v in r.items() if _is_loss_key(k) and _num(v)},
                       key=lambda k: (k != "loss", k))
    metric_keys = list(dict.fromkeys(k for r in val for k, v in r.items()
                                     if _num(v) and k not in ("epoch", "step", "lr")))
    panels = [("train", k) for k in loss_keys] + [("val", k) for k in metric_keys]
    if not panels:
        raise UserInputError(f"{metrics_jsonl_path}: no loss or metric records to plot")
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure((panel_size[0] * ncols, panel_size[1] * nrows), dpi)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).reshape(-1)
    titles = []
    for ax, (split, key) in zip(axes, panels):
        rows = train if split == "train" else val
        x_key = "step" if split == "train" else "epoch"
        pts = [(r[x_key] if _num(r.get(x_key)) else i, float(r[key])) for i, r in enumerate(rows)
               if _num(r.get(key)) and (split == "train" or r[key] >= 0)]
        pts = [(x, y) for x, y in pts if math.isfinite(y)]
        title = f"{split}/{key}"
        titles.append(title)
        ax.set_title(title, fontsize="medium")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize="small")
        ax.set_xlabel(x_key, fontsize="small")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and epochs are whole
        if not pts:
            ax.text(0.5, 0.5, "no data" if split == "train" else "no data\n(-1: no ground truth)",
                    ha="center", va="center", transform=ax.transAxes, color="gray")
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        if split == "train":
            ax.plot(xs, ys, lw=1.0, marker="." if len(xs) < 20 else None, label="raw")
            if len(xs) >= 10:
                ax.plot(xs, _smooth(ys), ls=":", lw=1.5, color="black", label="smooth")
        else:
            ax.plot(xs, ys, lw=1.0, marker="o", ms=3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return _save_figure(fig, out_png), titles



# ---------------------------------------------------------------------------------------------
# evaluation: PR curves, confusion matrix, per-class bars
# ---------------------------------------------------------------------------------------------
Labelled = Sequence[tuple[str, Any]]  # [(label, analysis or mapping), ...]: several models


def _labelled(items: Any, what: type | tuple[type, ...]) -> list[tuple[str, Any]]:
    """One object or a list of ``(label, object)`` as a list of ``(label, object)``."""
    if isinstance(items, what):
        return [("", items)]
    out = list(items)
    if not out or not all(isinstance(t, tuple) and len(t) == 2 and isinstance(t[1], what) for t in out):
        raise ValueError("pass one object or a non-empty list of (label, object) pairs")
    return [(str(label), obj) for label, obj in out]


def _rgb(label: int) -> tuple[float, float, float]:
    return tuple(c / 255.0 for c in palette(label))  # type: ignore[return-value]


def _pct(v: float) -> str:
    return f"{100.0 * v:.1f}" if v >= 0 else "-"


def plot_pr_curves(
    analyses: DetectionAnalysis | Labelled,
    *,
    ious: Sequence[str] = ("0.5", "0.5:0.95"),
    per_class: bool | None = None,
    max_legend: int = 12,
    panel_size: tuple[float, float] = (5.0, 4.4),
    dpi: int = 100,
) -> Figure:
    """Precision-recall curves, one panel per IoU setting (``"0.5"``, ``"0.5:0.95"``: the mean of
    the 10 COCO thresholds).

    Args:
        analyses: one :class:`~hybridvision.evaluation.analysis.DetectionAnalysis` (the all-classes
            curve bold, one thin curve per class) or a list of ``(label, analysis)`` (a study:
            the all-classes curve of each model on one axis).
        ious: which panels.
        per_class: draw the per-class curves; default True for one analysis, False for several.
        max_legend: name at most this many per-class curves in the legend.

    Returns:
        A Figure of ``len(ious)`` panels; legends give AP (AP50 for ``"0.5"``) in %.
    """
    items = _labelled(analyses, DetectionAnalysis)
    single = len(items) == 1 and not items[0][0]
    per_class = single if per_class is None else per_class
    fig = _new_figure((panel_size[0] * len(ious), panel_size[1]), dpi)
    axes = np.asarray(fig.subplots(1, len(ious), squeeze=False)).reshape(-1)
    for ax, iou in zip(axes, ious):
        for m, (label, a) in enumerate(items):
            if per_class:
                for k, name in enumerate(a.class_names):
                    curve = a.pr_curve(iou, k)
                    if np.isnan(curve).all():
                        continue  # no ground truth: no curve
                    shown = len(items) == 1 and k < max_legend
                    ax.plot(a.recall, curve, lw=0.8, alpha=0.7, color=_rgb(k),
                            label=f"{name} {_pct(float(np.mean(curve)))}" if shown else None)
            colour = "black" if len(items) == 1 else f"C{m}"
            name = f"{label}: all classes" if label else "all classes"
            ax.plot(a.recall, a.pr_curve(iou), lw=2.5, color=colour, label=f"{name} {_pct(a.ap(iou))}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"IoU {iou} ({'AP50' if iou == '0.5' else 'AP'} %)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="lower left")
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    analysis: DetectionAnalysis,
    *,
    annotate: bool | None = None,
    dpi: int = 100,
) -> Figure:
    """The detection confusion matrix: rows ground truth, columns prediction, the last of each
    "background" (missed ground truth in the last column, false positives in the last row).

    Colour is each row's share (rows sum to 1: where the boxes of a class went); cells show the
    counts (``annotate``: default when there are at most 30 rows).
    """
    m = np.asarray(analysis.confusion, dtype=np.float64)  # [K + 1, K + 1]
    labels = list(analysis.matrix_labels)
    n = len(labels)
    annotate = n <= 30 if annotate is None else annotate
    side = float(min(max(3.0 + 0.45 * n, 5.0), 20.0))
    fig = _new_figure((side + 1.0, side), dpi)
    ax = fig.subplots(1, 1)
    totals = m.sum(axis=1, keepdims=True)  # [K + 1, 1]
    share = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)  # [K + 1, K + 1]
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 0, fontsize="small")
    ax.set_yticks(range(n), labels, fontsize="small")
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"confusion matrix (IoU >= {analysis.iou_threshold:g}, score >= {analysis.score_threshold:g})")
    if annotate:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize="x-small",
                            color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def _grouped_bars(ax: Any, names: list[str], series: list[tuple[str, list[float]]], ylabel: str) -> None:
    """Bars per class name, one colour per series; NaN values draw no bar."""
    width = 0.8 / len(series)
    x = np.arange(len(names))
    for s, (label, values) in enumerate(series):
        ax.bar(x - 0.4 + width * (s + 0.5), values, width, label=label or None, color=f"C{s}")
    ax.set_xticks(x, names, rotation=90 if len(names) > 8 else 0, fontsize="small")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if any(label for label, _ in series):
        ax.legend(fontsize="small")


def _bar_figure(names: list[str], series: list[tuple[str, list[float]]], ylabel: str, title: str,
                dpi: int) -> Figure:
    fig = _new_figure((float(min(max(4.0, 0.35 * len(names) * len(series) + 2.0), 30.0)), 4.0), dpi)
    ax = fig.subplots(1, 1)
    _grouped_bars(ax, names, series, ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_per_class_ap(analyses: DetectionAnalysis | Labelled, *, metric: str = "AP", dpi: int = 100) -> Figure:
    """Per-class ``metric`` (``AP``, ``AP50`` or ``AP75``, in %) as bars, grouped by class: one
    bar per model for a list of ``(label, analysis)``. A class without ground truth has no bar;
    classes are the first analysis's, then any the others add."""
    if metric not in ("AP", "AP50", "AP75"):
        raise ValueError(f"metric must be AP, AP50 or AP75, got {metric!r}")
    items = _labelled(analyses, DetectionAnalysis)
    names = list(dict.fromkeys(n for _, a in items for n in a.class_names))
    series = []
    for label, a in items:
        rows = {r.name: getattr(r, metric) for r in a.per_class}
        series.append((label, [100.0 * rows[n] if rows.get(n, -1) >= 0 else np.nan for n in names]))
    return _bar_figure(names, series, f"{metric} (%)", f"per-class {metric}", dpi)


def plot_per_class_accuracy(accuracies: Mapping[str, float] | Labelled, *, dpi: int = 100) -> Figure:
    """Per-class accuracy in % (:func:`~hybridvision.evaluation.analysis.per_class_accuracy`'s
    ``{name: accuracy}``, -1: no sample, no bar), or grouped bars for a list of ``(label, it)``."""
    items = _labelled(accuracies, Mapping)
    names = list(dict.fromkeys(n for _, acc in items for n in acc))
    series = [(label, [100.0 * acc[n] if acc.get(n, -1) >= 0 else np.nan for n in names])
              for label, acc in items]
    return _bar_figure(names, series, "accuracy (%)", "per-class accuracy", dpi)


def save_analysis_plots(analysis: DetectionAnalysis, folder: str | os.PathLike) -> list[Path]:
    """Write ``pr_curve.png`` and ``confusion_matrix.png`` of one evaluation into ``folder``."""
    folder = Path(folder)
    return [_save_figure(plot_pr_curves(analysis), folder / "pr_curve.png"),
            _save_figure(plot_confusion_matrix(analysis), folder / "confusion_matrix.png")]


# ---------------------------------------------------------------------------------------------
# dataset statistics
# ---------------------------------------------------------------------------------------------
def plot_class_counts(stats: DatasetStats, *, dpi: int = 100) -> Figure:
    """Boxes per class, as bars (class order of the file's categories)."""
    names = list(stats.class_counts)
    fig = _new_figure((float(min(max(5.0, 0.3 * len(names) + 2.0), 30.0)), 4.0), dpi)
    ax = fig.subplots(1, 1)
    counts = [stats.class_counts[n] for n in names]
    ax.bar(range(len(names)), counts, color=[_rgb(k) for k in range(len(names))])
    ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 8 else 0, fontsize="small")
    ax.set_ylabel("boxes")
    ax.set_title(f"instances per class ({stats.boxes} boxes, {stats.images} images)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_box_sizes(stats: DatasetStats, *, bins: int = 40, dpi: int = 100) -> Figure:
    """Histogram of the box side sqrt(area) in pixels, on a log axis, with COCO's small / medium /
    large edges (32, 96) marked and each bucket's share written in it."""
    fig = _new_figure((7.0, 4.0), dpi)
    ax = fig.subplots(1, 1)
    sides = np.asarray(stats.sides, dtype=np.float64)
    sides = sides[sides > 0]
    lo = min(float(sides.min()) if sides.size else 1.0, SIZE_EDGES[0] / 2)
    hi = max(float(sides.max()) if sides.size else 1.0, SIZE_EDGES[1] * 2)
    edges = np.geomspace(lo, hi * 1.0001, bins + 1)
    ax.hist(sides, bins=edges, color="C0")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    for edge in SIZE_EDGES:
        ax.axvline(edge, color="black", ls="--", lw=1.0)
    bounds = [lo, *SIZE_EDGES, hi]
    for k, name in enumerate(("small", "medium", "large")):
        centre = math.sqrt(bounds[k] * bounds[k + 1])
        ax.text(centre, 0.95, f"{name}\n{100.0 * stats.buckets[name]:.0f} %", ha="center", va="top",
                transform=ax.get_xaxis_transform(), fontsize="small",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    ax.set_xlabel("box side sqrt(area) (pixels)")
    ax.set_ylabel("boxes")
    ax.set_title("box sizes (COCO buckets: < 32, 32-96, >= 96)")
    fig.tight_layout()
    return fig


def plot_box_centres(stats: DatasetStats, *, bins: int = 50, dpi: int = 100) -> Figure:
    """Heat map of the box centres in normalised image coordinates (x right, y down, 0..1)."""
    fig = _new_figure((5.5, 4.6), dpi)
    ax = fig.subplots(1, 1)
    c = np.clip(np.asarray(stats.centres, dtype=np.float64).reshape(-1, 2), 0.0, 1.0)  # [N, 2]
    heat, _, _ = np.histogram2d(c[:, 1], c[:, 0], bins=bins, range=[[0, 1], [0, 1]])  # [y, x]
    im = ax.imshow(heat, extent=(0, 1, 1, 0), cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="boxes")
    ax.set_xlabel("x / image width")
    ax.set_ylabel("y / image height")
    ax.set_title("box centres")
    fig.tight_layout()
    return fig


def save_dataset_stats_plots(stats: DatasetStats, folder: str | os.PathLike) -> list[Path]:
    """Write ``class_counts.png``, ``box_sizes.png`` and ``box_centres.png`` into ``folder``."""
    folder = Path(folder)
    return [_save_figure(plot_class_counts(stats), folder / "class_counts.png"),
            _save_figure(plot_box_sizes(stats), folder / "box_sizes.png"),
            _save_figure(plot_box_centres(stats), folder / "box_centres.png")]
