"""The sketch-based image retrieval task: the two-branch network's three training stages and
its ranking metrics (thesis B §3; Bui et al. 2017).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate

from hybridvision.config import TrainConfig
from hybridvision.data.builtin.bimodal import ensure_bimodal
from hybridvision.data.classification_transforms import build_classification_transforms
from hybridvision.data.sbir import (ImageItems, PairEpoch, RetrievalItems, TripletEpoch, collate_by_modality,
                                    resolve_bimodal, split_items)
from hybridvision.engine.tasks.bundle import DataBundle, unwrap
from hybridvision.engine.tasks.protocol import Task
from hybridvision.errors import UserInputError
from hybridvision.evaluation.retrieval import retrieval_metrics
from hybridvision.fileio import atomic_write_json
from hybridvision.options import Fraction, PositiveFloat, keyword_parameters
from hybridvision.registry import register_task
from hybridvision.retrieval.losses import contrastive_loss, hardest_negatives, triplet_loss
from hybridvision.retrieval.zero_shot import split_queries


def sbir_run_options(*, val_fraction: Fraction = 0.2, margin: PositiveFloat | None = None,
                     hard_negatives: bool = False) -> dict[str, Any]:
    """The SBIR task's own ``data_kwargs`` with their types and defaults (the config checks a
    run's against this signature): ``val_fraction`` of each seen class's sketches and photos held
    out for evaluation, the ``margin`` of the stage's metric loss (None: the loss's default) and
    ``hard_negatives`` (stage 2)."""
    return {"val_fraction": val_fraction, "margin": margin, "hard_negatives": hard_negatives}


@register_task("sbir")
class SBIRTask(Task):
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

    @staticmethod
    def data_options(spec: str) -> dict[str, inspect.Parameter] | None:
        """The ``data_kwargs`` of ``spec``, as annotated parameters (the config checks them): the
        task's own (:func:`sbir_run_options`) and for ``builtin:bimodal`` the generator's
        (:func:`ensure_bimodal`, but its ``seed``); None for a spec of another task."""
        own = keyword_parameters(sbir_run_options)
        if spec == "builtin:bimodal":
            return {**own, **keyword_parameters(ensure_bimodal, exclude=("root", "seed"))}
        return own if spec.startswith("folders:") else None

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
        options = sbir_run_options(**options)
        val_fraction = float(options["val_fraction"])
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
