"""The 12 COCO detection numbers, computed by ``faster-coco-eval`` (the pycocotools algorithm in C++).

COCO evaluation (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014): 101-point
interpolated precision averaged over 10 IoU thresholds 0.50:0.05:0.95, size buckets
small < 32², medium 32²–96², large > 96² (by the ground truth ``area``), at most 1/10/100
detections per image. A bucket with no ground truth reports -1, as pycocotools does.

``max_dets`` (``eval --max-dets N``, the config key ``eval_max_dets``) raises the last of those
limits for dense scenes: COCO's ``params.maxDets`` becomes ``[1, 10, N]``, so AP and the size-bucket
ARs count up to N detections per image and class (COCO caps each image's detections of each class)
and the third recall is named ``AR{N}``
(:func:`metric_keys`; ``AR100`` at the default N = 100, so nothing changes unless N is set). An
image with more than 100 objects of a class can reach recall 1 only with N at least that count.

We never compute AP ourselves: ``faster_coco_eval.COCOeval_faster`` does, and
``tests/test_eval_coco.py`` checks it against ``pycocotools`` on randomised data. What this module
adds is input checking (bad result files become one-line :class:`UserInputError` messages), the
conversion from the detector contract (``list[dict(boxes xyxy, scores, labels)]``) to COCO results,
per-class AP, and atomic writing / table formatting for the CLI.

Symbols: N images, D detections per image, K categories.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import os
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert

from hybridvision.data.validate import Finding
from hybridvision.fileio import atomic_write_text, read_json
from hybridvision.errors import UserInputError

__all__ = [
    "COCO_METRIC_KEYS",
    "DEFAULT_MAX_DETS",
    "MAX_MAX_DETS",
    "CocoRun",
    "check_max_dets",
    "max_dets_of",
    "metric_keys",
    "run_coco_eval",
    "coco_evaluation",
    "evaluate_coco",
    "detections_to_coco_results",
    "write_metrics_json",
    "format_metrics_table",
]

# Order of ``COCOeval.stats[:12]`` for bbox: AP@[.5:.95], AP50, AP75, AP small/medium/large,
# AR at maxDets 1/10/100, AR small/medium/large (maxDets 100).
COCO_METRIC_KEYS: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip

_SUPPORTED_IOU_TYPES = ("bbox",)

DEFAULT_MAX_DETS = 100  # COCO's maxDets[-1]
MAX_MAX_DETS = 100_000  # far above any dense scene; bounds the evaluator's per-image work


def check_max_dets(max_dets: Any, *, option: str = "max_dets") -> int:
    """``max_dets`` as an int in [11, :data:`MAX_MAX_DETS`], else one-line :class:`UserInputError`.

    COCO reports AR at 1 and 10 detections besides the N given here; N must exceed 10 so that its
    ``AR{N}`` is a third, distinct number (at N <= 10 COCO would also cut AR10 to N detections).
    """
    ok = isinstance(max_dets, numbers.Integral) and not isinstance(max_dets, bool)
    if not ok or not 10 < int(max_dets) <= MAX_MAX_DETS:
        raise UserInputError(f"{option} {max_dets!r}: use an integer in [11, {MAX_MAX_DETS}] (detections per "
                             "image and class that COCO evaluates besides 1 and 10; 100 is COCO's, e.g. 300 for dense "
                             "scenes)")
    return int(max_dets)


def metric_keys(max_dets: int = DEFAULT_MAX_DETS) -> tuple[str, ...]:
    """The 12 metric names at ``maxDets = [1, 10, max_dets]``: :data:`COCO_METRIC_KEYS` with
    ``AR100`` named ``AR{max_dets}`` (unchanged at 100)."""
    return tuple(f"AR{int(max_dets)}" if k == "AR100" else k for k in COCO_METRIC_KEYS)


def max_dets_of(metrics: Mapping[str, Any]) -> int:
    """The N of a 12-number dict (its ``AR{N}`` key other than AR1 and AR10); 100 when it has none."""
    for key in metrics:
        if isinstance(key, str) and key.startswith("AR") and key[2:].isdigit() and int(key[2:]) > 10:
            return int(key[2:])
    return DEFAULT_MAX_DETS


def _silent(*_args: Any, **_kwargs: Any) -> None:
    """A print function that prints nothing: keeps faster-coco-eval's chatter off the CLI."""


