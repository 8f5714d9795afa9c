"""The Python API behind the CLI: load a trained model, evaluate it, predict on images, the demo.

Example::

    import hybridvision as hv
    summary = hv.train(hv.TrainConfig(model="fcos_demo", data="builtin:amounts", epochs=2))
    model, info = hv.load_trained("runs/train/checkpoints/best.safetensors")
    dets = hv.predict("photo.png", weights="runs/train/checkpoints/best.safetensors", out="preds")
"""

from __future__ import annotations

from pathlib import Path
import math
from typing import Any

import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF
from torchvision.transforms.v2.functional import to_pil_image

from hybridvision.config import TrainConfig
from hybridvision.data.classification_transforms import build_classification_transforms
from hybridvision.data.sbir import load_modality_image
from hybridvision.detectors.base import batch_images
from hybridvision.detectors.tta import TTA_MODES
from hybridvision.engine.checkpoint import load_weights, read_sidecar
from hybridvision.engine.inference import scale_detections
from hybridvision.engine.progress import console
from hybridvision.engine.tasks import DetectionTask, make_task
from hybridvision.engine.tiling import check_tile_overlap, predict_tiled
from hybridvision.engine.trainer import resolve_device
from hybridvision.errors import UserInputError
from hybridvision.data.validate import check_annotation_file
from hybridvision.evaluation.analysis import STATS_FILES, DatasetStats, dataset_stats, evaluate_with_analysis
from hybridvision.evaluation.analysis import write_dataset_stats
from hybridvision.evaluation.coco import check_max_dets, write_metrics_json
from hybridvision.factory import create_model
from hybridvision.drawing import draw_detections, draw_retrieval_grid, save_image
from hybridvision.fileio import (OWNER_MARKER, atomic_write_json, check_output_path,
                                 make_output_dir, read_json)
from hybridvision.imageio import IMAGE_EXTENSIONS, load_image, load_image_uint8, read_image_size
from hybridvision.plots import save_dataset_stats_plots
from hybridvision.retrieval.index import GalleryIndex
from hybridvision.retrieval.zero_shot import pooled_features

__all__ = ["load_trained", "evaluate_run", "evaluate_files", "predict", "prepare_image", "retrieve",
           "IMAGE_EXTENSIONS", "check_predict_options", "dataset_report"]

# The files evaluate_run and evaluate_files write: a folder holding only these was written by us
# (a run's eval/): the metrics, the results, and a detection evaluation's analysis and plots.
_EVAL_FILES = ("coco_metrics.json", "predictions.json", "metrics.json", "pr_curves.json",
               "confusion_matrix.json", "per_class_ap.csv", "pr_curve.png", "confusion_matrix.png")


