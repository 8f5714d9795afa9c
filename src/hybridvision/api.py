"""The Python API behind the CLI: load a trained model, evaluate it, predict on images, the demo.

Example::

    import hybridvision as hv
    summary = hv.train(hv.TrainConfig(model="fcos_demo", data="builtin:amounts", epochs=2))
    model, info = hv.load_trained("runs/train/checkpoints/best.safetensors")
    dets = hv.predict("photo.png", weights="runs/train/checkpoints/best.safetensors", out="preds")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hybridvision.config import TrainConfig
from hybridvision.fileio import atomic_write_text
from hybridvision.engine.checkpoint import load_weights, read_sidecar
from hybridvision.errors import UserInputError

__all__ = ["load_trained", "evaluate_run", "evaluate_files", "predict", "prepare_image",
           "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def load_trained(weights: str | Path, device: str | torch.device = "cpu",
                 model: str | None = None, **model_kwargs) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model a checkpoint was trained as and load its weights.

    The JSON sidecar next to ``weights`` names the model, its options and classes; pass ``model``
    (and ``num_classes``…) to load a bare ``.safetensors`` file without a sidecar.
    """
    from hybridvision.registry import create_model

    weights = Path(weights)
    info = read_sidecar(weights)
    name = model or info.get("model")
    if not name:
        raise UserInputError(f"{weights}: no {weights.with_suffix('.json').name} beside it to name the "
                             "model; keep the .json that `hybridvision train` writes next to the weights")
    kwargs = {**info.get("model_kwargs", {}), **model_kwargs}
    if "num_classes" not in kwargs and "num_classes" in info:
        kwargs["num_classes"] = info["num_classes"]
    net = create_model(name, **kwargs)
    if not weights.is_file():
        raise UserInputError(f"{weights}: weights file not found")
    load_weights(net, weights)
    return net.to(device).eval(), info


def _run_weights(run: Path) -> Path:
    for name in ("best", "last"):
        p = run / "checkpoints" / f"{name}.safetensors"
        if p.is_file():
            return p
    raise UserInputError(f"{run}: no checkpoints/best.safetensors or last.safetensors; pass a run "
                         "folder written by `hybridvision train`")


def evaluate_run(*, run: str | Path | None = None, weights: str | Path | None = None,
                 data: str | None = None, out: str | Path | None = None, device: str = "auto",
                 batch_size: int = 8, progress: bool = True) -> dict[str, Any]:
    """Evaluate a trained detector: ``run`` folder, or ``weights`` + ``data`` spec.

    Writes ``OUT/coco_metrics.json`` and ``OUT/predictions.json`` (OUT defaults to ``RUN/eval``)
    and returns ``{"metrics": {...12 keys}, "per_class": {...}}``.
    """
    from torch.utils.data import DataLoader

    from hybridvision.engine.tasks import make_task
    from hybridvision.engine.trainer import resolve_device
    from hybridvision.evaluation.coco import write_metrics_json

    if run is not None:
        run = Path(run)
        weights = _run_weights(run)
        out = Path(out) if out else run / "eval"
    if weights is None:
        raise UserInputError("eval: pass --run DIR, or --weights FILE with --data SPEC, or --gt/--dt")
    dev = resolve_device(device)
    model, info = load_trained(weights, dev)
    cfg_dict = dict(info.get("config") or {})
    cfg = TrainConfig.from_dict(cfg_dict) if cfg_dict else TrainConfig(model=info["model"])
    if data:
        cfg.data = data
    if info.get("task", "detection") != "detection":
        task = make_task(cfg)
        bundle = task.build_data(cfg)
        loader = DataLoader(bundle.val, batch_size=batch_size)
        evaluation, _ = task.evaluate(model, loader, dev, bundle)
        if out:
            atomic_write_text(Path(out) / "metrics.json", json.dumps(evaluation, indent=1))
        return evaluation
    task = make_task(cfg)
    bundle = task.build_data(cfg)
    if bundle.class_names != info.get("class_names", bundle.class_names):
        raise UserInputError(f"--data {cfg.data}: its classes {bundle.class_names[:5]}… differ from "
                             f"the classes {weights} was trained on; evaluate on matching data")
    loader = DataLoader(bundle.val, batch_size=batch_size, collate_fn=bundle.collate)
    evaluation, results = task.evaluate(model, loader, dev, bundle, progress=progress)
    out = Path(out or "runs/eval")
    write_metrics_json(evaluation, out / "coco_metrics.json")
    atomic_write_text(out / "predictions.json", json.dumps(results))
    return evaluation


