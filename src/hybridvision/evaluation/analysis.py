"""What an evaluation shows beyond its 12 numbers: PR curves, per-class AP, a confusion matrix,
per-class accuracy (classification) and the statistics of a COCO annotation file.

Everything here is numbers (numpy arrays, dataclasses) and the JSON/CSV files that hold them; the
pictures of the same objects are drawn by :mod:`hybridvision.plots`. A study calls
:func:`detection_analysis` directly (no files); a run and ``hybridvision eval`` get the analysis
with their evaluation (:func:`evaluate_with_analysis`, one COCO evaluation for both) and write it
with :func:`write_analysis_files`.

PR curves and per-class AP are read from faster-coco-eval's accumulated ``eval["precision"]``
array ``[T, R, K, A, M]`` (T = 10 IoU thresholds 0.50:0.05:0.95, R = 101 recall points 0:0.01:1,
K categories, A = 4 areas, M = 3 maxDets) at area ``all`` and maxDets N (100 unless ``max_dets``
is set), the slice COCO's AP is
averaged over. COCO writes -1 where a category has no (non-crowd) ground truth; here such a class
holds NaN (``null`` in JSON, -1 in the AP table, as in ``coco_metrics.json``) and is left out of
the "all classes" curve, exactly as COCO leaves it out of AP. Beyond the highest recall a class
reaches, COCO's precision is 0, and so it is here.

Symbols: T IoU thresholds, R recall points, K categories, G ground-truth boxes and D detections
of one image, N boxes of a dataset.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybridvision.data.validate import check_coco, raise_for_findings
from hybridvision.errors import UserInputError
from hybridvision.evaluation.coco import CocoRun, coco_evaluation, run_coco_eval
from hybridvision.fileio import atomic_write_text, read_json

__all__ = [
    "ANALYSIS_FILES",
    "BACKGROUND",
    "SIZE_EDGES",
    "STATS_FILES",
    "ClassAP",
    "DetectionAnalysis",
    "DatasetStats",
    "analysis_from_run",
    "confusion_matrix",
    "dataset_stats",
    "detection_analysis",
    "evaluate_with_analysis",
    "per_class_accuracy",
    "write_analysis_files",
    "write_dataset_stats",
]

BACKGROUND = "background"  # the name of the confusion matrix's last row and column
# COCO's size buckets by sqrt(area): small < 32 <= medium < 96 <= large (pixels).
SIZE_EDGES = (32.0, 96.0)
# The data files an evaluation folder gets from write_analysis_files (the PNGs come from plots).
ANALYSIS_FILES = ("pr_curves.json", "confusion_matrix.json", "per_class_ap.csv")
# What `hybridvision data stats` writes (write_dataset_stats + plots.save_dataset_stats_plots).
STATS_FILES = ("stats.json", "class_counts.png", "box_sizes.png", "box_centres.png")
IOU_SETTINGS = ("0.5", "0.5:0.95")  # the two PR curves of every class


# ------------------------------------------------------------------------------------ helpers
def _mean_valid(a: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Mean over ``axis`` of the non-NaN entries; NaN where there are none (no warning)."""
    valid = ~np.isnan(a)
    count = valid.sum(axis=axis)
    total = np.where(valid, a, 0.0).sum(axis=axis)
    return np.divide(total, count, out=np.full(np.shape(total), np.nan), where=count > 0)


def _float_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(float(v)) else None


def _listed(a: np.ndarray) -> list[Any]:
    """A float array as nested lists with NaN as None (JSON has no NaN)."""
    if a.ndim == 0:
        return _float_or_none(a)  # type: ignore[return-value]
    return [_listed(x) for x in a] if a.ndim > 1 else [_float_or_none(x) for x in a]


def _xyxy(boxes_xywh: np.ndarray) -> np.ndarray:
    b = boxes_xywh.reshape(-1, 4).astype(np.float64)  # [N, 4] x, y, w, h
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)  # [N, 4] x1, y1, x2, y2


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of xyxy boxes ``a`` [G, 4] and ``b`` [D, 4] -> [G, D]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # [G, D, 2]
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # [G, D, 2]
    wh = np.clip(rb - lt, 0.0, None)  # [G, D, 2]
    return wh[..., 0] * wh[..., 1]


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # [N]


