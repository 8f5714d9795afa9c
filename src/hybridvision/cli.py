"""The ``hybridvision`` command line: thin verbs that parse options and call the library.

Every error a user can cause (bad data, unknown model, missing file, a bad option value) ends in
one line on stderr and exit code 2; ``--debug`` (or ``HYBRIDVISION_DEBUG=1``) shows the traceback
instead. Ctrl-C exits 130 with a hint on how to resume a training run.

Imports are all at the top: every package module is cheap to import once torch is loaded (which
the package's ``__init__`` does anyway), and the heavy optional libraries (onnx, onnxruntime,
matplotlib) are imported by the functions that use them, so ``hybridvision --help`` stays as fast
as ``import hybridvision``. No package module imports this one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import typer
from typer import rich_utils as typer_help
from rich import box
from rich.table import Column, Table

from hybridvision.api import (check_predict_options, dataset_report, evaluate_files, evaluate_run, load_trained,
                              predict, retrieve)
from hybridvision.bench import bench_json, bench_side, build_bench_target, compare_models
from hybridvision import interrupts
from hybridvision.console import console, err_console
from hybridvision.config import TrainConfig, train_config
from hybridvision.data.builtin.amounts import make_amounts
from hybridvision.data.builtin.bimodal import make_bimodal
from hybridvision.data.builtin.sketches import make_sketches
from hybridvision.data.converters import modanet_to_coco, montos_to_coco
from hybridvision.data.classification_transforms import AUGMENT_OPTIONS as CLASSIFICATION_AUGMENT
from hybridvision.data.classification_transforms import augment_defaults
from hybridvision.data.importers import csv_to_coco, parse_class_names, parse_csv_columns, voc_to_coco, yolo_to_coco
from hybridvision.data.slicing import slice_coco
from hybridvision.data.transforms import AUGMENT_OPTIONS as DETECTION_AUGMENT
from hybridvision.data.transforms import TRANSFORM_PRESETS
from hybridvision.data.validate import check_annotation_file, check_coco
from hybridvision.demo import DEMO_CONFIG, run_demo
from hybridvision.engine.progress import format_evaluation, format_per_class, format_train_evaluations
from hybridvision.engine.tasks import create_task
from hybridvision.engine.trainer import resolve_device, train
from hybridvision.errors import UserInputError
from hybridvision.evaluation.coco import check_max_dets
from hybridvision.explain import explain, parse_point
from hybridvision.export import (check_exportable, check_opset, check_size, default_size, export_onnx, export_target,
                                 random_model)
from hybridvision.factory import describe_model, find_models
from hybridvision.evaluation.analysis import dataset_stats
from hybridvision.options import MAX_GENERATED
from hybridvision.fileio import atomic_write_text, check_output_path
from hybridvision.registry import registered_tasks
from hybridvision.studies.runner import STUDIES, run_study

app = typer.Typer(
    name="hybridvision",
    help="Anchor-free detectors and hybrid convolution/attention backbones: train, evaluate, "
    "benchmark and compare. Start with `hybridvision demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Make built-in datasets, convert, check and summarise annotation files.",
                       no_args_is_help=True)
make_app = typer.Typer(help="Generate a built-in dataset.", no_args_is_help=True)
convert_app = typer.Typer(help="Convert annotations to COCO JSON.", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.add_typer(make_app, name="make")
data_app.add_typer(convert_app, name="convert")



# --------------------------------------------------------------------------------------- models
@app.command("models")
def models_cmd(
    pattern: str = typer.Argument("*", help="shell-style filter, e.g. 'nl_fcos*'"),
    task: str | None = typer.Option(None, help=f"{' | '.join(registered_tasks())} \\[default: every task]"),
    params: bool = typer.Option(False, "--params", help="(kept for scripts; parameters are always counted)"),
    names_only: bool = typer.Option(False, "--names", help="print the matching names only, one a line (for "
                                    "scripts)"),
):
    """List the registered models: task, parameters, input and what each one is (its builder's
    docstring)."""
    names = find_models(pattern, task=task)
    if names_only:
        sys.stdout.write("".join(f"{n}\n" for n in names))
        return
    # No vertical rules: each row starts with its model name, as a script splitting on spaces expects.
    table = Table("model", "task", "params", "input", Column("description", overflow="fold"), box=box.SIMPLE_HEAD)
    for m in map(describe_model, names):
        table.add_row(m.name, m.task, f"{m.params / 1e6:.2f}M", m.input, m.description)
    console.print(table)


# ---------------------------------------------------------------------------------------- train
def _from_config(help_text: str, key: str) -> str:
    """Help of a train option whose default (None) leaves the config's value: the text plus that
    value. The bracket is escaped for rich's markup."""
    default = TrainConfig.model_fields[key].get_default(call_default_factory=True)
    return f"{help_text} \\[default: {default} (from the config)]"