def load_trained(weights: str | Path, device: str | torch.device = "cpu",
                 model: str | None = None, **model_kwargs) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model a checkpoint was trained as and load its weights.

    The JSON sidecar next to ``weights`` names the model, its options and classes; pass ``model``
    (and ``num_classes``…) to load a bare ``.safetensors`` file without a sidecar.
    """
    weights = Path(weights)
    if weights.is_dir():
        raise UserInputError(f"{weights}: is a folder; pass the .safetensors weights file "
                             "(e.g. RUN/checkpoints/best.safetensors)")
    if weights.suffix == ".json":
        raise UserInputError(f"{weights}: is a checkpoint's state, not its weights; pass the "
                             f"{weights.with_suffix('.safetensors').name} beside it")
    if not weights.is_file():
        raise UserInputError(f"{weights}: weights file not found; pass a .safetensors file written by "
                             "`hybridvision train` (RUN/checkpoints/best.safetensors)")
    info = read_sidecar(weights)
    side = weights.with_suffix(".json")
    name = model or info.get("model")
    if not name:
        why = "names no model (key 'model')" if side.is_file() else "is missing"
        raise UserInputError(f"{weights}: its sidecar {side.name} {why}; keep the .json that `hybridvision "
                             "train` writes next to the weights" + (", or pass --model NAME to export"
                                                                        if model is None else ""))
    kwargs = {**info.get("model_kwargs", {}), **model_kwargs}
    if kwargs.pop("backbone_weights", None):  # the checkpoint holds the weights; keep the structure
        kwargs.setdefault("frozen_bn", True)
    if "num_classes" not in kwargs and "num_classes" in info:
        kwargs["num_classes"] = info["num_classes"]
    try:
        net = create_model(name, **kwargs)
    except (UserInputError, TypeError, ValueError) as e:
        if not info:  # a bare weights file: the model and options came from the caller
            raise
        key = "model" if model is None and isinstance(e, KeyError) else "model_kwargs"
        raise UserInputError(f"{side}: key '{key}' does not build a model ({str(e).splitlines()[0][:160]}); "
                             "the file was edited or belongs to another version — pass another "
                             "checkpoint, or --model with its options") from None
    if not weights.is_file():
        raise UserInputError(f"{weights}: weights file not found")
    load_weights(net, weights, sidecar=info)
    return net.to(device).eval(), info


def _run_weights(run: Path) -> Path:
    for name in ("best", "last"):
        p = run / "checkpoints" / f"{name}.safetensors"
        if p.is_file():
            return p
    raise UserInputError(f"{run}: no checkpoints/best.safetensors or last.safetensors; pass a run "
                         "folder written by `hybridvision train`")


def _coco_pairs(data: str | None) -> list[tuple[Path, Path]]:
    """The ``(annotation file, image folder)`` pairs of a ``coco:`` data spec (else none)."""
    if not data or not data.startswith("coco:"):
        return []
    parts = [Path(p).expanduser() for p in data[len("coco:"):].split(",") if p]
    if len(parts) not in (2, 4):
        raise UserInputError(f"--data {data}: expected coco:ANN.json,IMAGES_DIR "
                             "(or coco:TRAIN_ANN.json,TRAIN_IMAGES,VAL_ANN.json,VAL_IMAGES)")
    return [(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]


def evaluate_run(*, run: str | Path | None = None, weights: str | Path | None = None,
                 data: str | None = None, out: str | Path | None = None, device: str = "auto",
                 batch_size: int = 8, progress: bool = True, exist_ok: bool = False,
                 tta: str | None = None, max_dets: int | None = None) -> dict[str, Any]:
    """Evaluate a trained model: ``run`` folder, or ``weights`` + ``data`` spec.

    ``tta``: a detector's test-time augmentation, ``"flip"`` or ``"multiscale"``
    (:mod:`hybridvision.detectors.tta`); None evaluates the plain predictions. ``max_dets``: N of
    COCO's ``maxDets = [1, 10, N]`` (the detector then keeps at least N detections per image;
    metric ``AR{N}``); None: the run's ``eval_max_dets`` (100 unless it was set).

    Which images: without ``data``, the run's own validation split (its val pair, or the
    seeded 20 % it held out). With ``data``, the data given: ``coco:ANN.json,IMAGES`` (one pair)
    is evaluated **whole** — every image of ANN.json — and ``coco:TRAIN,IMGS,VAL,IMGS`` (two
    pairs) on its val pair; ``builtin:amounts`` on its val split. ``val_limit`` of the run's
    config applies only without ``data``.

    Writes ``OUT/coco_metrics.json``, ``OUT/predictions.json`` and the analysis (PR curves,
    confusion matrix, per-class AP: the rest of :data:`_EVAL_FILES`; a classifier:
    ``OUT/metrics.json``); OUT defaults to ``RUN/eval``, else ``runs/eval``, and must not be
    or hold an input nor be a folder of someone else's files (``exist_ok`` allows the latter).
    Returns ``{"metrics": {...12 keys}, "per_class": {...}, "num_images": N}`` (a classifier:
    ``{"top1", "top5", "num_images"}``).
    """
    if tta is not None and tta not in TTA_MODES:
        raise UserInputError(f"--tta {tta}: use one of {', '.join(TTA_MODES)}")
    if max_dets is not None:
        check_max_dets(max_dets, option="--max-dets")
    if run is not None:
        run = Path(run)
        weights = _run_weights(run)
        out = Path(out) if out else run / "eval"
    if weights is None:
        raise UserInputError("eval: pass --run DIR, or --weights FILE with --data SPEC, or --gt/--dt")
    weights = Path(weights)
    out = Path(out or "runs/eval")
    pairs = _coco_pairs(data)
    check_output_path(out, inputs=[weights, weights.with_suffix(".json"), *(p for pair in pairs for p in pair)],
                      kind="dir", exist_ok=exist_ok, known_files=_EVAL_FILES)
    dev = resolve_device(device)
    model, info = load_trained(weights, dev)
    cfg_dict = dict(info.get("config") or {})
    try:
        cfg = (TrainConfig.from_dict(cfg_dict, source=str(weights.with_suffix(".json"))) if cfg_dict
               else TrainConfig(model=info["model"]))
    except (TypeError, ValueError, KeyError) as e:
        raise UserInputError(f"{weights.with_suffix('.json')}: key 'config' is not a valid training "
                             f"config ({str(e).splitlines()[0][:160]}); pass --data SPEC with a "
                             "checkpoint of this version") from None
    if data:  # data given explicitly is evaluated whole
        # the training data's options (builtin:amounts' n_train…) do not apply to another kind of data
        same_kind = data.partition(":")[0] == cfg.data.partition(":")[0]
        cfg = cfg.updated({"data": data, "val_limit": 0, **({} if same_kind else {"data_kwargs": {}})},
                          source="--data")
    if max_dets is not None:
        cfg = cfg.updated({"eval_max_dets": max_dets}, source="--max-dets")
    task = make_task(cfg)
    if max_dets is not None and task.name != "detection":
        raise UserInputError(f"--max-dets {max_dets}: {weights} is a {task.name} model; --max-dets sets "
                             "the detections per image of a COCO evaluation — leave it out")
    # One pair given explicitly is evaluated whole, not a training-time hold-out.
    bundle = task.build_eval_data(cfg, whole=bool(data))
    if bundle.class_names != info.get("class_names", bundle.class_names):
        raise UserInputError(f"--data {cfg.data}: its classes {bundle.class_names[:5]}… differ from "
                             f"the classes {weights} was trained on; evaluate on matching data")
    if progress:
        console.print(f"evaluating {weights} on {len(bundle.val)} images of {cfg.data}")
    loader = DataLoader(bundle.val, batch_size=batch_size, collate_fn=bundle.collate)
    evaluation, results = task.evaluate(model, loader, dev, bundle, progress=progress, tta=tta)
    evaluation = {**evaluation, "num_images": len(bundle.val)}
    make_output_dir(out)
    task.write_evaluation(evaluation, results, out)
    return evaluation


def evaluate_files(gt: str | Path, dt: str | Path, out: str | Path | None = None, *,
                   max_dets: int = 100, exist_ok: bool = False) -> dict[str, Any]:
    """COCO evaluation of a results file against a ground-truth file (no model involved).

    ``max_dets``: N of COCO's ``maxDets = [1, 10, N]``, the detections per image counted (the
    best N by score; metric ``AR{N}``).

    ``out`` is checked before evaluating, and is either

    - a folder (a path not ending in ``.json``): it gets the files :func:`evaluate_run` writes
      — ``coco_metrics.json`` (with ``num_images``), ``predictions.json`` (the results
      evaluated), ``pr_curves.json``, ``confusion_matrix.json``, ``per_class_ap.csv``,
      ``pr_curve.png`` and ``confusion_matrix.png`` — and must be new, empty or written by
      hybridvision (not someone else's files) and hold neither input; or
    - a ``.json`` file: the metrics JSON alone (the 12 numbers and per-class AP), not ``gt``
      or ``dt``; an existing one is refused unless ``exist_ok`` (the CLI's ``--exist-ok``) is
      True, which replaces it.

    Returns ``{"metrics": {...12 keys}, "per_class": {...}, "analysis": DetectionAnalysis}``
    (:func:`~hybridvision.evaluation.analysis.evaluate_with_analysis`; ``num_images`` too when a
    folder was written).
    """
    max_dets = check_max_dets(max_dets, option="--max-dets")
    for p, what in ((gt, "--gt"), (dt, "--dt")):
        if not Path(p).is_file():
            raise UserInputError(f"{p}: {what} file not found")
    folder = out is not None and Path(out).suffix.lower() != ".json"
    if out is not None:
        check_output_path(out, inputs=(gt, dt), kind="dir" if folder else "file", known_files=_EVAL_FILES,
                          exist_ok=exist_ok)
    evaluation = evaluate_with_analysis(str(gt), str(dt), max_dets=max_dets)
    if folder:
        # Both files were read and checked by the evaluation; read again only to write the folder.
        images = read_json(gt, what="COCO annotation")["images"]
        evaluation = {**evaluation, "num_images": len(images)}
        make_output_dir(out)
        DetectionTask().write_evaluation(evaluation, read_json(dt, what="COCO results"), Path(out))
    elif out is not None:
        write_metrics_json(evaluation, out)
    return evaluation


def _list_images(source: Path) -> list[Path]:
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise UserInputError(f"{source}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return files
    if source.is_file():
        return [source]
    raise UserInputError(f"{source}: no such image or folder")


def prepare_image(img: torch.Tensor, size: int | None = None,
                  size_divisible: int = 32) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image ``[3, H, W]`` → a batch ``[1, 3, H', W']`` and its content size ``(h, w)``.

    Resizes keeping the aspect ratio so the longer side is ``size`` (the evaluation transform's
    convention; ``None`` keeps the size), then zero-pads bottom/right to a multiple of
    ``size_divisible`` (pass the model's ``size_divisible``).
    """
    h, w = img.shape[-2:]
    if size is not None:
        scale = size / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
        img = TF.resize(img, [h, w], antialias=True)
    batch, sizes = batch_images([img], size_divisible)
    return batch, sizes[0]


def _gt_image_ids(gt: str | Path, images: list[Path]) -> list[int]:
    """The ``id`` of each image in a COCO file ``gt``, matched by file name."""
    data = read_json(gt, what="COCO annotation")
    records = data.get("images") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise UserInputError(f"{gt}: no 'images' list; pass the COCO annotation file of these images")
    by_name: dict[str, int] = {}
    for r in records:
        if isinstance(r, dict) and isinstance(r.get("file_name"), str) and isinstance(r.get("id"), int):
            by_name.setdefault(r["file_name"], r["id"])
            by_name.setdefault(Path(r["file_name"]).name, r["id"])
    ids = []
    for p in images:
        if p.name not in by_name:
            raise UserInputError(f"{gt}: no image record with file_name {p.name!r}; pass the "
                                 "annotation file these images belong to, or leave --gt out")
        ids.append(by_name[p.name])
    return ids


def _predict_folder(folder: Path) -> bool:
    """A folder predict wrote: marked as ours, or (written before the marker existed) holding
    ``predictions.json`` beside nothing but annotated PNGs, ``images.json`` and ``labels/``."""
    if (folder / OWNER_MARKER).is_file():
        return True
    names = {e.name: e for e in folder.iterdir()}
    return "predictions.json" in names and all(
        n in ("predictions.json", "images.json") or (n == "labels" and e.is_dir())
        or (n.lower().endswith(".png") and e.is_file()) for n, e in names.items())


def dataset_report(ann: Path, out: Path | None = None, *, exist_ok: bool = False) -> tuple[DatasetStats, Path]:
    """``hybridvision data stats``: the statistics of a COCO file, written as stats.json and three
    figures (:data:`~hybridvision.evaluation.analysis.STATS_FILES`) into ``out`` (default
    runs/stats/ANN_STEM), a folder that must be new, empty or written by this function unless
    ``exist_ok``. Returns the statistics and the folder."""
    check_annotation_file(ann)
    target = out if out is not None else Path("runs/stats") / ann.stem
    check_output_path(target, inputs=[ann], kind="dir", exist_ok=exist_ok, known_files=STATS_FILES)
    stats = dataset_stats(ann)
    make_output_dir(target)
    write_dataset_stats(stats, target)
    save_dataset_stats_plots(stats, target)
    return stats, target


def check_predict_options(score_threshold: float, *, iou: float | None = None, max_det: int | None = None,
                          image_size: int | None = None, tile_overlap: float = 0.5) -> None:
    """Refuse, in one line naming the ``hybridvision predict`` option, a :func:`predict` setting
    out of range: a score threshold outside [0, 1], an IoU threshold outside (0, 1], fewer than one
    detection per image, a side outside [32, 8192], a window overlap outside [0, 0.9]."""
    conf = score_threshold
    if not (math.isfinite(conf) and 0.0 <= conf <= 1.0):
        raise UserInputError(f"--conf {conf:g}: not a score threshold; use a number in [0, 1], e.g. --conf 0.3")
    if iou is not None and not (math.isfinite(iou) and 0.0 < iou <= 1.0):
        raise UserInputError(f"--iou {iou:g}: not an IoU threshold; use a number in (0, 1], e.g. --iou 0.6")
    if max_det is not None and max_det < 1:
        raise UserInputError(f"--max-det {max_det}: keep at least 1 detection per image, e.g. --max-det 300")
    if image_size is not None and not 32 <= image_size <= 8192:
        raise UserInputError(f"--image-size {image_size}: use a side in [32, 8192] pixels")
    check_tile_overlap(tile_overlap, "--tile-overlap")


@torch.inference_mode()
def predict(source: str | Path, *, weights: str | Path, out: str | Path = "runs/predict",
            device: str = "auto", score_threshold: float = 0.3, image_size: int | None = None,
            gt: str | Path | None = None, exist_ok: bool = False, iou: float | None = None,
            max_det: int | None = None, tile: bool = False, tile_overlap: float = 0.5) -> list[dict[str, Any]]:
    """Detect objects in an image or every image of a folder (sorted by file name).

    ``image_size``: the longer side the image is resized to (default: the training size);
    ``iou`` and ``max_det``: the NMS threshold and the detections kept per image (default: the
    model's). ``tile``: sliced inference (:func:`~hybridvision.engine.tiling.predict_tiled`) —
    the image at full resolution in overlapping windows of ``image_size`` (``tile_overlap`` of a
    window), for images much larger than the objects the model was trained on.

    Writes into ``out`` (a new folder, or one hybridvision made; never the source or a folder
    holding it; ``exist_ok`` allows someone else's non-empty folder):

    - ``predictions.json`` — COCO results: ``[{image_id, category_id, bbox: [x, y, w, h], score}]``
      in original pixels, ready for ``hybridvision eval --gt GT --dt OUT/predictions.json``;
    - ``images.json`` — ``{"images": [{id, file_name, width, height}], "categories": [{id, name}]}``,
      the image ids used: 1..N in sorted file-name order, or the ids of ``gt`` (a COCO annotation
      file listing these images) matched by file name;
    - ``labels/<file name>.json`` — per image: ``file_name``, ``image_id``, ``width``, ``height``
      and ``detections`` (``category_id``, ``category``, ``bbox``, ``score``);
    - ``<file name>.png`` — the image with its boxes drawn (``a.jpg`` → ``a.jpg.png``, so ``a.png``
      and ``a.jpg`` both keep their result).

    Returns the COCO results list written to ``predictions.json``.
    """

    source, weights, out = Path(source), Path(weights), Path(out)
    files = _list_images(source)
    check_output_path(out, inputs=[source, *files, weights, weights.with_suffix(".json"), gt],
                      kind="dir", exist_ok=exist_ok, owner_marker=_predict_folder)
    image_ids = _gt_image_ids(gt, files) if gt is not None else list(range(1, len(files) + 1))
    dev = resolve_device(device)
    model, info = load_trained(weights, dev)
    if info.get("task", "detection") != "detection":
        raise UserInputError(f"{weights}: a {info.get('task')} model; predict draws detections")
    post = model.postprocess  # the detector's PostProcess (detectors.base)
    post.score_thresh = min(float(post.score_thresh), score_threshold)  # --conf below the candidates' cut
    if iou is not None:
        post.nms_thresh = float(iou)
    if max_det is not None:
        post.detections_per_img = int(max_det)
    size = int(image_size or info.get("image_size") or 512)
    names = info.get("class_names") or [str(i) for i in range(info.get("num_classes", 0))]
    cat_ids = info.get("label_to_cat_id") or list(range(1, len(names) + 1))
    for path in files:  # every header first: a bad image fails before anything is written
        read_image_size(path)
    make_output_dir(out)
    results: list[dict[str, Any]] = []
    image_records: list[dict[str, Any]] = []
    for path, image_id in zip(files, image_ids):
        img = load_image(path)
        h0, w0 = img.shape[-2:]
        if tile:
            with torch.no_grad():
                dets = predict_tiled(model, img.to(dev), size, overlap=tile_overlap)
            dets = {k: v.cpu() for k, v in dets.items()}
        else:
            batch, (h, w) = prepare_image(img, size, model.size_divisible)
            with torch.no_grad():
                dets = model.decode(model(batch.to(dev), [(h, w)]), [(h, w)])[0]
            dets = scale_detections({k: v.cpu() for k, v in dets.items()}, w0 / w, h0 / h)
        keep = dets["scores"] >= score_threshold
        dets = {k: v[keep] for k, v in dets.items()}
        save_image(draw_detections(img, dets["boxes"], dets["labels"], dets["scores"], names),
                   out / f"{path.name}.png")
        per_image = []
        for b, sc, lab in zip(dets["boxes"].tolist(), dets["scores"].tolist(), dets["labels"].tolist()):
            bbox = [b[0], b[1], b[2] - b[0], b[3] - b[1]]
            results.append({"image_id": image_id, "category_id": int(cat_ids[lab]), "bbox": bbox, "score": sc})
            per_image.append({"category_id": int(cat_ids[lab]), "category": names[lab], "bbox": bbox, "score": sc})
        record = {"id": image_id, "file_name": path.name, "width": int(w0), "height": int(h0)}
        image_records.append(record)
        atomic_write_json(out / "labels" / f"{path.name}.json",
                          {"file_name": path.name, "image_id": image_id, "width": int(w0),
                           "height": int(h0), "detections": per_image}, indent=1)
    atomic_write_json(out / "images.json", {
        "images": image_records,
        "categories": [{"id": int(c), "name": n} for c, n in zip(cat_ids, names)],
    }, indent=1)
    atomic_write_json(out / "predictions.json", results, indent=1)
    return results


def _retrieval_embedder(model: torch.nn.Module, task: str, size: int, modality: str, dev: torch.device):
    """Image paths → unit embeddings ``[B, E]``: the SBIR model's branch of ``modality``, or a
    classifier's pooled last stage (unimodal: every image read as a grey sketch)."""
    photo = task == "sbir" and modality == "photo"
    in_chans = 3 if photo else int(getattr(model, "in_chans", 1))
    tf = build_classification_transforms(False, size, sketch=not photo, in_chans=in_chans)

    def load(p: Path) -> torch.Tensor:
        return tf(load_modality_image(p, "photo" if photo else "sketch")).as_subclass(torch.Tensor)

    @torch.no_grad()
    def embed(paths: list[Path]) -> torch.Tensor:
        x = torch.stack([load(p) for p in paths]).to(dev)
        if task == "sbir":
            return model.embed(x, modality).cpu()
        return torch.nn.functional.normalize(pooled_features(model, x).float(), dim=1).cpu()

    return embed


def retrieve(query: str | Path, *, weights: str | Path, gallery: str | Path, k: int = 10,
             out: str | Path | None = None, device: str = "auto", cache: str | Path | None = None,
             exist_ok: bool = False) -> dict[str, Any]:
    """Rank the images of ``gallery`` for the sketch ``query``.

    ``weights``: a two-branch SBIR model (sketch query → photo gallery) or a classifier (unimodal:
    its pooled last stage embeds both). The gallery's embeddings are cached
    (:class:`~hybridvision.retrieval.index.GalleryIndex`, ``cache`` folder) and reused while the
    weights and the gallery's files are unchanged. With ``out``, writes a PNG grid: the query and
    its top ``k``, bordered green / red when a result's class folder is / is not the query's.

    Returns ``{"query", "results": [{"rank", "file", "score"}], "cached", "gallery_size"}``.
    """
    query, weights, gallery = Path(query), Path(weights), Path(gallery)
    if k < 1:
        raise UserInputError(f"-k {k}: use 1 or more results")
    if not query.is_file():
        raise UserInputError(f"--query {query}: file not found; pass a sketch image")
    if out is not None:
        out = check_output_path(out, inputs=[query, gallery, weights, weights.with_suffix(".json")], kind="file",
                                exist_ok=exist_ok)
    dev = resolve_device(device)
    model, info = load_trained(weights, dev)
    task = info.get("task", "detection")
    if task not in ("sbir", "classification"):
        raise UserInputError(f"{weights}: a {task} model; retrieval needs an SBIR model (sbir_*) or a classifier")
    size = int(info.get("image_size") or 224)
    q = _retrieval_embedder(model, task, size, "sketch", dev)([query])  # [1, E]
    if not bool(torch.isfinite(q).all()):
        raise UserInputError(f"{weights}: the model's embedding of {query} is not finite (NaN/inf): its "
                             "weights are damaged or diverged; retrain or pass other --weights")
    index = GalleryIndex.build(gallery, weights, size, _retrieval_embedder(model, task, size, "photo", dev),
                               cache_dir=cache, width=q.shape[1])  # a cache of another width is rebuilt
    scores, order = index.search(q, k)
    results = [{"rank": r + 1, "file": index.files[i], "score": float(s)}
               for r, (s, i) in enumerate(zip(scores[0].tolist(), order[0].tolist()))]
    if out is not None:
        q_class = query.parent.name
        classes = {Path(f).parent.name for f in index.files} - {""}
        known = q_class in classes
        tiles = []
        for r in results:
            tiles.append((to_pil_image(load_image_uint8(gallery / r["file"])),
                          Path(r["file"]).parent.name or Path(r["file"]).name, r["score"],
                          (Path(r["file"]).parent.name == q_class) if known else None))
        save_image(draw_retrieval_grid(to_pil_image(load_image_uint8(query)), tiles), out)
    return {"query": str(query), "results": results, "cached": index.cached, "gallery_size": len(index.files)}