def _source_name(obj: Any, default: str) -> str:
    return str(obj) if isinstance(obj, (str, os.PathLike)) else default


def _load_json(path: str | os.PathLike, what: str) -> Any:
    """The one BOM-tolerant reader (:func:`hybridvision.fileio.read_json`)."""
    return read_json(path, what=what)


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _as_int_id(x: Any) -> int | None:
    """``x`` as an int id if it is an integer (or an integral float / numpy int), else None."""
    if isinstance(x, bool):
        return None
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real) and float(x).is_integer():
        return int(x)
    return None


def _check_area_and_crowd(src: str, ann: Mapping[str, Any], index: int) -> None:
    """Refuse an ``area`` that is not a finite number >= 0 and an ``iscrowd`` that is not 0 or 1.

    Both change the numbers without a sign: ``area`` sorts a ground truth into the small /
    medium / large buckets, and a crowd box is one that detections may match without penalty
    (pycocotools reads any truthy ``iscrowd``, so ``"no"`` would be a crowd). The rule and the
    message are those of ``hybridvision data check`` (:mod:`hybridvision.data.validate`), so eval
    --gt, an evaluation of a model on COCO data and training's validation refuse a file alike.
    """
    ann_id = ann.get("id")
    named = isinstance(ann_id, (int, str)) and not isinstance(ann_id, bool)
    record = f"annotation id={ann_id}" if named else f"annotation #{index} (no id)"
    if "area" in ann and not (_is_number(ann["area"]) and float(ann["area"]) >= 0):
        raise UserInputError(str(Finding(
            src, record, f"area {ann['area']!r} is not a non-negative number",
            "write the object's area in pixels, or leave 'area' out (the evaluator uses w·h)")))
    crowd = ann.get("iscrowd", 0)
    if isinstance(crowd, bool) or not isinstance(crowd, numbers.Real) or crowd not in (0, 1):
        raise UserInputError(str(Finding(
            src, record, f"iscrowd {crowd!r} is not 0 or 1", "write iscrowd as 0 (an object) or 1 (a crowd)")))


