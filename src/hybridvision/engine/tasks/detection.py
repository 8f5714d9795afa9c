"""The detection task: COCO-format data, the model's own losses, COCO AP."""

from __future__ import annotations

import inspect
import math
import random
import statistics
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from hybridvision.config import TrainConfig
from hybridvision.data import transforms
from hybridvision.data.builtin.amounts import ensure_amounts, make_amounts
from hybridvision.data.coco import CocoDetection, collate_detection
from hybridvision.data.mosaic import MosaicDataset
from hybridvision.data.transforms import (build_preset_transforms, mosaic_off_epochs, mosaic_probability,
                                          preset_train_collate)
from hybridvision.engine.tasks.bundle import DataBundle, unwrap
from hybridvision.engine.tasks.protocol import Task
from hybridvision.engine.inference import predict_batches
from hybridvision.engine.progress import console
from hybridvision.errors import UserInputError
from hybridvision.evaluation.analysis import evaluate_with_analysis, write_analysis_files
from hybridvision.evaluation.coco import detections_to_coco_results, write_metrics_json
from hybridvision.fileio import atomic_write_json, read_json
from hybridvision.options import keyword_parameters
from hybridvision.plots import save_analysis_plots
from hybridvision.registry import register_task


def resolve_detection_data(spec: str, data_root: str = "data", **data_kwargs) -> dict[str, Any]:
    """Data spec → ``dict(train_ann, train_images, val_ann, val_images)`` (val may be None)."""
    kind, _, rest = spec.partition(":")
    if kind == "builtin":
        if rest not in ("amounts", "mnist-amounts"):
            raise UserInputError(f"--data {spec}: unknown built-in detection dataset; use builtin:amounts or "
                                 "builtin:mnist-amounts")
        if "source" in data_kwargs:
            raise UserInputError(f"data_kwargs.source: --data {spec} sets the digits itself; use builtin:amounts "
                                 "(scikit-learn's) or builtin:mnist-amounts (MNIST's) instead")
        root = Path(data_root) / rest
        ensure_amounts(root, **data_kwargs, **({"source": "mnist"} if rest == "mnist-amounts" else {}))
        return dict(train_ann=root / "train" / "annotations.json", train_images=root / "train" / "images",
                    val_ann=root / "val" / "annotations.json", val_images=root / "val" / "images")
    if kind == "coco":
        if data_kwargs:
            raise UserInputError(f"data_kwargs {', '.join(sorted(data_kwargs))}: options of the built-in "
                                 f"datasets; --data {spec} takes none — remove them")
        parts = [p for p in rest.split(",") if p]
        if len(parts) not in (2, 4):
            raise UserInputError(
                f"--data {spec}: expected coco:TRAIN_ANN.json,TRAIN_IMAGES_DIR[,VAL_ANN.json,VAL_IMAGES_DIR]"
            )
        paths = [Path(p).expanduser() for p in parts]
        return dict(train_ann=paths[0], train_images=paths[1],
                    val_ann=paths[2] if len(paths) == 4 else None,
                    val_images=paths[3] if len(paths) == 4 else None)
    raise UserInputError(f"--data {spec}: unknown data spec; use builtin:amounts or coco:ANN.json,IMAGES_DIR")


def _split_ids(ids: list[int], seed: int, val_fraction: float = 0.2) -> tuple[list[int], list[int]]:
    ids = sorted(ids)
    rng = random.Random(seed)
    rng.shuffle(ids)
    n_val = max(1, int(round(len(ids) * val_fraction))) if len(ids) > 1 else 0
    return sorted(ids[n_val:]), sorted(ids[:n_val])