# ------------------------------------------------------------------------------ the analysis
@dataclass(frozen=True)
class ClassAP:
    """One row of the per-class AP table (fractions; -1 for a class without ground truth)."""

    name: str
    category_id: int
    AP: float
    AP50: float
    AP75: float
    n_gt: int


@dataclass(frozen=True, eq=False)  # arrays: no field-wise ==
class DetectionAnalysis:
    """PR curves, per-class AP and a confusion matrix of one detection evaluation.

    Attributes:
        class_names: ``[K]`` category names in category-id order (a repeated name gets ``#id``).
        category_ids: ``[K]`` COCO category ids.
        recall: ``[R]`` the 101 recall points 0, 0.01, …, 1.
        iou_thresholds: ``[T]`` 0.50, 0.55, …, 0.95.
        precision: ``[T, R, K]`` COCO's interpolated precision at area ``all``, maxDets N; NaN
            for a class without ground truth (COCO's -1).
        n_gt: ``[K]`` non-crowd ground-truth boxes per class.
        per_class: the AP table, one :class:`ClassAP` per class.
        confusion: ``[K + 1, K + 1]`` counts, rows = ground-truth class, columns = predicted
            class, the last row and column = background (see :func:`confusion_matrix`).
        iou_threshold, score_threshold: the confusion matrix's matching rule.
        max_dets: N, the detections per image COCO counted (its ``maxDets[-1]``).
    """

    class_names: list[str]
    category_ids: list[int]
    recall: np.ndarray
    iou_thresholds: np.ndarray
    precision: np.ndarray
    n_gt: np.ndarray
    per_class: list[ClassAP]
    confusion: np.ndarray
    iou_threshold: float = 0.5
    score_threshold: float = 0.25
    max_dets: int = 100

    @property
    def matrix_labels(self) -> list[str]:
        """The confusion matrix's row and column names: the classes, then ``"background"``."""
        return [*self.class_names, BACKGROUND]

    def pr_curve(self, iou: str = "0.5:0.95", class_index: int | None = None) -> np.ndarray:
        """Precision ``[R]`` at each recall point for ``iou`` ``"0.5"`` or ``"0.5:0.95"`` (the mean
        over the 10 thresholds), of one class (NaN if it has no ground truth) or, with
        ``class_index=None``, of all classes (the mean over the classes with ground truth; its
        mean over R is AP50 or AP)."""
        if iou == "0.5":
            t50 = int(np.argmin(np.abs(self.iou_thresholds - 0.5)))
            p = self.precision[t50:t50 + 1]  # [1, R, K]
        elif iou == "0.5:0.95":
            p = self.precision  # [T, R, K]
        else:
            raise ValueError(f"iou must be one of {IOU_SETTINGS}, got {iou!r}")
        if class_index is not None:
            return p[:, :, class_index].mean(axis=0)  # [R]; NaN stays NaN
        return _mean_valid(p, axis=2).mean(axis=0)  # [R]

    def ap(self, iou: str = "0.5:0.95") -> float:
        """AP of all classes (``"0.5"``: AP50); -1 when no class has ground truth."""
        v = float(_mean_valid(self.pr_curve(iou), axis=0))
        return v if math.isfinite(v) else -1.0

    def per_class_ap(self) -> dict[str, float]:
        """``{class name: AP}``, as ``evaluate_coco``'s ``per_class``."""
        return {row.name: row.AP for row in self.per_class}


