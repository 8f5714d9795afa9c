"""Tasks: what differs between detection and classification runs, behind one small interface.

Tasks are registered objects (``@register_task``); ``train``, ``eval``, the Python API, ``export``
and ``bench`` ask a model's task instead of branching on its name. The trainer
(``engine/trainer.py``) owns the loop, optimisation, checkpoints and distribution; a task owns

* the data (``build_data``), the loss of one batch (``batch_loss``) and evaluation
  (``evaluate``, ``primary_metric``, ``metrics_file``);
* what a model of the task takes and gives outside training: ``default_image_size`` and
  ``default_num_classes`` (bench, export), ``input_kwargs(in_chans)`` (options a builder needs
  for the input), ``input_channels(model)`` and ``inference(model, x)`` (one whole inference call
  on a batch, e.g. forward + decode).

Both tasks read datasets through a data spec string:

- detection: ``builtin:amounts`` or ``coco:TRAIN_ANN,TRAIN_IMAGES[,VAL_ANN,VAL_IMAGES]``
  (without a val pair, a fixed 20 % of the training images, chosen by seed, is held out);
- classification: ``builtin:sketches``, ``quickdraw:DIR`` or ``tuberlin:DIR``.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

import hybridvision.models  # noqa: F401  registers every model, so "auto" can look up its task
from hybridvision.config import TrainConfig
from hybridvision.data import classification_transforms, transforms
from hybridvision.data.builtin.amounts import ensure_amounts
from hybridvision.data.classification_transforms import build_classification_transforms
from hybridvision.data.coco import CocoDetection, collate_detection
from hybridvision.data.sbir import (ImageItems, PairEpoch, RetrievalItems, TripletEpoch, collate_by_modality,
                                    resolve_bimodal, split_items)
from hybridvision.data.sketches import build_sketch_dataset
from hybridvision.data.mosaic import MosaicDataset
from hybridvision.data.transforms import build_preset_transforms, mosaic_probability, preset_train_collate
from hybridvision.engine.inference import predict_batches
from hybridvision.engine.progress import console
from hybridvision.errors import UserInputError
from hybridvision.evaluation.classification import topk_accuracy
from hybridvision.evaluation.analysis import evaluate_with_analysis, write_analysis_files
from hybridvision.evaluation.coco import detections_to_coco_results, write_metrics_json
from hybridvision.evaluation.retrieval import retrieval_metrics
from hybridvision.fileio import atomic_write_json, read_json
from hybridvision.plots import save_analysis_plots
from hybridvision.registry import model_task, register_task, task_class
from hybridvision.retrieval.losses import contrastive_loss, hardest_negatives, triplet_loss
from hybridvision.retrieval.zero_shot import split_queries

__all__ = ["DataBundle", "DetectionTask", "ClassificationTask", "SBIRTask", "make_task", "resolve_detection_data"]


@dataclass
class DataBundle:
    """Datasets and the metadata a checkpoint must carry to be usable alone."""

    train: Dataset
    val: Dataset
    num_classes: int
    class_names: list[str]
    collate: Callable | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. label_to_cat_id, val GT dict
    train_collate: Callable | None = None  # the training batches' collate (default: ``collate``)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


# ----------------------------------------------------------------------------------- detection
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
class DetectionTask:
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
        if mosaic_probability(preset, **cfg.augment) > 0:
            train = MosaicDataset(train, mosaic_probability(preset, **cfg.augment))
        if cfg.val_limit and len(val) > cfg.val_limit:
            val = Subset(val, list(range(cfg.val_limit)))
            kept = set(_dataset_image_ids(val))
            gt = {**gt, "images": [im for im in gt["images"] if im["id"] in kept],
                  "annotations": [a for a in gt["annotations"] if a["image_id"] in kept]}
        return DataBundle(
            train=train, val=val, num_classes=len(train_full.class_names),
            class_names=list(train_full.class_names), collate=collate_detection,
            train_collate=preset_train_collate(preset, **cfg.augment),
            meta=dict(label_to_cat_id=list(train_full.label_to_cat_id), val_gt=gt),
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
            meta=dict(label_to_cat_id=list(val.label_to_cat_id), val_gt=read_json(ann, what="COCO annotation")),
        )

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
                console.print(f"[yellow]evaluation plots in {folder} skipped: {e}", highlight=False)
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
        ``"multiscale"`` test-time augmentation."""
        ids, dets = predict_batches(unwrap(model), loader, device, progress=progress, tta=tta)
        results = detections_to_coco_results(dets, ids, bundle.meta["label_to_cat_id"])
        return evaluate_with_analysis(bundle.meta["val_gt"], results), results


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