@app.command("train", context_settings={"allow_extra_args": False})
def train_cmd(
    overrides: list[str] | None = typer.Argument(None, help="extra settings as key=value, e.g. "
                                                    "warmup_steps=200 model_kwargs.width=0.5"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (a run's config.yaml) "
                                          "\\[default: none: the built-in defaults]"),
    model: str | None = typer.Option(None, "--model", "-m", help=_from_config("registered model name", "model")),
    data: str | None = typer.Option(None, "--data", "-d",
                                       help=_from_config("builtin:amounts | coco:ANN,IMAGES[,VAL_ANN,VAL_IMAGES] | "
                                       "builtin:sketches | quickdraw:DIR | tuberlin:DIR", "data")),
    epochs: int | None = typer.Option(None, help=_from_config("training epochs (>= 1)", "epochs")),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b",
                                          help=_from_config("images per step and device", "batch_size")),
    lr: float | None = typer.Option(None, help=_from_config("peak learning rate (> 0)", "lr")),
    optimizer: str | None = typer.Option(None, help=_from_config("sgd | adamw", "optimizer")),
    image_size: int | None = typer.Option(None, "--image-size",
                                          help=_from_config("input size (longer side, >= 32)", "image_size")),
    device: str | None = typer.Option(None, help=_from_config("auto | cpu | cuda | cuda:N", "device")),
    seed: int | None = typer.Option(None, help=_from_config("random seed", "seed")),
    workers: int | None = typer.Option(None, help=_from_config("data loader worker processes", "workers")),
    out: str | None = typer.Option(None, "--out", "-o", help=_from_config("run folder", "out")),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint "
                                "(with its config.yaml, else the config stored in checkpoints/last.json)"),
    weights: Path | None = typer.Option(None, "--weights",
                                        help="initial weights (.safetensors) \\[default: none: random init]"),
    backbone_weights: str | None = typer.Option(
        None, "--backbone-weights", help="pretrained ResNet weights for the backbone: a .safetensors or .pth "
        "file, or torchvision:NAME from the torch hub cache (sets model_kwargs.backbone_weights; stem, layer1 "
        "and BatchNorm then frozen unless model_kwargs.freeze_stages / frozen_bn say otherwise) "
        "\\[default: none: the model's own initialisation]"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="overwrite an existing run folder, or write into "
                                  "a non-empty folder that is not one"),
):
    """Train a model. Under torchrun it trains on every process (DDP).

    Settings come from the built-in defaults, then --config (or, with --resume, the run's own
    config), then the options, then key=value overrides. At the end the last and the best
    weights' evaluations are printed, each with its epoch.

    Example: hybridvision train --model fcos_demo --data builtin:amounts --epochs 10
    """
    options = dict(model=model, data=data, epochs=epochs, batch_size=batch_size, lr=lr,
                   optimizer=optimizer, image_size=image_size, device=device, seed=seed,
                   workers=workers, out=out)
    cfg = train_config(config, resume=resume, options=options, backbone_weights=backbone_weights,
                       overrides=overrides)
    summary = train(cfg, resume=resume, weights=str(weights) if weights else None, exist_ok=exist_ok)
    text = format_train_evaluations(summary.evaluation, summary.best_evaluation, summary.last_epoch,
                                    summary.best_epoch)
    if text:
        console.print(text, markup=False, highlight=False)
    console.print(f"run folder: {summary.out}  ({summary.steps} steps, {summary.seconds:.0f} s)")


# Every key=value setting with its default, at the end of `train --help`.
train_cmd.__doc__ += "\n    Settings (key=value) and their defaults:\n\n" + "".join(
    f"    {k}={v}\n" for k, v in TrainConfig().to_dict().items())
CLASSIFICATION_DEFAULTS = augment_defaults()


def _rich(text: object) -> str:
    return str(text).replace("[", "\\[")  # rich markup would swallow "[min, max]"


train_cmd.__doc__ += (
    "\n    augment.KEY=VALUE options of detection runs (defaults: builtin:amounts / coco: data):\n\n" + "".join(
        f"    augment.{k}: {_rich(what)} (default {_rich(TRANSFORM_PRESETS['amounts'].get(k))} / "
        f"{_rich(TRANSFORM_PRESETS['coco'].get(k))})\n" for k, what in DETECTION_AUGMENT.items())
    + "\n    augment.KEY=VALUE options of classification runs:\n\n"
    + "".join(f"    augment.{k}: {_rich(what)} (default {_rich(CLASSIFICATION_DEFAULTS.get(k))})\n"
              for k, what in CLASSIFICATION_AUGMENT.items()))