def confusion_matrix(
    gt: Mapping[str, Any],
    results: Sequence[Mapping[str, Any]],
    category_ids: Sequence[int],
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.25,
) -> np.ndarray:
    """Detection confusion matrix with a background class, ``[K + 1, K + 1]`` int64.

    The rule (per image, classes ignored while matching, as ultralytics' ``ConfusionMatrix``):

    1. keep the detections with ``score >= score_threshold``;
    2. compute the IoU of every non-crowd ground-truth box with every kept detection, of any
       classes, and take the pairs with ``IoU >= iou_threshold`` greedily, highest IoU first
       (ties: higher score, then file order); each ground truth and each detection is used once;
    3. a matched pair counts in ``[gt class, predicted class]`` (the diagonal: right class);
       an unmatched ground truth in ``[gt class, background]`` (missed); an unmatched detection
       in ``[background, predicted class]`` (false positive).

    Crowd ground truth (``iscrowd=1``) is ignored, as COCO ignores it: it is never missed, and a
    detection left unmatched that lies on a crowd region (intersection / detection area
    ``>= iou_threshold``, COCO's crowd overlap) is dropped rather than called a false positive.
    ``[background, background]`` is always 0.

    Args:
        gt: COCO ground truth (``images``, ``annotations`` with ``bbox`` xywh, ``iscrowd``).
        results: COCO result records ``dict(image_id, category_id, bbox, score)``.
        category_ids: the K category ids, in the order of the matrix's rows.
    """
    index = {int(c): k for k, c in enumerate(category_ids)}
    K = len(index)
    matrix = np.zeros((K + 1, K + 1), dtype=np.int64)
    gts: dict[int, list[Mapping[str, Any]]] = {}
    for a in gt.get("annotations", []):
        gts.setdefault(int(a["image_id"]), []).append(a)
    dts: dict[int, list[Mapping[str, Any]]] = {}
    for r in results:
        if float(r["score"]) >= score_threshold:
            dts.setdefault(int(r["image_id"]), []).append(r)
    for image_id in set(gts) | set(dts):
        anns, dets = gts.get(image_id, []), dts.get(image_id, [])
        crowd = [a for a in anns if int(a.get("iscrowd", 0))]
        anns = [a for a in anns if not int(a.get("iscrowd", 0))]
        g_cls = np.array([index[int(a["category_id"])] for a in anns], dtype=np.int64)  # [G]
        d_cls = np.array([index[int(r["category_id"])] for r in dets], dtype=np.int64)  # [D]
        g_box = _xyxy(np.array([a["bbox"] for a in anns], dtype=np.float64))  # [G, 4]
        d_box = _xyxy(np.array([r["bbox"] for r in dets], dtype=np.float64))  # [D, 4]
        d_score = np.array([float(r["score"]) for r in dets], dtype=np.float64)  # [D]
        g_used = np.zeros(len(anns), dtype=bool)
        d_used = np.zeros(len(dets), dtype=bool)
        if len(anns) and len(dets):
            inter = _intersection(g_box, d_box)  # [G, D]
            union = _area(g_box)[:, None] + _area(d_box)[None, :] - inter  # [G, D]
            iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)  # [G, D]
            gi, di = np.nonzero(iou >= iou_threshold)
            order = np.lexsort((di, gi, -d_score[di], -iou[gi, di]))  # last key sorts first
            for g, d in zip(gi[order], di[order]):
                if not (g_used[g] or d_used[d]):
                    g_used[g] = d_used[d] = True
                    matrix[g_cls[g], d_cls[d]] += 1
        np.add.at(matrix, (g_cls[~g_used], K), 1)  # missed ground truth
        fp = ~d_used
        if crowd and fp.any():
            c_box = _xyxy(np.array([a["bbox"] for a in crowd], dtype=np.float64))  # [C, 4]
            d_area = _area(d_box)  # [D]
            ioa = np.divide(_intersection(c_box, d_box), d_area[None, :],
                            out=np.zeros((len(crowd), len(dets))), where=d_area[None, :] > 0)  # [C, D]
            fp &= ~(ioa >= iou_threshold).any(axis=0)
        np.add.at(matrix, (K, d_cls[fp]), 1)  # false positives
    return matrix