@register_task("detection")
class DetectionTask(Task):
    """COCO-format detection: losses from the model, COCO AP for evaluation."""

    name = "detection"
    primary_metric = "AP"
    metrics_file = "coco_metrics.json"
    default_image_size = 512
    default_num_classes = 80

    def __init__(self, **_: Any) -> None:
        pass

    @staticmethod
    def input_kwargs(in_chans: int) -> dict[str, Any]:
        """Builder options a model needs for ``in_chans`` inputs: detectors take RGB."""
        return {}

    @staticmethod
    def input_channels(model: nn.Module) -> int:
        return 3

    @staticmethod
    def inference(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
        """One whole inference call on ``x`` ``[B, 3, S, S]``: forward + decode."""
        sizes = [tuple(x.shape[-2:])] * x.shape[0]
        return lambda: model.decode(model(x, sizes), sizes)

    def build_data(self, cfg: TrainConfig) -> DataBundle:
        paths = resolve_detection_data(cfg.data, cfg.data_root, **cfg.data_kwargs)
        # amounts: no flip (a mirrored digit is not a digit), milder scale jitter; else the COCO recipe.
        preset = "amounts" if cfg.data in ("builtin:amounts", "builtin:mnist-amounts") else "coco"
        t_train = build_preset_transforms(preset, True, cfg.image_size, **cfg.augment)
        t_val = build_preset_transforms(preset, False, cfg.image_size)
        train_full = CocoDetection(paths["train_ann"], paths["train_images"], t_train)
        if cfg.cache_images:
            train_full.preload()
        if paths["val_ann"] is not None:
            val = CocoDetection(paths["val_ann"], paths["val_images"], t_val, cache_images=cfg.cache_images)
            train = train_full
            gt = read_json(paths["val_ann"], what="COCO annotation")
            val_ids = [img["id"] for img in gt["images"]]
        else:
            # Hold out a seeded 20 % of the images; GT for evaluation is the filtered annotation file.
            val_full = CocoDetection(paths["train_ann"], paths["train_images"], t_val, validate=False)
            all_ids = [int(i) for i in train_full.ids]
            train_ids, val_ids = _split_ids(all_ids, cfg.seed)
            index = {iid: k for k, iid in enumerate(all_ids)}
            train = Subset(train_full, [index[i] for i in train_ids])
            val = Subset(val_full, [index[i] for i in val_ids])
            gt = read_json(paths["train_ann"], what="COCO annotation")
            keep = set(val_ids)
            gt = {**gt, "images": [im for im in gt["images"] if im["id"] in keep],
                  "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}
        if len(val) == 0:
            raise UserInputError(f"--data {cfg.data}: the validation split has no images, so nothing can "
                                 "be evaluated; give a val pair with images, or a training file with more")
        mosaic = mosaic_probability(preset, **cfg.augment)
        if mosaic > 0:
            close = mosaic_off_epochs(preset, **cfg.augment)
            train = MosaicDataset(train, mosaic, off_from_epoch=cfg.epochs - close if close else None)
        if cfg.val_limit and len(val) > cfg.val_limit:
            val = Subset(val, list(range(cfg.val_limit)))
            kept = set(_dataset_image_ids(val))
            gt = {**gt, "images": [im for im in gt["images"] if im["id"] in kept],
                  "annotations": [a for a in gt["annotations"] if a["image_id"] in kept]}
        return DataBundle(
            train=train, val=val, num_classes=len(train_full.class_names),
            class_names=list(train_full.class_names), collate=collate_detection,
            train_collate=preset_train_collate(preset, **cfg.augment),
            meta=dict(label_to_cat_id=list(train_full.label_to_cat_id), val_gt=gt, max_dets=cfg.eval_max_dets),
        )

    def build_eval_data(self, cfg: TrainConfig, *, whole: bool = False) -> DataBundle:
        """The data ``eval`` scores: the run's validation split, or with ``whole`` (data given
        explicitly) the val pair of a ``coco:`` spec, or its one pair **whole** — every image of
        the file, not a training-time 20 % hold-out."""
        if not (whole and cfg.data.startswith("coco:")):
            return self.build_data(cfg)
        paths = resolve_detection_data(cfg.data, cfg.data_root, **cfg.data_kwargs)
        ann, images = ((paths["val_ann"], paths["val_images"]) if paths["val_ann"] is not None
                       else (paths["train_ann"], paths["train_images"]))
        val = CocoDetection(ann, images, build_preset_transforms("coco", False, cfg.image_size))
        return DataBundle(
            train=val, val=val, num_classes=len(val.class_names), class_names=list(val.class_names),
            collate=collate_detection,
            meta=dict(label_to_cat_id=list(val.label_to_cat_id), val_gt=read_json(ann, what="COCO annotation"),
                      max_dets=cfg.eval_max_dets),
        )

    @staticmethod
    def data_options(spec: str) -> dict[str, inspect.Parameter] | None:
        """The ``data_kwargs`` of ``spec``, as annotated parameters (the config checks them):
        :func:`make_amounts`'s for the built-in data (its ``source`` is the spec's), none for
        ``coco:``; None for a spec of another task."""
        if spec in ("builtin:amounts", "builtin:mnist-amounts"):
            return keyword_parameters(make_amounts, exclude=("out_dir", "source"))
        return {} if spec.startswith("coco:") else None

    @staticmethod
    def check_augment(augment: dict[str, Any]) -> None:
        """UserInputError for an ``augment`` option the detection transforms do not take."""
        transforms.check_augment(augment)

    @staticmethod
    def start_warnings(model: nn.Module, bundle: DataBundle, cfg: TrainConfig) -> list[str]:
        """Warnings printed before training: resizing that shrinks most boxes below the finest stride."""
        strides = getattr(model, "strides", None) or [8]
        warning = small_box_warning(bundle.train, cfg.image_size, float(min(strides)))
        return [warning] if warning else []

    def write_evaluation(self, evaluation: dict[str, Any], results: list[dict], folder: Path) -> Path:
        """``folder/coco_metrics.json`` (the 12 numbers, per-class AP) and ``predictions.json``;
        with the evaluation's ``analysis`` (:func:`evaluate_with_analysis`) also
        ``pr_curves.json``, ``confusion_matrix.json``, ``per_class_ap.csv`` and their plots
        ``pr_curve.png``, ``confusion_matrix.png``. A plot that fails is reported and skipped:
        the numbers are written first and never lost to a drawing."""
        folder = Path(folder)
        path = write_metrics_json(evaluation, folder / self.metrics_file)
        atomic_write_json(folder / "predictions.json", results)
        analysis = evaluation.get("analysis")
        if analysis is not None:
            write_analysis_files(analysis, folder)
            try:
                save_analysis_plots(analysis, folder)
            except Exception as e:  # a plot must never lose an evaluation
                console.print(f"evaluation plots in {folder} skipped: {e}", style="yellow")
        return path

    def batch_loss(self, model: nn.Module, batch, device: torch.device) -> dict[str, torch.Tensor]:
        images, targets, sizes = batch
        images = images.to(device, non_blocking=True)
        targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        outputs = model(images, sizes)
        return unwrap(model).loss(outputs, targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, bundle: DataBundle,
                 progress: bool = False, tta: str | None = None) -> tuple[dict[str, Any], list[dict]]:
        """``(evaluation, results)``: ``evaluate_coco``'s result plus ``"analysis"`` (PR curves,
        per-class AP, confusion matrix: a :class:`~hybridvision.evaluation.analysis.DetectionAnalysis`)
        from one COCO evaluation, and the COCO results list. ``tta``: None, ``"flip"`` or
        ``"multiscale"`` test-time augmentation.

        COCO counts up to N = ``bundle.meta["max_dets"]`` detections per image (the config's
        ``eval_max_dets``, 100 by default; metric ``AR{N}``), and the detector keeps at least N
        per image while it predicts (its ``detections_per_img`` is raised for the evaluation and
        restored after it)."""
        max_dets = int(bundle.meta.get("max_dets", 100))
        net = unwrap(model)
        kept = getattr(net, "detections_per_img", None)
        if kept is not None and kept < max_dets:
            net.detections_per_img = max_dets
        try:
            ids, dets = predict_batches(net, loader, device, progress=progress, tta=tta)
        finally:
            if kept is not None:
                net.detections_per_img = kept
        results = detections_to_coco_results(dets, ids, bundle.meta["label_to_cat_id"])
        return evaluate_with_analysis(bundle.meta["val_gt"], results, max_dets=max_dets), results


def _base_and_indices(ds) -> tuple[Any, list[int]]:
    """The dataset under (nested) Subsets (and a mosaic wrapper) and the base indices of ``ds``'s items."""
    if isinstance(ds, MosaicDataset):
        ds = ds.dataset
    indices = list(range(len(ds)))
    while isinstance(ds, Subset):
        indices = [int(ds.indices[i]) for i in indices]
        ds = ds.dataset
    return ds, indices


def small_box_warning(train_set, image_size: int, min_side: float, *, max_images: int = 2000) -> str | None:
    """A warning when resizing to ``image_size`` shrinks most training boxes below ``min_side``.

    The rule: resize each image's longer side to ``image_size`` (the eval transform; training
    jitters around it), scale its boxes by the same factor and compare the longer box side with
    ``min_side`` — the detector's finest feature stride: a box smaller than one cell of the finest
    level may contain no feature location and is then never trained on. More than half of the
    boxes below it gives the warning, with the median resize factor and an ``--image-size`` that
    would bring the median box to twice ``min_side``. Reads annotations only (no pixels); looks
    at most ``max_images`` images, evenly spread. None when the data has no box annotations.
    """
    base, indices = _base_and_indices(train_set)
    if not (hasattr(base, "get_target") and hasattr(base, "images")) or not indices:
        return None
    step = max(1, len(indices) // max_images)
    factors, sides = [], []
    for i in indices[::step]:
        im = base.images[i]
        longer = max(float(im.get("width", 0)), float(im.get("height", 0)))
        if longer <= 0:
            continue
        f = image_size / longer
        factors.append(f)
        boxes = base.get_target(i)["boxes"]  # [N, 4] xyxy, original pixels
        if len(boxes):
            side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * f  # [N]
            sides += side.tolist()
    if not sides:
        return None
    small = sum(s < min_side for s in sides) / len(sides)
    if small <= 0.5:
        return None
    median = statistics.median(sides)
    suggest = int(math.ceil(image_size * 2 * min_side / max(median, 1e-6) / 32) * 32)
    return (f"warning: at --image-size {image_size} (images scaled by {statistics.median(factors):.2f}, "
            f"median) {small:.0%} of the training boxes are smaller than {min_side:g} px, the "
            f"detector's finest stride, and may never be assigned; try --image-size {suggest}")


def _dataset_image_ids(ds: Dataset) -> list[int]:
    """Image ids of a (possibly nested) Subset of a CocoDetection, without loading images."""
    if isinstance(ds, Subset):
        inner = _dataset_image_ids(ds.dataset)
        return [inner[i] for i in ds.indices]
    return [int(i) for i in ds.ids]