def evaluate_files(gt: str | Path, dt: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """COCO evaluation of a results file against a ground-truth file (no model involved)."""
    from hybridvision.evaluation.coco import evaluate_coco, write_metrics_json

    for p, what in ((gt, "--gt"), (dt, "--dt")):
        if not Path(p).is_file():
            raise UserInputError(f"{p}: {what} file not found")
    evaluation = evaluate_coco(str(gt), str(dt))
    if out:
        write_metrics_json(evaluation, out)
    return evaluation


def _list_images(source: Path) -> list[Path]:
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise UserInputError(f"{source}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return files
    if source.is_file():
        return [source]
    raise UserInputError(f"{source}: no such image or folder")


def _load_image(path: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise UserInputError(f"{path}: cannot decode image ({e.__class__.__name__}); replace or "
                             "remove the file") from None
    return pil_to_tensor(img).float() / 255.0


def prepare_image(img: torch.Tensor, size: int | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image ``[3, H, W]`` → a batch ``[1, 3, H', W']`` and its content size ``(h, w)``.

    Resizes keeping the aspect ratio so the longer side is ``size`` (the evaluation transform's
    convention; ``None`` keeps the size), then zero-pads bottom/right to a multiple of 32.
    """
    from torchvision.transforms.v2 import functional as TF

    from hybridvision.detectors.base import batch_images

    h, w = img.shape[-2:]
    if size is not None:
        scale = size / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
        img = TF.resize(img, [h, w], antialias=True)
    batch, sizes = batch_images([img], 32)
    return batch, sizes[0]


@torch.inference_mode()
def predict(source: str | Path, *, weights: str | Path, out: str | Path = "runs/predict",
            device: str = "auto", score_threshold: float = 0.3, image_size: int | None = None
            ) -> list[dict[str, Any]]:
    """Detect objects in an image or every image of a folder.

    Writes ``OUT/<stem>.png`` (boxes drawn) and ``OUT/predictions.json`` (COCO-style records with
    ``file_name``, ``category_id``, ``category``, ``bbox`` [x, y, w, h] in original pixels, ``score``).
    """
    from hybridvision.engine.inference import scale_detections
    from hybridvision.engine.trainer import resolve_device
    from hybridvision.plots import draw_detections

    dev = resolve_device(device)
    model, info = load_trained(weights, dev)
    if info.get("task", "detection") != "detection":
        raise UserInputError(f"{weights}: a {info.get('task')} model; predict draws detections")
    if hasattr(model, "score_thresh"):  # let --conf go below the decoder's candidate threshold
        model.score_thresh = min(float(model.score_thresh), score_threshold)
    size = int(image_size or info.get("image_size") or 512)
    names = info.get("class_names") or [str(i) for i in range(info.get("num_classes", 0))]
    cat_ids = info.get("label_to_cat_id") or list(range(1, len(names) + 1))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for path in _list_images(Path(source)):
        img = _load_image(path)
        h0, w0 = img.shape[-2:]
        batch, (h, w) = prepare_image(img, size)
        dets = model.decode(model(batch.to(dev), [(h, w)]), [(h, w)])[0]
        dets = scale_detections({k: v.cpu() for k, v in dets.items()}, w0 / w, h0 / h)
        keep = dets["scores"] >= score_threshold
        dets = {k: v[keep] for k, v in dets.items()}
        draw_detections(img, dets["boxes"], dets["labels"], dets["scores"], names).save(out / f"{path.stem}.png")
        for b, s, l in zip(dets["boxes"].tolist(), dets["scores"].tolist(), dets["labels"].tolist()):
            records.append({"file_name": path.name, "category_id": int(cat_ids[l]), "category": names[l],
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    atomic_write_text(out / "predictions.json", json.dumps(records, indent=1))
    return records