def analysis_from_run(run: CocoRun, *, iou_threshold: float = 0.5,
                      score_threshold: float = 0.25) -> DetectionAnalysis:
    """The analysis of a finished COCO evaluation (:func:`hybridvision.evaluation.coco.run_coco_eval`)."""
    ev = run.evaluator
    raw = np.asarray(ev.eval["precision"], dtype=np.float64)[:, :, :, 0, -1]  # [T, R, K]
    precision = np.where(raw > -1, raw, np.nan)  # [T, R, K]
    iou_thrs = np.asarray(ev.params.iouThrs, dtype=np.float64)  # [T]
    cat_ids = [int(c) for c in ev.params.catIds]
    names = run.class_names()
    counts = dict.fromkeys(cat_ids, 0)
    for a in run.gt["annotations"]:
        if not a["iscrowd"]:
            counts[a["category_id"]] += 1
    n_gt = np.array([counts[c] for c in cat_ids], dtype=np.int64)  # [K]

    def at(t: int) -> np.ndarray:  # [K] mean over R of one threshold; NaN without ground truth
        return _mean_valid(precision[t], axis=0)

    ap = _mean_valid(precision, axis=(0, 1))  # [K], the mean over valid entries, as COCO
    t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
    ap50, ap75 = at(t50), at(t75)
    rows = [ClassAP(name=names[k], category_id=cat_ids[k], AP=_or_minus_one(ap[k]),
                    AP50=_or_minus_one(ap50[k]), AP75=_or_minus_one(ap75[k]), n_gt=int(n_gt[k]))
            for k in range(len(cat_ids))]
    matrix = confusion_matrix(run.gt, run.results, cat_ids, iou_threshold=iou_threshold,
                              score_threshold=score_threshold)
    return DetectionAnalysis(
        class_names=names, category_ids=cat_ids,
        recall=np.asarray(ev.params.recThrs, dtype=np.float64), iou_thresholds=iou_thrs,
        precision=precision,
        n_gt=n_gt, per_class=rows, confusion=matrix, iou_threshold=float(iou_threshold),
        score_threshold=float(score_threshold), max_dets=int(run.max_dets),
    )


def _or_minus_one(v: float) -> float:
    return float(v) if math.isfinite(float(v)) else -1.0


def _check_thresholds(iou_threshold: float, score_threshold: float) -> None:
    if not (isinstance(iou_threshold, (int, float)) and 0.0 < iou_threshold <= 1.0):
        raise UserInputError(f"iou_threshold {iou_threshold!r}: use a number in (0, 1], e.g. 0.5")
    if not (isinstance(score_threshold, (int, float)) and 0.0 <= score_threshold <= 1.0):
        raise UserInputError(f"score_threshold {score_threshold!r}: use a number in [0, 1], e.g. 0.25")


def detection_analysis(
    gt: str | os.PathLike | Mapping[str, Any],
    results: str | os.PathLike | Sequence[Mapping[str, Any]],
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.25,
    max_dets: int = 100,
) -> DetectionAnalysis:
    """PR curves, per-class AP and confusion matrix of COCO ``results`` against ``gt``.

    Args:
        gt: a COCO annotation file or its content (not modified).
        results: a COCO results file or list ``dict(image_id, category_id, bbox, score)``.
        iou_threshold, score_threshold: the confusion matrix's rule (:func:`confusion_matrix`);
            the PR curves and AP use COCO's own thresholds.
        max_dets: N of COCO's ``maxDets = [1, 10, N]`` (:func:`~hybridvision.evaluation.coco.evaluate_coco`).

    Raises:
        UserInputError: malformed ground truth or results (as :func:`evaluate_coco`).
    """
    _check_thresholds(iou_threshold, score_threshold)
    return analysis_from_run(run_coco_eval(gt, results, max_dets=max_dets), iou_threshold=iou_threshold,
                             score_threshold=score_threshold)


def evaluate_with_analysis(
    gt: str | os.PathLike | Mapping[str, Any],
    results: str | os.PathLike | Sequence[Mapping[str, Any]],
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.25,
    max_dets: int = 100,
) -> dict[str, Any]:
    """``evaluate_coco``'s result plus ``"analysis"`` (a :class:`DetectionAnalysis`), from one
    COCO evaluation; ``max_dets``: N of COCO's ``maxDets = [1, 10, N]``."""
    _check_thresholds(iou_threshold, score_threshold)
    run = run_coco_eval(gt, results, max_dets=max_dets)
    return {**coco_evaluation(run), "analysis": analysis_from_run(
        run, iou_threshold=iou_threshold, score_threshold=score_threshold)}