# ------------------------------------------------------------------------------ classification
@register_task("classification")
class ClassificationTask:
    """Image/sketch classification: cross-entropy with label smoothing, top-1/top-5."""

    name = "classification"
    primary_metric = "top1"
    metrics_file = "metrics.json"
    default_image_size = 224
    default_num_classes = 1000

    def __init__(self, label_smoothing: float = 0.1, **_: Any):
        self.label_smoothing = label_smoothing

    @staticmethod
    def input_kwargs(in_chans: int) -> dict[str, Any]:
        """Builder options a model needs for ``in_chans`` inputs (1 for grey sketches)."""
        return {"in_chans": in_chans}

    @staticmethod
    def input_channels(model: nn.Module) -> int:
        return int(getattr(model, "in_chans", 3))

    @staticmethod
    def inference(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
        """One whole inference call on ``x`` ``[B, C, S, S]``: the forward pass (logits)."""
        return lambda: model(x)

    def build_data(self, cfg: TrainConfig) -> DataBundle:
        in_chans = int(cfg.model_kwargs.get("in_chans", 3))
        t_train = build_classification_transforms(True, cfg.image_size, sketch=True, in_chans=in_chans,
                                                  **cfg.augment)
        t_val = build_classification_transforms(False, cfg.image_size, sketch=True, in_chans=in_chans)
        kw = dict(cfg.data_kwargs)
        train = build_sketch_dataset(cfg.data, "train", t_train, root=cfg.data_root, seed=cfg.seed, **kw)
        val = build_sketch_dataset(cfg.data, "val", t_val, root=cfg.data_root, seed=cfg.seed, **kw)
        if cfg.val_limit and len(val) > cfg.val_limit:
            g = torch.Generator().manual_seed(cfg.seed)
            val = Subset(val, torch.randperm(len(val), generator=g)[: cfg.val_limit].tolist())
        classes = list(train.classes)
        return DataBundle(train=train, val=val, num_classes=len(classes), class_names=classes)

    def build_eval_data(self, cfg: TrainConfig, *, whole: bool = False) -> DataBundle:
        """The data ``eval`` scores: the validation split of ``cfg.data``."""
        return self.build_data(cfg)

    @staticmethod
    def check_augment(augment: dict[str, Any]) -> None:
        """UserInputError for an ``augment`` option the classification transforms do not take."""
        classification_transforms.check_augment(augment)

    @staticmethod
    def start_warnings(model: nn.Module, bundle: DataBundle, cfg: TrainConfig) -> list[str]:
        return []

    def write_evaluation(self, evaluation: dict[str, Any], results: list[dict], folder: Path) -> Path:
        """``folder/metrics.json`` (top-1, top-5, image count)."""
        return atomic_write_json(Path(folder) / self.metrics_file, evaluation, indent=1)

    def batch_loss(self, model: nn.Module, batch, device: torch.device) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = model(images.to(device, non_blocking=True))
        loss = F.cross_entropy(logits, labels.to(device), label_smoothing=self.label_smoothing)
        return {"loss": loss}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, bundle: DataBundle,
                 progress: bool = False, tta: str | None = None) -> tuple[dict[str, Any], list[dict]]:
        if tta is not None:
            raise UserInputError(f"--tta {tta}: test-time augmentation applies to detectors, not classifiers")
        model = unwrap(model)
        was_training = model.training
        model.eval()
        logits_all, labels_all = [], []
        for images, labels in loader:
            logits_all.append(model(images.to(device)).float().cpu())
            labels_all.append(labels)
        model.train(was_training)
        logits = torch.cat(logits_all)
        labels = torch.cat(labels_all)
        acc = topk_accuracy(logits, labels, ks=(1, min(5, logits.shape[1])))
        return {"top1": float(acc["top1"]), "top5": float(acc.get("top5", 1.0))}, []