def _prepare_gt(gt: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Load and check a COCO ground-truth dataset; returns a private deep copy safe to mutate.

    COCO's ``createIndex`` and the evaluator write into the dicts they are given, so we never hand
    them the user's objects. Missing ``iscrowd``/``area`` get the COCO defaults (0 and w·h); a
    present ``area`` must be a finite number >= 0 and ``iscrowd`` 0 or 1 (else one
    :class:`UserInputError` naming the source, the annotation and the fix); annotation ids are
    renumbered 1..M: the evaluator uses id 0 as "unmatched" and a dict keyed by
    id, so a 0 or a repeated id would silently skew the numbers.
    """
    src = _source_name(gt, "ground truth")
    data = _load_json(gt, "COCO annotation") if isinstance(gt, (str, os.PathLike)) else copy.deepcopy(dict(gt))
    if not isinstance(data, dict):
        raise UserInputError(f"{src}: a COCO annotation file must hold a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise UserInputError(
                f"{src}: missing or non-list '{key}'; a COCO file needs images, annotations, categories"
            )

    images = []
    for i, img in enumerate(data["images"]):
        img_id = _as_int_id(img.get("id")) if isinstance(img, dict) else None
        if img_id is None:
            raise UserInputError(f"{src}: images[{i}] has no integer 'id'; give every image an integer id")
        images.append({**img, "id": img_id})
    categories = []
    for i, cat in enumerate(data["categories"]):
        cat_id = _as_int_id(cat.get("id")) if isinstance(cat, dict) else None
        if cat_id is None:
            raise UserInputError(f"{src}: categories[{i}] has no integer 'id'; give every category an integer id")
        categories.append({**cat, "id": cat_id, "name": str(cat.get("name", cat_id))})

    image_ids = {img["id"] for img in images}
    cat_ids = {cat["id"] for cat in categories}
    annotations = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise UserInputError(f"{src}: annotations[{i}] is not an object")
        img_id, cat_id = _as_int_id(ann.get("image_id")), _as_int_id(ann.get("category_id"))
        bbox = ann.get("bbox")
        if img_id not in image_ids:
            raise UserInputError(f"{src}: annotations[{i}] refers to unknown image_id {ann.get('image_id')!r}")
        if cat_id not in cat_ids:
            raise UserInputError(f"{src}: annotations[{i}] refers to unknown category_id {ann.get('category_id')!r}")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise UserInputError(
                f"{src}: annotations[{i}] needs 'bbox' = [x, y, w, h] (4 finite numbers), got {bbox!r}"
            )
        bbox = [float(v) for v in bbox]
        _check_area_and_crowd(src, ann, i)
        annotations.append({
            **ann,
            "id": len(annotations) + 1,
            "image_id": img_id,
            "category_id": cat_id,
            "bbox": bbox,
            "area": float(ann["area"]) if "area" in ann else bbox[2] * bbox[3],
            "iscrowd": int(ann.get("iscrowd", 0)),
        })
    return {**data, "images": images, "annotations": annotations, "categories": categories}, src


def _prepare_results(
    results: str | os.PathLike | Sequence[Mapping[str, Any]],
    image_ids: set[int],
    cat_ids: set[int],
) -> list[dict[str, Any]]:
    """Check a COCO results list and return fresh, normalised records (the evaluator mutates them)."""
    src = _source_name(results, "results")
    data = _load_json(results, "COCO results") if isinstance(results, (str, os.PathLike)) else results
    if isinstance(data, Mapping) or not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
        raise UserInputError(
            f"{src}: COCO results must be a JSON list of {{image_id, category_id, bbox, score}}, "
            f"got {type(data).__name__}"
        )
    out = []
    for i, r in enumerate(data):
        if not isinstance(r, Mapping):
            raise UserInputError(f"{src}: record {i} is {type(r).__name__}, expected an object")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in r]
        if missing:
            raise UserInputError(
                f"{src}: record {i} lacks {', '.join(missing)}; each record needs image_id, category_id, bbox, score"
            )
        img_id, cat_id = _as_int_id(r["image_id"]), _as_int_id(r["category_id"])
        if img_id is None or img_id not in image_ids:
            raise UserInputError(
                f"{src}: record {i} refers to image_id {r['image_id']!r}, which is not in the ground truth; "
                "evaluate against the annotation file the predictions were made for"
            )
        if cat_id is None or cat_id not in cat_ids:
            raise UserInputError(
                f"{src}: record {i} has category_id {r['category_id']!r}, not a category of the ground truth "
                f"(known: {sorted(cat_ids)}); map contiguous labels back to COCO category ids"
            )
        bbox = r["bbox"]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise UserInputError(f"{src}: record {i} needs 'bbox' = [x, y, w, h] (4 finite numbers), got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise UserInputError(
                f"{src}: record {i} has a negative width/height in bbox {list(bbox)}; use [x, y, w, h]"
            )
        if not _is_number(r["score"]):
            raise UserInputError(f"{src}: record {i} needs a finite numeric 'score', got {r['score']!r}")
        out.append(
            {"image_id": img_id, "category_id": cat_id, "bbox": [float(v) for v in bbox], "score": float(r["score"])}
        )
    return out


@dataclass(frozen=True)
class CocoRun:
    """One finished ``COCOeval_faster`` run (evaluate, accumulate, summarize), kept so that the
    12 numbers (:func:`coco_evaluation`) and the analysis (``evaluation.analysis``) read the same
    accumulated arrays instead of evaluating twice.

    Attributes:
        gt: the checked ground truth (a private copy: annotation ids renumbered 1..M, ``area``
            and ``iscrowd`` filled in).
        results: the checked result records.
        evaluator: the ``COCOeval_faster`` object; ``evaluator.eval["precision"]`` is
            ``[T, R, K, A, M]`` (IoU thresholds, recall points, categories in
            ``evaluator.params.catIds`` order, areas all/small/medium/large, maxDets 1/10/N).
        max_dets: N, the last of ``evaluator.params.maxDets``.
    """

    gt: dict[str, Any]
    results: list[dict[str, Any]]
    evaluator: Any
    max_dets: int = DEFAULT_MAX_DETS

    def class_names(self) -> list[str]:
        """Category names in ``evaluator.params.catIds`` order; a repeated name gets ``#id``."""
        cats = {c["id"]: c["name"] for c in self.gt["categories"]}
        names: list[str] = []
        for cat_id in self.evaluator.params.catIds:
            name = cats[cat_id]
            names.append(f"{name}#{cat_id}" if name in names else name)
        return names


def run_coco_eval(
    gt: str | os.PathLike | Mapping[str, Any],
    results: str | os.PathLike | Sequence[Mapping[str, Any]],
    *,
    iou_type: str = "bbox",
    max_dets: int = DEFAULT_MAX_DETS,
) -> CocoRun:
    """Check ``gt`` and ``results`` and run ``faster_coco_eval.COCOeval_faster`` on them.

    Args: as :func:`evaluate_coco`. Neither input is modified.

    Raises:
        UserInputError: unreadable/malformed ground truth or results, results that name an
            image or category the ground truth does not have, or a ``max_dets`` out of range.
    """
    max_dets = check_max_dets(max_dets)
    if iou_type not in _SUPPORTED_IOU_TYPES:
        raise UserInputError(f"iou_type {iou_type!r} is not supported; use one of {list(_SUPPORTED_IOU_TYPES)}")
    # Imported here so that importing hybridvision does not load the C++ extension.
    from faster_coco_eval import COCO, COCOeval_faster

    gt_data, _ = _prepare_gt(gt)
    image_ids = {img["id"] for img in gt_data["images"]}
    records = _prepare_results(results, image_ids, {c["id"] for c in gt_data["categories"]})

    coco_gt = COCO(gt_data, print_function=_silent)
    if records:
        coco_dt = coco_gt.loadRes(records)
    else:
        # An empty result list is a valid (if poor) submission: every category with ground truth
        # scores 0. Build the empty detection set directly rather than rely on loadRes([]).
        coco_dt = COCO(print_function=_silent)
        coco_dt.dataset = {"images": gt_data["images"], "categories": gt_data["categories"], "annotations": []}
        coco_dt.createIndex()
    coco_dt.print_function = _silent

    ev = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=_silent)
    ev.params.maxDets = [1, 10, max_dets]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return CocoRun(gt=gt_data, results=records, evaluator=ev, max_dets=max_dets)