# ---------------------------------------------------------------------------------- files
def pr_curves_dict(analysis: DetectionAnalysis) -> dict[str, Any]:
    """The content of ``pr_curves.json``."""
    def curve(iou: str, k: int | None) -> list[float | None] | None:
        c = analysis.pr_curve(iou, k)  # [R]
        return None if np.isnan(c).all() and k is not None else _listed(c)

    curves = {iou: {"all": curve(iou, None),
                    "per_class": {name: curve(iou, k) for k, name in enumerate(analysis.class_names)}}
              for iou in IOU_SETTINGS}
    return {
        "area": "all", "max_dets": analysis.max_dets,
        "about": "COCO interpolated precision at each recall point (faster-coco-eval's accumulated "
                 "eval['precision'], area all, maxDets max_dets); '0.5:0.95' is the mean over the 10 IoU "
                 "thresholds; 'all' is the mean over the classes with ground truth; null: the class "
                 "has no ground truth (COCO's -1); 0 beyond the highest recall reached",
        "recall": _listed(analysis.recall),
        "classes": list(analysis.class_names),
        "category_ids": list(analysis.category_ids),
        "precision": curves,
    }


def confusion_dict(analysis: DetectionAnalysis) -> dict[str, Any]:
    """The content of ``confusion_matrix.json``."""
    return {
        "rows": "ground truth", "columns": "prediction",
        "labels": list(analysis.matrix_labels),
        "iou_threshold": analysis.iou_threshold, "score_threshold": analysis.score_threshold,
        "about": "detections with score >= score_threshold matched greedily (highest IoU first, "
                 "classes ignored) to non-crowd ground truth at IoU >= iou_threshold; last row: "
                 "false positives, last column: missed ground truth",
        "matrix": analysis.confusion.tolist(),
    }