# ----------------------------------------------------------------------------------- retrieval
@register_task("sbir")
class SBIRTask:
    """Two-branch sketch-based image retrieval (:mod:`hybridvision.retrieval.two_branch`), one
    training stage per run (the model option ``stage``): stage 1 both branches as classifiers,
    stage 2 contrastive pairs, stage 3 triplets, each with the softmax losses (thesis B §3).

    Data: ``builtin:bimodal`` or ``folders:SKETCH_DIR,PHOTO_DIR[,UNSEEN.txt]``
    (:mod:`hybridvision.data.sbir`); training uses the seen classes, 80 % of each class's sketches
    and photos (by seed); evaluation ranks the other 20 % of photos for the other 20 % of
    sketches (mAP, mRR, P@10 of :func:`~hybridvision.evaluation.retrieval.retrieval_metrics`).
    Options in ``data_kwargs``: ``val_fraction``, ``margin`` (of the stage's metric loss),
    ``hard_negatives`` (stage 2: each negative pair's photo replaced by the sketch's nearest photo
    of another class in the batch) and, for the built-in data, ``sketches``, ``photos``, ``size``.
    """

    name = "sbir"
    primary_metric = "mAP"
    metrics_file = "retrieval_metrics.json"
    default_image_size = 224
    default_num_classes = 250
    _OPTIONS = ("val_fraction", "margin", "hard_negatives")
    _BUILTIN = ("sketches", "photos", "size")

    def __init__(self, label_smoothing: float = 0.1, **_: Any):
        self.label_smoothing = label_smoothing
        self.margin: float | None = None
        self.hard_negatives = False

    @staticmethod
    def input_kwargs(in_chans: int) -> dict[str, Any]:
        return {}

    @staticmethod
    def input_channels(model: nn.Module) -> int:
        return 1  # a query is a grey sketch

    @staticmethod
    def inference(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
        """One query embedding call on ``x`` ``[B, 1, S, S]`` (a sketch batch)."""
        return lambda: model(x, "sketch")

    def _options(self, cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
        kw = dict(cfg.data_kwargs)
        allowed = self._OPTIONS + (self._BUILTIN if cfg.data.startswith("builtin:") else ())
        unknown = sorted(set(kw) - set(allowed))
        if unknown:
            raise UserInputError(f"data_kwargs {', '.join(unknown)}: not an option of SBIR data {cfg.data}; "
                                 f"valid: {', '.join(allowed)}")
        return {k: kw[k] for k in self._OPTIONS if k in kw}, {k: kw[k] for k in self._BUILTIN if k in kw}

    def build_data(self, cfg: TrainConfig) -> DataBundle:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise UserInputError("SBIR trains on one process (stage 1 runs each branch outside the model's "
                                 "forward, which DistributedDataParallel does not see); run it without torchrun")
        options, builtin = self._options(cfg)
        val_fraction = float(options.get("val_fraction", 0.2))
        if not 0 < val_fraction < 1:
            raise UserInputError(f"data_kwargs val_fraction={val_fraction}: use a number in (0, 1)")
        self.margin = None if options.get("margin") is None else float(options["margin"])
        self.hard_negatives = bool(options.get("hard_negatives", False))
        everything = resolve_bimodal(cfg.data, cfg.data_root, **builtin)
        data, unseen = everything.subset("seen"), everything.subset("unseen")
        s_train, s_val = split_items(data.sketches, val_fraction, cfg.seed)
        p_train, p_val = split_items(data.photos, val_fraction, cfg.seed + 1)
        size = cfg.image_size
        sketch_tf = build_classification_transforms(True, size, sketch=True, in_chans=1, scale=(0.9, 1.0),
                                                    rotation=20.0, hflip=0.5)
        photo_tf = build_classification_transforms(True, size, sketch=False, in_chans=3, scale=(0.7, 1.0))
        train_data = type(data)(data.classes, s_train, p_train)
        stage = int(cfg.model_kwargs.get("stage", 3))
        kind = TripletEpoch if stage == 3 else PairEpoch
        train = kind(train_data, 0, cfg.seed, sketch_tf, photo_tf)
        val = RetrievalItems(
            ImageItems(s_val, "sketch", build_classification_transforms(False, size, sketch=True, in_chans=1)),
            ImageItems(p_val, "photo", build_classification_transforms(False, size, sketch=False, in_chans=3)))
        meta: dict[str, Any] = {"stage": stage}
        if unseen.classes:  # zero-shot: the classes training never sees, every image of them
            meta["unseen"] = RetrievalItems(
                ImageItems(unseen.sketches, "sketch", val.sketches.transform),
                ImageItems(unseen.photos, "photo", val.photos.transform))
        return DataBundle(train=train, val=val, num_classes=len(data.classes), class_names=data.classes,
                          collate=collate_by_modality, train_collate=default_collate, meta=meta)

    def build_eval_data(self, cfg: TrainConfig, *, whole: bool = False) -> DataBundle:
        return self.build_data(cfg)

    @staticmethod
    def check_augment(augment: dict[str, Any]) -> None:
        if augment:
            raise UserInputError(f"augment {', '.join(sorted(augment))}: SBIR runs use thesis B's fixed "
                                 "augmentation (sketches: crop 0.9–1, rotation ±20°; photos: crop 0.7–1); "
                                 "remove the augment options")

    @staticmethod
    def start_warnings(model: nn.Module, bundle: DataBundle, cfg: TrainConfig) -> list[str]:
        return []

    def write_evaluation(self, evaluation: dict[str, Any], results: list[dict], folder: Path) -> Path:
        return atomic_write_json(Path(folder) / self.metrics_file, evaluation, indent=1)

    def batch_loss(self, model: nn.Module, batch, device: torch.device) -> dict[str, torch.Tensor]:
        net = unwrap(model)
        ce = lambda logits, y: F.cross_entropy(logits, y.to(device), label_smoothing=self.label_smoothing)  # noqa: E731
        if net.stage in (1, 2):  # PairEpoch batches
            sketch, photo, same, ys, yp = batch
            sketch, photo, same = sketch.to(device), photo.to(device), same.to(device)
            if net.stage == 1:  # each branch a classifier alone
                return self._total({"loss_sketch_ce": ce(net.stage1_logits(sketch, "sketch"), ys),
                                    "loss_photo_ce": ce(net.stage1_logits(photo, "photo"), yp)})
            e_s, l_s = model(sketch, "sketch")
            e_p, l_p = model(photo, "photo")
            if self.hard_negatives:  # each negative pair's photo: the nearest of another class
                idx = hardest_negatives(e_s.detach(), e_p.detach(), ys.to(device), yp.to(device))
                swap = (~same) & (idx >= 0)
                e_p = torch.where(swap[:, None], e_p[idx.clamp(min=0)], e_p)
            margin = {} if self.margin is None else {"margin": self.margin}
            return self._total({"loss_contrastive": contrastive_loss(e_s, e_p, same, **margin),
                                "loss_sketch_ce": ce(l_s, ys), "loss_photo_ce": ce(l_p, yp)})
        sketch, pos, neg, ys, yn = batch
        e_s, l_s = model(sketch.to(device), "sketch")
        e_pos, l_pos = model(pos.to(device), "photo")
        e_neg, l_neg = model(neg.to(device), "photo")
        margin = {} if self.margin is None else {"margin": self.margin}
        return self._total({"loss_triplet": triplet_loss(e_s, e_pos, e_neg, **margin),
                            "loss_sketch_ce": ce(l_s, ys),
                            "loss_photo_ce": (ce(l_pos, ys) + ce(l_neg, yn)) / 2})

    @staticmethod
    def _total(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": sum(parts.values()), **parts}  # type: ignore[dict-item]

    @staticmethod
    def _embed_loader(net: nn.Module, loader, device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
        """Per modality: unit embeddings, classifier logits, sketch features for unimodal retrieval
        (stage 1: the sketch classifier's pooled last stage; later: the sketch embedding), labels."""
        parts: dict[str, dict[str, list[torch.Tensor]]] = {}
        for groups in loader:
            for modality, (images, y) in groups.items():
                x = images.to(device)
                early = net.early(modality)(x)  # once, for the shared path and stage 1's own
                emb, logits = net.head(net.shared(early))
                out = parts.setdefault(modality, {"emb": [], "logits": [], "uni": [], "labels": []})
                out["emb"].append(F.normalize(emb.float(), dim=1).cpu())
                if net.stage == 1 and modality == "sketch":  # the sketch classifier's own later stages
                    late = net.sketch_stage1[:-1](early)  # [B, C, h, w]
                    logits = net.sketch_stage1[-1](late)[1]
                    out["uni"].append(F.normalize(late.mean(dim=(2, 3)).float(), dim=1).cpu())
                elif modality == "sketch":
                    out["uni"].append(out["emb"][-1])
                out["logits"].append(logits.float().cpu())
                out["labels"].append(y)
        return {m: {k: torch.cat(v) for k, v in d.items() if v} for m, d in parts.items()}

    @staticmethod
    def _ranking(q: torch.Tensor, q_y: torch.Tensor, g: torch.Tensor, g_y: torch.Tensor, prefix: str) -> dict:
        m = retrieval_metrics(q @ g.T, q_y, g_y, k=10)
        return {f"{prefix}mAP": float(m["mAP"]), f"{prefix}mRR": float(m["mRR"]), f"{prefix}P@10": float(m["P@k"]),
                f"{prefix}mAP_interp": float(m["mAP_interp"])}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, bundle: DataBundle,
                 progress: bool = False, tta: str | None = None) -> tuple[dict[str, Any], list[dict]]:
        """Seen classes, held-out images: sketch → photo ranking (``mAP``, ``mRR``, ``P@10``) and
        each branch's top-1. Unseen classes (zero-shot), every image: ``zs_uni_*`` ranks sketches
        by sketches (unimodal, Table 4.3: at stage 1 with the sketch classifier's pooled last
        stage; up to 5 queries per class, the rest the catalogue) and ``zs_*`` ranks photos by
        sketches (bimodal)."""
        if tta is not None:
            raise UserInputError(f"--tta {tta}: test-time augmentation applies to detectors, not SBIR")
        net = unwrap(model)
        was_training = net.training
        net.eval()
        seen = self._embed_loader(net, loader, device)
        if "sketch" not in seen or "photo" not in seen:
            raise UserInputError("SBIR evaluation needs held-out sketches and photos of the seen classes; use "
                                 "more images per class or a larger val_fraction")
        s, p = seen["sketch"], seen["photo"]
        out: dict[str, Any] = self._ranking(s["emb"], s["labels"], p["emb"], p["labels"], "")
        out["sketch_top1"] = float((s["logits"].argmax(1) == s["labels"]).float().mean())
        out["photo_top1"] = float((p["logits"].argmax(1) == p["labels"]).float().mean())
        out.update(queries=int(len(s["labels"])), gallery=int(len(p["labels"])))
        unseen = bundle.meta.get("unseen")
        if unseen is not None:
            zs_loader = DataLoader(unseen, batch_size=64, shuffle=False, collate_fn=collate_by_modality)
            z = self._embed_loader(net, zs_loader, device)
            zs, zp = z["sketch"], z["photo"]
            per_class = int(torch.bincount(zs["labels"]).min())  # up to 5 queries a class, half at most
            queries = max(1, min(5, per_class // 2))
            q_idx, g_idx = (torch.as_tensor(i) for i in split_queries(zs["labels"].tolist(), queries, None, seed=0))
            out.update(self._ranking(zs["uni"][q_idx], zs["labels"][q_idx], zs["uni"][g_idx], zs["labels"][g_idx],
                                     "zs_uni_"))
            out.update(self._ranking(zs["emb"], zs["labels"], zp["emb"], zp["labels"], "zs_"))
        net.train(was_training)
        return out, []


def make_task(cfg: TrainConfig):
    """The task of a run: from ``cfg.task`` or, when ``auto``, from the model registry."""
    name = model_task(cfg.model) if cfg.task == "auto" else cfg.task
    return task_class(name)(label_smoothing=cfg.label_smoothing)