def coco_evaluation(run: CocoRun, *, per_class: bool = True) -> dict[str, dict[str, float]]:
    """The 12 numbers (and per-class AP) of a finished run; the result of :func:`evaluate_coco`.
    The third AR is named ``AR{N}`` for the run's ``max_dets`` N (:func:`metric_keys`)."""
    stats = np.asarray(run.evaluator.stats, dtype=np.float64)
    keys = metric_keys(run.max_dets)
    metrics = {k: float(v) for k, v in zip(keys, stats[: len(keys)])}
    per_class_ap: dict[str, float] = {}
    if per_class:
        # precision: [T IoUs, R recall points, K categories, A areas, M maxDets]; area "all" is
        # index 0 and maxDets=N the last, the same slice summarize() averages for "AP".
        precision = np.asarray(run.evaluator.eval["precision"])
        for k, name in enumerate(run.class_names()):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            per_class_ap[name] = float(p.mean()) if p.size else -1.0
    return {"metrics": metrics, "per_class": per_class_ap}


def evaluate_coco(
    gt: str | os.PathLike | Mapping[str, Any],
    results: str | os.PathLike | Sequence[Mapping[str, Any]],
    *,
    iou_type: str = "bbox",
    per_class: bool = True,
    max_dets: int = DEFAULT_MAX_DETS,
) -> dict[str, dict[str, float]]:
    """Run the COCO evaluation with ``faster_coco_eval.COCOeval_faster``.

    Args:
        gt: path to a COCO annotation JSON, or the same content as a dict (not modified).
        results: path to a COCO results JSON, or a list of
            ``dict(image_id, category_id, bbox=[x, y, w, h], score)`` (not modified).
        iou_type: only ``"bbox"`` is supported.
        per_class: also report AP@[.5:.95] per category.
        max_dets: N of COCO's ``maxDets = [1, 10, N]``, an integer in [11, 100000]: the
            detections per image that AP and AR count (100: COCO's own).

    Returns:
        ``{"metrics": {key: value for key in metric_keys(max_dets)}, "per_class": {name: AP}}``;
        values are fractions in [0, 1], -1 where no ground truth falls in the bucket
        (``per_class`` is empty when ``per_class=False``).

    Raises:
        UserInputError: unreadable/malformed ground truth or results, or results that name an
            image or category the ground truth does not have.
    """
    return coco_evaluation(run_coco_eval(gt, results, iou_type=iou_type, max_dets=max_dets), per_class=per_class)