def per_class_csv(analysis: DetectionAnalysis) -> str:
    """The content of ``per_class_ap.csv``: class, AP, AP50, AP75, n_gt (fractions; -1: no
    ground truth)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class", "AP", "AP50", "AP75", "n_gt"])
    for row in analysis.per_class:
        w.writerow([row.name, *(f"{v:.6f}" if v >= 0 else "-1" for v in (row.AP, row.AP50, row.AP75)),
                    row.n_gt])
    return buf.getvalue()


def write_analysis_files(analysis: DetectionAnalysis, folder: str | os.PathLike) -> list[Path]:
    """Write ``pr_curves.json``, ``confusion_matrix.json`` and ``per_class_ap.csv`` into
    ``folder`` (atomically); returns the paths."""
    folder = Path(folder)
    return [
        atomic_write_text(folder / "pr_curves.json", json.dumps(pr_curves_dict(analysis)) + "\n"),
        atomic_write_text(folder / "confusion_matrix.json", json.dumps(confusion_dict(analysis), indent=1) + "\n"),
        atomic_write_text(folder / "per_class_ap.csv", per_class_csv(analysis)),
    ]


# --------------------------------------------------------------------------- classification
def per_class_accuracy(labels: Any, preds: Any, class_names: Sequence[str]) -> dict[str, float]:
    """Accuracy of each true class: the share of its samples predicted as it (its recall).

    Args:
        labels: ``[N]`` true class indices 0..K-1 (a list, numpy array or tensor).
        preds: ``[N]`` predicted class indices (e.g. ``logits.argmax(1)``).
        class_names: the K names.

    Returns:
        ``{name: accuracy}`` in class order; -1 for a class with no sample.
    """
    y = np.asarray(labels.tolist() if hasattr(labels, "tolist") else labels, dtype=np.int64).reshape(-1)
    p = np.asarray(preds.tolist() if hasattr(preds, "tolist") else preds, dtype=np.int64).reshape(-1)
    K = len(class_names)
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} predictions")
    if y.size and (y.min() < 0 or y.max() >= K):
        raise ValueError(f"labels must be in 0..{K - 1} (one per class name)")
    total = np.bincount(y, minlength=K)  # [K]
    right = np.bincount(y[y == p], minlength=K)  # [K]
    return {name: (float(right[k] / total[k]) if total[k] else -1.0) for k, name in enumerate(class_names)}


# ---------------------------------------------------------------------------- dataset stats
@dataclass(frozen=True, eq=False)
class DatasetStats:
    """Statistics of a COCO annotation file.

    Attributes:
        source: the file.
        images, boxes, crowd, empty_images: counts (``boxes`` counts every annotation, crowd
            ones too; ``empty_images``: images without any annotation).
        class_counts: ``{class name: boxes}`` in category-id order (a repeated name gets ``#id``).
        sides: ``[N]`` sqrt(area) of every box (``area`` of the record, else w·h), pixels.
        centres: ``[N, 2]`` box centres as fractions of their image's width and height.
        buckets: share of the boxes in COCO's small (side < 32), medium (32 <= side < 96) and
            large (side >= 96) buckets.
    """

    source: str
    images: int
    boxes: int
    crowd: int
    empty_images: int
    class_counts: dict[str, int]
    sides: np.ndarray
    centres: np.ndarray
    buckets: dict[str, float]

    def summary(self, max_classes: int = 12) -> str:
        """A few lines for the console: counts, the largest classes, the size buckets."""
        crowd = f" ({self.crowd} crowd)" if self.crowd else ""
        empty = f", {self.empty_images} without boxes" if self.empty_images else ""
        ranked = sorted(self.class_counts.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{name} {n}" for name, n in ranked[:max_classes])
        more = f", … ({len(ranked) - max_classes} more)" if len(ranked) > max_classes else ""
        side = (f"; box side median {float(np.median(self.sides)):.1f} px" if self.sides.size else "")
        return "\n".join([
            f"{self.source}: {self.images} images{empty}, {self.boxes} boxes{crowd}, "
            f"{len(self.class_counts)} classes",
            f"boxes per class: {shown}{more}",
            "COCO size buckets: " + " · ".join(f"{k} {100.0 * v:.0f} %" for k, v in self.buckets.items())
            + side,
        ])

    def to_dict(self) -> dict[str, Any]:
        """The content of ``stats.json``."""
        s = self.sides
        return {
            "source": self.source, "images": self.images, "boxes": self.boxes, "crowd": self.crowd,
            "classes": len(self.class_counts), "class_counts": dict(self.class_counts),
            "size_edges": list(SIZE_EDGES), "buckets": dict(self.buckets),
            "side": ({"min": float(s.min()), "median": float(np.median(s)), "max": float(s.max())}
                     if s.size else None),
            "images_without_boxes": self.empty_images,
        }


def dataset_stats(ann_file: str | os.PathLike) -> DatasetStats:
    """Read, validate (:func:`hybridvision.data.validate.check_coco`, as ``data check
    --no-images``) and summarise a COCO annotation file.

    Raises:
        DataError: the file is not a usable COCO file (every problem listed; the first one is
            the one-line message).
    """
    findings = check_coco(ann_file, None, check_images=False)
    raise_for_findings(findings, what=str(ann_file))
    data = read_json(ann_file, what="COCO annotation")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    names: dict[int, str] = {}
    for c in cats:
        name = str(c["name"])
        names[c["id"]] = f"{name}#{c['id']}" if name in names.values() else name
    images = {im["id"]: im for im in data["images"]}
    anns = data["annotations"]
    counts = dict.fromkeys(names.values(), 0)
    sides = np.zeros(len(anns))  # [N]
    centres = np.zeros((len(anns), 2))  # [N, 2]
    for i, a in enumerate(anns):
        x, y, w, h = (float(v) for v in a["bbox"])
        area = a.get("area")
        area = float(area) if isinstance(area, (int, float)) and not isinstance(area, bool) else w * h
        sides[i] = math.sqrt(max(area, 0.0))
        im = images[a["image_id"]]
        centres[i] = ((x + w / 2) / im["width"], (y + h / 2) / im["height"])
        counts[names[a["category_id"]]] += 1
    n = max(len(anns), 1)
    small, large = SIZE_EDGES
    buckets = {"small": float((sides < small).sum() / n),
               "medium": float(((sides >= small) & (sides < large)).sum() / n),
               "large": float((sides >= large).sum() / n)}
    return DatasetStats(source=str(ann_file), images=len(images), boxes=len(anns),
                        crowd=sum(1 for a in anns if a.get("iscrowd", 0)),
                        empty_images=len(set(images) - {a["image_id"] for a in anns}), class_counts=counts,
                        sides=sides, centres=centres, buckets=buckets)


def write_dataset_stats(stats: DatasetStats, folder: str | os.PathLike) -> Path:
    """Write ``stats.json`` into ``folder`` (atomically); returns its path."""
    return atomic_write_text(Path(folder) / "stats.json", json.dumps(stats.to_dict(), indent=1) + "\n")
