"""The work the ``hybridvision`` verbs hand down, called as library functions (issue 25: ``cli.py``
as thin verbs). Each verb's printed lines and exit codes are covered by the CLI tests; these
check that the library pieces stand on their own, without the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hybridvision.api import check_predict_options
from hybridvision.bench import bench_json, bench_side
from hybridvision.config import TrainConfig, resume_config, save_config, train_config
from hybridvision.data.importers import parse_class_names
from hybridvision.data.validate import check_annotation_file
from hybridvision.errors import UserInputError
from hybridvision.explain import parse_point
from hybridvision.export import check_exportable, export_target, random_model
from hybridvision.factory import create_model, describe_model, find_models


def test_models_table_rows_come_from_the_factory():
    row = describe_model("fcos_demo")
    assert (row.name, row.task) == ("fcos_demo", "detection")
    assert row.params == sum(p.numel() for p in create_model("fcos_demo").parameters())
    assert row.input.startswith("3 ch, sides ×") and row.description.endswith(".")
    assert "``" not in row.description and ":class:" not in row.description
    assert describe_model("resnet26").input == "3 ch"  # a classifier: no multiple
    assert "fcos_demo" in find_models("fcos*", task="detection")
    with pytest.raises(UserInputError, match="--task nope: use one of"):
        find_models(task="nope")
    with pytest.raises(UserInputError, match="no model matches 'zzz' among the sbir models"):
        find_models("zzz", task="sbir")


def test_train_config_precedence_and_resume(tmp_path: Path):
    run = tmp_path / "run"
    with pytest.raises(UserInputError, match="no config.yaml and no checkpoints/last.json"):
        resume_config(run)
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.json").write_text(json.dumps({"epoch": 1}))
    with pytest.raises(UserInputError, match='holds no "config"'):
        resume_config(run)
    (run / "checkpoints" / "last.json").write_text(json.dumps({"config": {"epochs": 7, "out": str(run)}}))
    assert resume_config(run).epochs == 7
    save_config(TrainConfig(epochs=5, lr=0.5, out=str(run)), run / "config.yaml")  # config.yaml first
    cfg = train_config(resume=True, options={"out": str(run), "lr": None, "seed": 3},
                       backbone_weights="torchvision:resnet50", overrides=["lr=0.25"])
    assert (cfg.epochs, cfg.seed, cfg.lr) == (5, 3, 0.25)  # run's config, then options, then overrides
    assert cfg.model_kwargs["backbone_weights"] == "torchvision:resnet50"
    assert train_config().to_dict() == TrainConfig().to_dict()


def test_export_pieces(tmp_path: Path):
    assert export_target(None, weights=None, model="fcos_demo") == Path("runs/export/fcos_demo.onnx")
    weights = tmp_path / "best.safetensors"
    assert export_target(None, weights=weights, model=None) == tmp_path / "best.onnx"  # unchecked: missing
    out = tmp_path / "m.onnx"
    out.write_text("mine")
    with pytest.raises(UserInputError):
        export_target(out, weights=None, model="fcos_demo")
    assert export_target(out, weights=None, model="fcos_demo", exist_ok=True) == out
    net = random_model("resnet26", 1, num_classes=4)
    assert net.in_chans == 1 and check_exportable(net) == ("resnet26", "classification")
    with pytest.raises(UserInputError, match="is a sbir model"):
        check_exportable(create_model("sbir_resnet26"))


def test_bench_side_and_json():
    assert bench_side(["fcos_demo"]) == 512 and bench_side(["resnet26"], 96) == 96
    with pytest.raises(UserInputError, match="bench compares models of one task; got classification, detection"):
        bench_side(["fcos_demo", "resnet26"])
    text = json.loads(bench_json([{"name": "a"}], size=64, batch=2, runs=3, warmup=1, device=torch.device("cpu")))
    assert text["rows"] == [{"name": "a"}] and (text["size"], text["device"]) == (64, "cpu")


def test_option_parsers(tmp_path: Path):
    assert parse_point("64,40.5") == (64.0, 40.5)
    with pytest.raises(UserInputError, match="--point 3: expected X,Y"):
        parse_point("3")
    assert parse_class_names(" a, b") == ["a", "b"] and parse_class_names(None) is None
    with pytest.raises(UserInputError, match="--classes a,a: give distinct"):
        parse_class_names("a,a")
    with pytest.raises(UserInputError, match="is a folder, not a COCO annotation JSON file"):
        check_annotation_file(tmp_path)
    check_predict_options(0.3, iou=0.6, max_det=300, image_size=640, tile_overlap=0.2)
    for kwargs, option in [({"score_threshold": 1.5}, "--conf"), ({"iou": 0.0}, "--iou"),
                           ({"max_det": 0}, "--max-det"), ({"image_size": 16}, "--image-size"),
                           ({"tile_overlap": 0.95}, "--tile-overlap")]:
        with pytest.raises(UserInputError, match=option):
            check_predict_options(**{"score_threshold": 0.3, **kwargs})


def test_dataset_report_writes_its_files_and_keeps_the_users(tmp_path: Path):
    from hybridvision.api import dataset_report
    from hybridvision.evaluation.analysis import STATS_FILES

    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
                               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 12],
                                                "area": 120, "iscrowd": 0}],
                               "categories": [{"id": 1, "name": "digit"}]}))
    stats, folder = dataset_report(ann, tmp_path / "stats")
    assert folder == tmp_path / "stats" and {p.name for p in folder.iterdir()} >= set(STATS_FILES)
    assert "digit" in stats.summary()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(UserInputError):
        dataset_report(ann, mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