# ----------------------------------------------------------------------------------------- eval
@app.command("eval")
def eval_cmd(
    gt: Path | None = typer.Option(None, "--gt", help="COCO ground-truth annotation JSON \\[default: none]"),
    dt: Path | None = typer.Option(None, "--dt", help="COCO results JSON (detections) \\[default: none]"),
    run: Path | None = typer.Option(None, "--run",
                                    help="a run folder written by train (its best weights) \\[default: none]"),
    weights: Path | None = typer.Option(None, "--weights", help="a .safetensors checkpoint \\[default: none]"),
    data: str | None = typer.Option(None, "--data", help="data spec to evaluate on (with --weights) "
                                       "\\[default: the data in the checkpoint's config]"),
    out: Path | None = typer.Option(None, "--out", "-o",
                                       help="with --gt/--dt: a metrics JSON file, or a folder for every "
                                       "evaluation file; else output folder "
                                       "\\[default: RUN/eval, runs/eval; with --gt/--dt: none]"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    exist_ok: bool = typer.Option(False, "--exist-ok",
                                  help="allow an --out folder holding files hybridvision did not write, or "
                                  "replace an existing --out .json file"),
    tta: str | None = typer.Option(None, "--tta", help="test-time augmentation of a detector: flip | "
                                   "multiscale (scales 0.5–1.5) \\[default: none]"),
    max_dets: int | None = typer.Option(None, "--max-dets", help="N, the detections per image and class COCO counts "
                                        "(maxDets [1, 10, N], reported as AR{N}; a model keeps at least N), "
                                        "an integer in [11, 100000]; e.g. 300 for images with over 100 objects "
                                        "\\[default: 100; a run: its eval_max_dets]"),
):
    """COCO evaluation: of a results file (--gt/--dt), or of a trained model (--run, --weights).

    Prints the 12 COCO numbers (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl;
    with --max-dets N, AR100 is AR{N} and AP counts N detections per image)
    and a per-class AP table; "-" marks an empty size bucket or a class without ground truth.
    A model's evaluation (--run, --weights), and --gt/--dt with a folder --out, also write PR
    curves (pr_curves.json, pr_curve.png), a confusion matrix with a background class
    (confusion_matrix.json, .png) and per_class_ap.csv.
    """
    if max_dets is not None:
        check_max_dets(max_dets, option="--max-dets")
    if gt is not None or dt is not None:
        if gt is None or dt is None:
            raise UserInputError("eval: --gt and --dt go together (ground truth and results files)")
        if run is not None or weights is not None or data is not None or tta is not None:
            raise UserInputError("eval: --gt/--dt evaluate a results file; --run, --weights, --data and "
                                 "--tta evaluate a model — pass one or the other")
        evaluation = evaluate_files(gt, dt, out, max_dets=100 if max_dets is None else max_dets,
                                    exist_ok=exist_ok)
    else:
        evaluation = evaluate_run(run=run, weights=weights, data=data, out=out, device=device,
                                  exist_ok=exist_ok, tta=tta, max_dets=max_dets)
    console.print(format_evaluation(evaluation), markup=False, highlight=False)
    per_class = format_per_class(evaluation)
    if per_class:
        console.print(per_class, markup=False, highlight=False)


# -------------------------------------------------------------------------------------- predict
@app.command("predict")
def predict_cmd(
    source: Path = typer.Argument(..., help="an image or a folder of images"),
    weights: Path = typer.Option(..., "--weights", "-w", help="a .safetensors checkpoint"),
    out: Path = typer.Option(Path("runs/predict"), "--out", "-o", help="output folder"),
    conf: float = typer.Option(0.3, "--conf", help="minimum score to keep a detection"),
    image_size: int | None = typer.Option(None, "--image-size", help="longer side the image is resized to; "
                                          "with --tile, the window side \\[default: the training size]"),
    iou: float | None = typer.Option(None, "--iou", help="NMS IoU threshold \\[default: the model's]"),
    max_det: int | None = typer.Option(None, "--max-det", help="detections kept per image \\[default: the "
                                       "model's, usually 100]"),
    tile: bool = typer.Option(False, "--tile", help="sliced inference: the image at full resolution in "
                              "overlapping windows of --image-size, merged by NMS (large images, small objects)"),
    tile_overlap: float = typer.Option(0.5, "--tile-overlap", help="overlap of neighbouring windows, a "
                                       "fraction of a window in [0, 0.9]"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    gt: Path | None = typer.Option(None, "--gt", help="COCO file of these images: use its image ids "
                                   "\\[default: ids 1..N in sorted file order]"),
    exist_ok: bool = typer.Option(False, "--exist-ok",
                                  help="allow an --out folder holding files hybridvision did not write"),
):
    """Detect objects: annotated PNGs, COCO results (predictions.json), images.json and
    labels/<image>.json in --out."""
    check_predict_options(conf, iou=iou, max_det=max_det, image_size=image_size, tile_overlap=tile_overlap)
    records = predict(source, weights=weights, out=out, device=device, score_threshold=conf, gt=gt,
                      exist_ok=exist_ok, image_size=image_size, iou=iou, max_det=max_det, tile=tile,
                      tile_overlap=tile_overlap)
    console.print(f"{len(records)} detections → {out}/predictions.json and annotated PNGs")


@app.command("retrieve")
def retrieve_cmd(
    query: Path = typer.Option(..., "--query", "-q", help="a sketch image"),
    weights: Path = typer.Option(..., "--weights", "-w", help="a .safetensors checkpoint: an SBIR model "
                                 "(sbir_*) or a classifier (unimodal)"),
    gallery: Path = typer.Option(..., "--gallery", "-g", help="a folder of images (class folders or flat)"),
    k: int = typer.Option(10, "-k", help="results to show"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write the query and its top k as a PNG grid "
                                    "\\[default: none: print the ranking only]"),
    cache: Path | None = typer.Option(None, "--cache", help="where gallery indexes are kept "
                                      "\\[default: ~/.cache/hybridvision/gallery]"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="allow --out to replace an existing file"),
):
    """Rank a gallery for a sketch query; the gallery's embeddings are cached and reused while
    the weights and the gallery are unchanged."""
    res = retrieve(query, weights=weights, gallery=gallery, k=k, out=out, device=device, cache=cache,
                   exist_ok=exist_ok)
    # The title on a line of its own: a table's title wraps to the table's width, which broke the
    # query's path across lines.
    console.print(f"{res['query']} → {res['gallery_size']} gallery images "
                  f"({'cached index' if res['cached'] else 'index built'})")
    table = Table()
    for col in ("rank", "file", "score"):
        table.add_column(col)
    for r in res["results"]:
        table.add_row(str(r["rank"]), r["file"], f"{r['score']:.4f}")
    console.print(table)
    if out is not None:
        console.print(f"grid → {out}")


# ----------------------------------------------------------------------------------------- data
@make_app.command("amounts")
def make_amounts_cmd(
    out: Path = typer.Option(Path("data/amounts"), "--out", "-o", help="output folder"),
    train: int = typer.Option(2000, "--train", min=0, max=MAX_GENERATED, help="training images"),
    val: int = typer.Option(300, "--val", min=0, max=MAX_GENERATED, help="validation images"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="random seed (same seed → same dataset)"),
    image_size: int = typer.Option(128, "--image-size", min=32, max=2048, help="canvas size in pixels"),
):
    """Handwritten amounts: 1–8 digits per image, COCO JSON + montos .txt labels."""
    make_amounts(out, n_train=train, n_val=val, seed=seed, image_size=image_size)
    console.print(f"wrote {out}/{{train,val}}/images, annotations.json, labels/")


@make_app.command("sketches")
def make_sketches_cmd(
    out: Path = typer.Option(Path("data/sketches"), "--out", "-o", help="output folder"),
    per_class: int = typer.Option(200, "--per-class", min=1, max=MAX_GENERATED, help="drawings per class"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="random seed"),
):
    """Procedural sketches (≥30 classes) as QuickDraw simplified ndjson, one file per class."""
    make_sketches(out, per_class=per_class, seed=seed)
    console.print(f"wrote {out}/<class>.ndjson")


@make_app.command("bimodal")
def make_bimodal_cmd(
    out: Path = typer.Option(Path("data/bimodal"), "--out", "-o", help="output folder"),
    sketches: int = typer.Option(40, "--sketches", min=1, max=MAX_GENERATED, help="sketches per class"),
    photos: int = typer.Option(60, "--photos", min=1, max=MAX_GENERATED, help="photos per class"),
    size: int = typer.Option(96, "--size", min=16, max=2048, help="image side in pixels"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="random seed"),
):
    """Sketches and rendered photos of the 36 built-in classes (Flickr15k layout), 9 held out
    for zero-shot retrieval (unseen_classes.txt)."""
    make_bimodal(out, sketches=sketches, photos=photos, size=size, seed=seed)
    console.print(f"wrote {out}/sketches/<class>/, {out}/photos/<class>/ and {out}/unseen_classes.txt")


@convert_app.command("montos")
def convert_montos_cmd(
    labels_dir: Path = typer.Argument(..., help="folder of montos .txt files (<class>: <x>, <y>, <w>, <h>)"),
    images: Path = typer.Option(..., "--images", help="folder of the images (same file stems)"),
    out: Path = typer.Option(..., "--out", "-o", help="COCO annotation JSON to write"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="replace an existing output file"),
):
    """Montos text labels → COCO JSON."""
    coco = montos_to_coco(labels_dir, images, out, exist_ok=exist_ok)
    console.print(f"wrote {out}: {len(coco['images'])} images, {len(coco['annotations'])} boxes")


@convert_app.command("modanet")
def convert_modanet_cmd(
    modanet_json: Path = typer.Argument(..., help="ModaNet instance file, e.g. modanet2018_instances_train.json"),
    out: Path = typer.Option(..., "--out", "-o", help="COCO annotation JSON (boxes) to write"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="replace an existing output file"),
):
    """ModaNet instances (polygons) → COCO boxes, 13 categories; boxes clipped to their image."""
    coco = modanet_to_coco(modanet_json, out, exist_ok=exist_ok)
    console.print(f"wrote {out}: {len(coco['images'])} images, {len(coco['annotations'])} boxes "
                  f"({coco['info']['dropped_boxes']} without area inside their image dropped)")


def _converted(out: Path, coco: dict) -> None:
    crowd = sum(int(a.get("iscrowd", 0)) for a in coco["annotations"])
    console.print(f"wrote {out}: {len(coco['images'])} images, {len(coco['annotations'])} boxes"
                  + (f" ({crowd} marked iscrowd)" if crowd else "") + f", {len(coco['categories'])} classes "
                  f"({', '.join(c['name'] for c in coco['categories'][:8])}"
                  f"{', …' if len(coco['categories']) > 8 else ''})"
                  + (f"; columns: {coco['info']['columns']}" if coco.get("info", {}).get("columns") else ""),
                  markup=False, highlight=False)


@convert_app.command("voc")
def convert_voc_cmd(
    annotations: Path = typer.Argument(..., help="folder of Pascal VOC .xml files (Annotations/)"),
    images: Path = typer.Option(..., "--images", help="folder of the images (JPEGImages/)"),
    out: Path = typer.Option(..., "--out", "-o", help="COCO annotation JSON to write"),
    classes: str | None = typer.Option(None, "--classes", help="class names in id order, comma-separated "
                                       "\\[default: the names found, sorted]"),
    drop_difficult: bool = typer.Option(False, "--drop-difficult", help="leave difficult objects out "
                                        "\\[default: kept as iscrowd, which the COCO evaluation ignores]"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="replace an existing output file"),
):
    """Pascal VOC XML → COCO JSON (1-based inclusive pixel indices → continuous pixel boxes)."""
    _converted(out, voc_to_coco(annotations, images, out, class_names=parse_class_names(classes),
                                drop_difficult=drop_difficult, exist_ok=exist_ok))


@convert_app.command("yolo")
def convert_yolo_cmd(
    labels: Path = typer.Argument(..., help="folder of YOLO .txt labels (labels/, any depth)"),
    images: Path = typer.Option(..., "--images", help="folder of the images (images/, same relative paths)"),
    names: Path = typer.Option(..., "--names", help="the dataset's data.yaml (its 'names')"),
    out: Path = typer.Option(..., "--out", "-o", help="COCO annotation JSON to write"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="replace an existing output file"),
):
    """YOLO text labels (class cx cy w h, normalised) → COCO JSON; images without a label file
    are kept as images without objects."""
    _converted(out, yolo_to_coco(labels, images, names, out, exist_ok=exist_ok))


@convert_app.command("csv")
def convert_csv_cmd(
    csv_file: Path = typer.Argument(..., help="CSV of boxes: image,xmin,ymin,xmax,ymax,label, with or without "
                                    "a header"),
    images: Path = typer.Option(..., "--images", help="folder the image column is relative to"),
    out: Path = typer.Option(..., "--out", "-o", help="COCO annotation JSON to write"),
    classes: str | None = typer.Option(None, "--classes", help="class names in id order, comma-separated "
                                       "\\[default: the labels found, sorted]"),
    columns: str | None = typer.Option(
        None, "--columns", help="where the fields are: FIELD=COLUMN pairs, comma-separated, FIELD one of image, "
        "xmin, ymin, xmax, ymax, label, COLUMN a header name or a position (0 = first column); e.g. "
        "image=0,xmin=1,ymin=2,xmax=3,ymax=4,label=5 for a file without a header, or image=photo,label=species "
        "\\[default: each field by its common header names (image_path, filename, x1, class_name, …); a file "
        "whose first row holds numbers has no header and is read as image,xmin,ymin,xmax,ymax,label]"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="replace an existing output file"),
):
    """A box CSV (pixel corners) → COCO JSON. Reads a header of common names (image_path, path,
    filename; xmin or x1; …; label, class or class_name — any case, other columns ignored) or a file
    without a header (keras-retinanet's path,x1,y1,x2,y2,class_name); --columns for any other layout.
    A row whose box and label are empty lists an image without objects. The summary names the
    columns read."""

    mapping = parse_csv_columns(columns) if columns is not None else None
    _converted(out, csv_to_coco(csv_file, images, out, class_names=parse_class_names(classes), columns=mapping,
                                exist_ok=exist_ok))


@data_app.command("check")
def check_cmd(
    ann: Path = typer.Argument(..., help="COCO annotation JSON"),
    images: Path = typer.Option(..., "--images", help="image folder"),
    no_images: bool = typer.Option(False, "--no-images", help="skip opening the image files"),
):
    """Validate a COCO dataset: keys, boxes, ids, categories, image files."""
    check_annotation_file(ann)
    if not no_images and not images.is_dir():
        raise UserInputError(f"--images {images}: image folder not found; pass the folder holding the "
                             "images, or --no-images")
    # Every pixel decoded (as training reads them): a PNG whose pixel data is corrupt passes the
    # header and CRC checks alone.
    # A file that is not JSON at all (not UTF-8, a syntax error) is an input error: one `error:` line.
    findings = check_coco(ann, images, check_images=not no_images, full_decode=True, unreadable="raise")
    if findings:
        for f in findings:
            err_console.print(str(f), soft_wrap=True, highlight=False, markup=False)
        err_console.print(f"{len(findings)} problem(s) in {ann}", highlight=False)
        raise typer.Exit(1)
    console.print(f"{ann}: OK", markup=False, highlight=False)
    console.print(dataset_stats(ann).summary(), markup=False, highlight=False, soft_wrap=True)


@data_app.command("stats")
def stats_cmd(
    ann: Path = typer.Argument(..., help="COCO annotation JSON"),
    out: Path | None = typer.Option(None, "--out", "-o", help="output folder \\[default: runs/stats/ANN_NAME]"),
    exist_ok: bool = typer.Option(False, "--exist-ok",
                                  help="allow an --out folder holding files hybridvision did not write"),
):
    """Statistics of a COCO dataset: boxes per class, box sizes (COCO's small/medium/large), box centres.

    Validates the file as `data check --no-images` does, then writes stats.json, class_counts.png,
    box_sizes.png and box_centres.png into --out and prints a summary.
    """
    stats, target = dataset_report(ann, out, exist_ok=exist_ok)
    console.print(stats.summary(), markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {target}/stats.json, class_counts.png, box_sizes.png, box_centres.png",
                  markup=False, highlight=False, soft_wrap=True)


@data_app.command("slice")
def slice_cmd(
    ann: Path = typer.Argument(..., help="COCO annotation JSON of the large images"),
    images: Path = typer.Option(..., "--images", help="folder the images' file_name is relative to"),
    size: int = typer.Option(..., "--size", help="tile side in pixels, in [32, 8192]"),
    overlap: float = typer.Option(0.2, "--overlap", help="fraction of a tile shared with its neighbour, in [0, 0.9]"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (annotations.json and images/)"),
    min_visible: float = typer.Option(0.5, "--min-visible", help="keep a box cut by a tile edge when the "
                                      "clipped box keeps at least this fraction of its area, in (0, 1]"),
    keep_empty: bool = typer.Option(True, "--keep-empty/--no-keep-empty", help="also write tiles with no box"),
    exist_ok: bool = typer.Option(False, "--exist-ok",
                                  help="allow an --out folder holding files hybridvision did not write"),
):
    """Cut large images into overlapping square tiles for training (SAHI's slice_coco idea).

    Tiles of --size pixels start every size − round(overlap·size) pixels; the last tile of a row or
    column ends flush with the image's right or bottom edge, so the tiles cover the image. An image
    side shorter than --size gives one tile of that side (not padded). A box is clipped to each
    tile it overlaps and kept there when the clipped box keeps at least --min-visible of its area
    (a box wholly inside a tile comes back unchanged, shifted by the tile's offset). Writes
    OUT/images/<stem>_x<X>_y<Y>.png and OUT/annotations.json, whose image records also hold
    source_image_id, source_file_name, offset_x and offset_y. Train on it with
    --data coco:OUT/annotations.json,OUT/images, then predict large images with predict --tile.
    """
    summary = slice_coco(ann, images, out, size=size, overlap=overlap, min_visible=min_visible,
                         keep_empty=keep_empty, exist_ok=exist_ok)
    console.print(summary.summary(), markup=False, highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------------------- demo
@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="run folder"),
    data_root: Path = typer.Option(Path("data"), "--data-root", help="where the built-in data goes"),
    epochs: int | None = typer.Option(None,
                                      help=f"override the demo's epochs \\[default: {DEMO_CONFIG.epochs}]"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    model: str | None = typer.Option(None, "--model", "-m", help="the detector to train, e.g. centernet_small "
                                     f"or retinanet_small \\[default: {DEMO_CONFIG.model}]"),
    data: str = typer.Option("builtin:amounts", "--data", "-d", help="builtin:amounts, or builtin:mnist-amounts "
                             "(real MNIST digits; pip install 'hybridvision\\[mnist]')"),
):
    """Make the built-in `amounts` data, train the demo FCOS, evaluate, plot (about 10 min on 2 CPU cores)."""
    run_demo(out=out, data_root=data_root, epochs=epochs, device=device, model=model, data=data)


# ---------------------------------------------------------------------------------------- study
@app.command("study")
def study_cmd(
    name: str = typer.Argument(..., help=" | ".join(STUDIES)),
    overrides: list[str] | None = typer.Argument(None, help="training settings for every run as "
                                                    "key=value, e.g. epochs=1"),
    rows: str | None = typer.Option(None, "--rows", help="comma-separated row labels to run \\[default: all rows]"),
    data: str | None = typer.Option(None, "--data", "-d",
                                       help="builtin:amounts | coco:ANN.json,IMAGES_DIR (detection); "
                                       "builtin:sketches | quickdraw:DIR | tuberlin:DIR (classification) "
                                       "\\[default: the study's built-in data]"),
    seeds: int = typer.Option(3, "--seeds", help="seeds per row (mean ± std)"),
    preset: str = typer.Option("cpu", "--preset", help="smoke (tests: seconds) | cpu (converged on the "
                               "built-in data on a 2-core CPU) | paper (the thesis's recipe: GPUs, real data); "
                               "quick = cpu"),
    out: Path | None = typer.Option(None, "--out", "-o", help="study folder \\[default: runs/study-NAME-PRESET]"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="runs trained at once, each on threads/jobs CPU threads "
                             "(costs are measured afterwards, one model at a time)"),
    report_only: bool = typer.Option(False, "--report-only", help="write the report from the runs "
                                     "finished so far, train nothing"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the runs without training"),
):
    """Reproduce an experiment of the theses: train every row over seeds, print and save its tables.

    Writes report.md, report.html, results.csv and results.json; a killed study resumes where it
    stopped.
    """
    result = run_study(name, preset=preset, seeds=seeds, data=data, out=out, dry_run=dry_run,
                       device=device, overrides=overrides or [], jobs=jobs, report_only=report_only,
                       rows=[r.strip() for r in rows.split(",")] if rows else None)
    if dry_run:
        for r in result["runs"]:
            c = r["cfg"]
            console.print(f"{r['row']:<22} seed {r['seed']}  {c.model:<24} {c.data}  {c.epochs} ep "
                          f"@ {c.image_size}px → {c.out}")
        console.print(f"{len(result['runs'])} runs")
        return
    console.print(result["report"], markup=False, highlight=False)
    console.print(f"report: {result['out']}/report.md, report.html, results.csv, results.json")


# ---------------------------------------------------------------------------------------- bench
@app.command("bench")
def bench_cmd(
    models: list[str] = typer.Argument(..., help="registered names or torchvision:NAME (e.g. "
                                       "torchvision:fcos_resnet50_fpn); the first is the reference"),
    size: int | None = typer.Option(None, "--size", "-s", min=32, max=4096,
                                       help="square input side \\[default: 512 detection, 224 classification]"),
    batch: int = typer.Option(1, "--batch", "-b", min=1, max=4096, help="images per call"),
    runs: int = typer.Option(7, "--runs", min=1, help="timed calls per model (median reported)"),
    warmup: int = typer.Option(2, "--warmup", min=0, help="untimed calls per model first"),
    num_classes: int | None = typer.Option(None, "--num-classes", min=1, max=100_000,
                                              help="classes \\[default: 80 (ours) / 91 (torchvision) detection, "
                                              "1000 classification]"),
    in_chans: int = typer.Option(3, "--in-chans", min=1, max=64,
                                 help="input channels of hybridvision classifiers (1: sketches)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    threads: int | None = typer.Option(None, "--threads", min=1, max=1024,
                                       help="torch CPU threads \\[default: torch's]"),
    no_memory: bool = typer.Option(False, "--no-memory", help="skip the peak-memory pass"),
    out: Path | None = typer.Option(None, "--out", "-o", help="also write the rows as JSON here \\[default: none]"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="replace an existing --out file"),
):
    """Compare models' parameters, FLOPs, latency and peak memory, side by side in one run.

    Random weights, eval mode, one fixed random batch; calls interleaved across models.

    Detectors are timed with their post-processing (decode, NMS); ratios are to the first model.
    """
    if out is not None:  # before any model is built or timed
        check_output_path(out, kind="file", exist_ok=exist_ok)
    if threads:
        torch.set_num_threads(threads)
    side = bench_side(models, size)
    dev = resolve_device(device)
    targets = [build_bench_target(n, size=side, batch=batch, num_classes=num_classes,
                                  in_chans=in_chans, device=dev) for n in models]
    rows = compare_models(targets, runs=runs, warmup=warmup, device=dev, memory=not no_memory)
    table = Table(Column("model", no_wrap=True), "params (M)", "GFLOPs", "median ms", "× first", "peak MiB",
                  title=f"{targets[0].task}, batch {batch} × {side}², {dev}, "
                        f"{torch.get_num_threads()} threads, median of {runs}")
    for r in rows:  # a peer at its own input size is marked "*" and said below the table
        table.add_row(r["name"] + (" *" if r.get("note") else ""), f"{r['params'] / 1e6:.2f}",
                      f"{r['gflops']:.2f}", f"{r['median_ms']:.1f}",
                      f"{r['ratio']:.2f}", "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}")
    console.print(table)
    for r in rows:
        if r.get("note"):
            console.print(f"* {r['note']}", markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        atomic_write_text(out, bench_json(rows, size=side, batch=batch, runs=runs, warmup=warmup, device=dev))
        console.print(f"wrote {out}")


# --------------------------------------------------------------------------------------- export
@app.command("export")
def export_cmd(
    weights: Path | None = typer.Option(None, "--weights", "-w",
                                        help="a trained .safetensors checkpoint \\[default: none]"),
    model: str | None = typer.Option(None, "--model", "-m",
                                        help="a registered model name: random weights, or the model of a bare "
                                        "--weights file "
                                        "\\[default: the checkpoint's]"),
    num_classes: int | None = typer.Option(None, "--num-classes", min=1, max=100_000,
                                           help="with --model and no sidecar "
                                           "\\[default: the checkpoint's, else the model's]"),
    out: Path | None = typer.Option(None, "--out", "-o",
                                       help="the .onnx file "
                                       "\\[default: beside the weights, or runs/export/MODEL.onnx]"),
    size: int | None = typer.Option(None, "--size", "-s", min=32, max=4096,
                                       help="input side \\[default: the trained size, else 512 detection / 224]"),
    in_chans: int = typer.Option(3, "--in-chans", min=1, max=64,
                                 help="input channels of a classifier built with --model"),
    opset: int = typer.Option(18, "--opset", help="ONNX opset"),
    check: bool = typer.Option(True, "--check/--no-check", help="compare onnxruntime with PyTorch"),
    exist_ok: bool = typer.Option(False, "--exist-ok",
                                  help="replace an existing output file (the .onnx and its .json), "
                                  "at --out or the default path"),
):
    """Export a model to ONNX (raw outputs; dynamic batch) and check it with onnxruntime.

    Writes OUT.onnx and OUT.onnx.json (input shape, output names, classes, strides). An existing
    OUT (an earlier export included, at the default path too) is replaced only with --exist-ok.
    """
    if weights is None and model is None:
        raise UserInputError("pass --weights CHECKPOINT.safetensors, or --model NAME for random weights")
    check_opset(opset)  # before anything is built or printed
    target = export_target(out, weights=weights, model=model, exist_ok=exist_ok)  # before any work
    kwargs = {"num_classes": num_classes} if num_classes else {}
    meta: dict = {}
    if weights is not None:
        net, info = load_trained(weights, "cpu", model=model, **kwargs)
        meta = {"weights": str(weights), "class_names": info.get("class_names"),
                "label_to_cat_id": info.get("label_to_cat_id")}
    else:
        net, info = random_model(model, in_chans, **kwargs), {}
    name, task = check_exportable(net)
    chans = create_task(task).input_channels(net)
    side = size if size is not None else default_size(task, info)
    check_size(side, net)
    console.print(f"exporting {name} ({task}) at {side}×{side} → {target}")
    result = export_onnx(net, target, size=side, in_chans=chans, opset=opset, check=check, meta=meta,
                         exist_ok=exist_ok)
    if check:
        c = result["check"]
        console.print(f"onnxruntime agrees with PyTorch: max |diff| {c['max_abs_diff']:.2e}, "
                      f"{c['max_rel_diff']:.1e} of the output's scale ({c['worst_output']}, batch {c['batch']})")
    console.print(f"wrote {target} and {target}.json ({len(result['outputs'])} outputs)")


# -------------------------------------------------------------------------------------- explain
@app.command("explain")
def explain_cmd(
    weights: Path = typer.Option(..., "--weights", "-w", help="a .safetensors checkpoint of an NL model"),
    image: Path = typer.Option(..., "--image", "-i", help="the image"),
    point: str = typer.Option(..., "--point", "-p", help="query pixel X,Y in image pixels"),
    out: Path | None = typer.Option(None, "--out", "-o", help="PNG to write \\[default: runs/explain/IMAGE_attn.png]"),
    block: str | None = typer.Option(None, "--block", help="module name of the block \\[default: the first]"),
    call: int = typer.Option(0, "--call", help="which call of a shared block (pyramid level index)"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="replace an existing output file"),
):
    """Save where a non-local block attends for one query pixel, overlaid on the image."""
    path = explain(weights, image, parse_point(point), out=out, block=block, call=call, device=device,
                   exist_ok=exist_ok)
    console.print(f"wrote {path}")


# ----------------------------------------------------------------------------------- entry point
def _one_line(e: UserInputError) -> str:
    """The first problem of an error, on one line; a count points to `data check` for the rest
    (not from a converter: `data check` reads COCO files, not the file being converted)."""
    if e.findings:
        more = len(e.findings) - 1
        where = "" if "convert" in sys.argv[1:3] else "; `hybridvision data check` lists all"
        tail = f" (+{more} more problem{'s' if more > 1 else ''}{where})" if more else ""
        return e.findings[0] + tail
    return " ".join(str(e).split("\n")[0:1]) if "\n" in str(e) else str(e)


INTERRUPTED = "interrupted; a training run continues with `hybridvision train --out RUN --resume`"


def _interrupted() -> None:
    """Ctrl-C: exit 130; the resume hint only where there is a run to resume (train, demo, study)."""
    resumable = any(verb in sys.argv[1:3] for verb in ("train", "demo", "study"))
    err_console.print(INTERRUPTED if resumable else "interrupted", soft_wrap=True)
    sys.exit(130)


#: Width of ``--help`` when stdout is not a terminal (a pipe, a log, CI): wide enough that no
#: option, default or path is cut, whatever ``$COLUMNS`` says; a terminal gets its own width.
HELP_PIPE_WIDTH = 120


def main() -> None:
    interrupts.release()  # a Ctrl-C during the imports ends here: exit 130, no traceback
    if not sys.stdout.isatty():
        typer_help.MAX_WIDTH = HELP_PIPE_WIDTH
    debug = "--debug" in sys.argv or os.environ.get("HYBRIDVISION_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        # Without standalone mode, click returns (not raises) the code of a typer.Exit; typer
        # turns Ctrl-C (KeyboardInterrupt) into Exit(130), so 130 comes back as a return value.
        code = app(standalone_mode=False)
        if code == 130:
            _interrupted()
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserInputError as e:
        if debug:
            raise
        err_console.print(f"error: {_one_line(e)}", soft_wrap=True, highlight=False, markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code)
    except typer.Abort as e:  # click's Abort: from Ctrl-C (130, with the resume hint) or end of input
        if isinstance(e.__cause__ or e.__context__, KeyboardInterrupt):
            _interrupted()
        err_console.print("aborted", highlight=False, markup=False)
        sys.exit(1)
    except typer.TyperException as e:  # usage errors: missing option, bad value, unknown option
        if type(e).__name__ == "NoArgsIsHelpError":  # a group called bare: its help
            e.show()
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = " ".join(e.format_message().split())
        err_console.print(f"error: {message}{hint}", soft_wrap=True, highlight=False, markup=False)
        sys.exit(getattr(e, "exit_code", 2) or 2)


if __name__ == "__main__":
    main()