def detections_to_coco_results(
    detections: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    label_to_cat_id: Mapping[int, int] | Sequence[int],
    scales: Sequence[tuple[float, float]] | None = None,
) -> list[dict[str, Any]]:
    """Convert detector outputs to COCO result records.

    Args:
        detections: per image ``dict(boxes=[D, 4] xyxy, scores=[D], labels=[D] contiguous 0..K-1)``.
        image_ids: the COCO ``image_id`` of each entry of ``detections``.
        label_to_cat_id: contiguous label -> COCO ``category_id`` (a dict, or a list indexed by label).
        scales: optional per image ``(sx, sy)`` multiplying x and y coordinates, to map boxes from
            the network's input back to the original pixels (``sx = original_w / resized_w``).

    Returns:
        ``[dict(image_id, category_id, bbox=[x, y, w, h], score), ...]`` in image order.
    """
    if len(detections) != len(image_ids):
        raise ValueError(f"{len(detections)} detection dicts but {len(image_ids)} image ids")
    if scales is not None and len(scales) != len(detections):
        raise ValueError(f"{len(detections)} detection dicts but {len(scales)} scales")
    out: list[dict[str, Any]] = []
    for i, (det, img_id) in enumerate(zip(detections, image_ids)):
        boxes = torch.as_tensor(det["boxes"], dtype=torch.float64).reshape(-1, 4).cpu()  # [D, 4] xyxy
        scores = torch.as_tensor(det["scores"], dtype=torch.float64).reshape(-1).cpu()  # [D]
        labels = torch.as_tensor(det["labels"]).reshape(-1).cpu().long()  # [D]
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(f"detections[{i}]: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
        if scales is not None:
            sx, sy = scales[i]
            boxes = boxes * boxes.new_tensor([sx, sy, sx, sy])
        xywh = box_convert(boxes, "xyxy", "xywh")  # [D, 4]
        for box, score, label in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
            try:
                cat_id = label_to_cat_id[label]
            except (KeyError, IndexError):
                raise UserInputError(
                    f"detections[{i}]: label {label} has no COCO category (the dataset has "
                    f"{len(label_to_cat_id)}); the model's num_classes must match the dataset"
                ) from None
            out.append({"image_id": int(img_id), "category_id": int(cat_id), "bbox": box, "score": score})
    return out


def _plain(obj: Any) -> Any:
    """JSON-ready copy: numpy/torch scalars to Python numbers, NaN/inf to None (JSON has neither)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _plain(obj.tolist())
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_metrics_json(metrics: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``metrics`` as JSON, atomically; returns the path.

    Given :func:`evaluate_coco`'s whole result, the file holds the 12 COCO keys at the top level
    (fractions, -1 for an empty size bucket; ``AR{N}`` named for its ``max_dets``) plus
    ``per_class`` (class name → AP).
    """
    path = Path(path)
    if "metrics" in metrics and isinstance(metrics["metrics"], Mapping):
        extra = {"num_images": metrics["num_images"]} if "num_images" in metrics else {}
        metrics = {**metrics["metrics"], "per_class": metrics.get("per_class", {}), **extra}
    atomic_write_text(path, json.dumps(_plain(metrics), indent=2) + "\n")
    return path


def format_metrics_table(metrics: Mapping[str, Any], *, title: str | None = "COCO bbox metrics"):
    """A ``rich.table.Table`` with the 12 COCO numbers as percentages (1 decimal), "-" for -1.

    Args:
        metrics: the 12-key dict, or :func:`evaluate_coco`'s whole result (its ``"metrics"`` is used);
            its ``AR{N}`` key names the third AR column (:func:`max_dets_of`).
        title: the table title (None for none).
    """
    from rich import box
    from rich.table import Table

    if "metrics" in metrics and isinstance(metrics["metrics"], Mapping):
        metrics = metrics["metrics"]
    # No vertical rules and no cell padding: the 12 columns then fit an 80-column terminal.
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 0))
    keys = metric_keys(max_dets_of(metrics))
    for key in keys:
        table.add_column(key, justify="right", no_wrap=True, min_width=5)
    cells = []
    for key in keys:
        v = metrics.get(key)
        cells.append("-" if v is None or not _is_number(v) or v < 0 else f"{100.0 * float(v):.1f}")
    table.add_row(*cells)
    return table
