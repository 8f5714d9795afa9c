"""Bad inputs found by trying the CLI as a new user would (after the first round of fixes): each
is one `error:` line with exit 2 and loses nothing. Every case here failed before its fix."""

from __future__ import annotations

import json

import pytest


def _one_line(code, err, needle):
    assert code == 2 and err.startswith("error:") and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_demo_never_writes_into_a_users_folder_or_over_another_run(cli, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    code, _, err = cli("demo", "--out", user, "--data-root", tmp_path / "data", "--epochs", "1")
    _one_line(code, err, "holds other files (notes.txt)")
    # #351: the fix offered is one demo has (before: "--exist-ok", which demo does not take)
    assert "pass another --out, or delete or move" in err and "--exist-ok" not in err
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]  # no marker, no run written
    code, _, err = cli("demo", "--out", tmp_path / "x", "--data-root", tmp_path / "x", "--epochs", "1")
    _one_line(code, err, "overlap")
    # another run (not the demo's settings) with checkpoints is refused, not overwritten
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: fcos_small\nepochs: 3\n")
    (run / "checkpoints" / "last.json").write_text("{}")
    code, _, err = cli("demo", "--out", run, "--data-root", tmp_path / "data", "--epochs", "1")
    _one_line(code, err, "already has checkpoints")
    # #354: before, "pass --resume to continue it, --exist-ok to overwrite": demo has neither
    assert "pass another --out, or delete or move" in err and "--exist-ok" not in err and "--resume" not in err
    assert (run / "checkpoints" / "last.json").read_text() == "{}"
    assert not (tmp_path / "data").exists()


def test_demo_model_must_be_a_detector(cli, tmp_path):
    code, _, err = cli("demo", "--model", "resnet26", "--out", tmp_path / "d", "--data-root", tmp_path / "data")
    _one_line(code, err, "the demo trains a detector")
    code, _, err = cli("demo", "--model", "centernet_smal", "--out", tmp_path / "d", "--data-root", tmp_path / "data")
    _one_line(code, err, "Did you mean: centernet_small")
    assert not (tmp_path / "d").exists() and not (tmp_path / "data").exists()


def test_demo_still_replaces_an_earlier_demo_run(tmp_path):
    from hybridvision.config import save_config
    from hybridvision.demo import DEMO_CONFIG, _check_demo_out

    assert _check_demo_out(tmp_path / "new") is False and _check_demo_out(tmp_path) is False  # new, empty
    run = tmp_path / "demo"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.json").write_text("{}")
    save_config(DEMO_CONFIG.updated({"epochs": 1, "out": str(run)}), run / "config.yaml")
    assert _check_demo_out(run) is True  # train is told it may overwrite this one


def test_study_refuses_a_users_folder_and_settings_it_owns(cli, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    code, _, err = cli("study", "fcos-nonlocal", "--dry-run", "--out", user)
    _one_line(code, err, "a non-empty folder that hybridvision did not create")
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    for item, needle in (("out=x", "set it with --out"), ("seed=5", "set it with --seeds"),
                         ("model=fcos_demo", "a study sets model")):
        code, _, err = cli("study", "fcos-nonlocal", item, "--dry-run", "--out", tmp_path / "s")
        _one_line(code, err, needle)
    code, _, err = cli("study", "fcos-nonlocal", "--dry-run", "--device", "mps", "--out", tmp_path / "s")
    _one_line(code, err, "--device mps")


def test_train_refuses_weights_it_would_overwrite_and_impossible_names(cli, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    weights = run / "checkpoints" / "last.safetensors"
    weights.write_bytes(b"x")
    code, _, err = cli("train", "--out", run, "--exist-ok", "--weights", weights)
    _one_line(code, err, "lies inside --out")
    assert weights.read_bytes() == b"x"
    code, _, err = cli("train", "--out", tmp_path / ("a" * 300))
    _one_line(code, err, "more than a file system allows")
    code, _, err = cli("train", "--device", "mps", "--out", tmp_path / "r2")
    _one_line(code, err, "hybridvision runs on cpu or cuda")


@pytest.mark.parametrize("args, needle", [
    (["bench", "fcos_demo", "--num-classes", "0"], "--num-classes"),
    (["bench", "fcos_demo", "--threads", "-1"], "--threads"),
    (["bench", "resnet26", "--in-chans", "0"], "--in-chans"),
    (["bench", "fcos_demo", "--size", "100000"], "--size"),
    (["export", "--model", "fcos_demo", "--size", "0"], "--size"),
    (["export", "--model", "fcos_demo", "--num-classes", "-1"], "--num-classes"),
    (["data", "make", "amounts", "--seed", "-1"], "--seed"),
    (["data", "make", "sketches", "--seed", "-1"], "--seed"),
    (["data", "make", "amounts", "--image-size", "100000"], "--image-size"),
])
def test_out_of_range_options(cli, tmp_path, args, needle):
    code, _, err = cli(*args, "--out", tmp_path / "o") if args[0] != "bench" else cli(*args)
    _one_line(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_missing_weights_and_files_say_so(cli, tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    for verb in (["predict", tmp_path / "a.png", "--out", tmp_path / "p"], ["eval"], ["export"]):
        code, _, err = cli(*verb, "--weights", tmp_path / "nope.safetensors")
        _one_line(code, err, "weights file not found")
    (tmp_path / "best.json").write_text("{}")
    code, _, err = cli("predict", tmp_path / "a.png", "--weights", tmp_path / "best.json", "--out", tmp_path / "p")
    _one_line(code, err, "pass the best.safetensors beside it")  # before: "its sidecar best.json names no model"
    code, _, err = cli("data", "check", tmp_path / "nope.json", "--images", tmp_path)
    _one_line(code, err, "not found")
    code, _, err = cli("explain", "--weights", tmp_path / "w.safetensors", "--image", tmp_path / "i.png",
                       "--point", "1,1", "--out", tmp_path / "x.jpg")
    _one_line(code, err, "explain writes a PNG")


def test_a_sidecar_whose_label_map_does_not_fit_its_classes(cli, tmp_path):
    from hybridvision.engine.checkpoint import save_checkpoint
    from hybridvision.factory import create_model

    model = create_model("fcos_demo", num_classes=3)
    save_checkpoint(tmp_path / "ck", "best", model, extra={
        "model": "fcos_demo", "num_classes": 3, "class_names": ["a", "b", "c"], "label_to_cat_id": [1, 2]})
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "img" / "a.png")
    code, _, err = cli("predict", tmp_path / "img", "--weights", tmp_path / "ck" / "best.safetensors",
                       "--out", tmp_path / "pred")
    _one_line(code, err, "'label_to_cat_id' maps 2 labels but 'num_classes' is 3")


def test_user_text_is_printed_as_typed(cli, tmp_path):
    code, _, err = cli("train", "--model", ":x:", "--out", tmp_path / "r")
    _one_line(code, err, "':x:'")
    assert json.dumps("❌")[1:-1] not in err and "❌" not in err


def test_ctrl_c_during_a_checkpoint_lands_after_it():
    """Before: Ctrl-C between the weights and the state files tore the checkpoint (1 in 17 tries)."""
    import os
    import signal
    import time

    from hybridvision.engine.trainer import interrupts_deferred

    done = []
    # Python's own handler, as in a terminal (a background job may start with SIGINT ignored)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the signal has arrived by now
                done.append("the rest of the checkpoint")
        assert done == ["the rest of the checkpoint"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ignored stays ignored: nothing is raised
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, outer)


def test_eval_mixing_model_and_file_inputs_and_coco_with_data_kwargs(cli, tmp_path, tiny_amounts):
    gt = tiny_amounts / "amounts" / "val" / "annotations.json"
    code, _, err = cli("eval", "--gt", gt, "--dt", gt, "--run", tmp_path)
    _one_line(code, err, "pass one or the other")  # before: --run silently ignored
    spec = f"coco:{gt},{tiny_amounts / 'amounts' / 'val' / 'images'}"
    code, _, err = cli("train", "--data", spec, "data_kwargs.n_train=5", "--out", tmp_path / "r")
    _one_line(code, err, "data_kwargs n_train")  # before: silently ignored


def test_a_validation_split_without_images_is_refused(cli, tmp_path, tiny_amounts):
    val = tmp_path / "val.json"
    coco = json.loads((tiny_amounts / "amounts" / "val" / "annotations.json").read_text())
    val.write_text(json.dumps({**coco, "images": [], "annotations": []}))
    imgs = tiny_amounts / "amounts" / "train"
    spec = f"coco:{imgs / 'annotations.json'},{imgs / 'images'},{val},{imgs / 'images'}"
    code, _, err = cli("train", "--data", spec, "image_size=64", "epochs=1", "--out", tmp_path / "r")
    _one_line(code, err, "val.json: file: no images")  # before: trained, reported AP -1


def test_models_names_its_task_filter_and_a_sidecar_image_size_is_checked(cli, tmp_path):
    code, _, err = cli("models", "fcos*", "--task", "classification")
    _one_line(code, err, "among the classification models")  # before: the filter was not named
    from hybridvision.engine.checkpoint import save_checkpoint
    from hybridvision.factory import create_model

    save_checkpoint(tmp_path / "ck", "best", create_model("fcos_demo", num_classes=3),
                    extra={"model": "fcos_demo", "num_classes": 3, "image_size": 1})
    code, _, err = cli("export", "--weights", tmp_path / "ck" / "best.safetensors", "--out", tmp_path / "m.onnx")
    _one_line(code, err, "key 'image_size' is 1")  # before: predict ran at 1 px, 0 detections


@pytest.mark.parametrize("key,value,needle", [
    ("area", -5, "annotation id=1: area -5 is not a non-negative number; fix: "),
    ("iscrowd", "no", "annotation id=1: iscrowd 'no' is not 0 or 1; fix: write iscrowd as 0"),
])
def test_every_evaluation_refuses_a_bad_area_or_iscrowd_alike(cli, tmp_path, tiny_amounts, key, value, needle):
    """#329/#330. Before: `eval --gt` used area -5 and read iscrowd "no" as a crowd (bool("no")),
    exit 0 with changed numbers. Now eval --gt, eval --weights on coco data and training's
    validation all stop with the line `data check` prints."""
    from hybridvision.engine.checkpoint import save_checkpoint
    from hybridvision.factory import create_model

    split = tiny_amounts / "amounts" / "val"
    coco = json.loads((split / "annotations.json").read_text())
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in coco["annotations"]]
    coco["annotations"][0][key] = value
    assert coco["annotations"][0]["id"] == 1
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(coco))
    dt = tmp_path / "dt.json"
    dt.write_text(json.dumps(perfect))
    code, _, err = cli("eval", "--gt", gt, "--dt", dt, "--out", tmp_path / "m.json")
    _one_line(code, err, f"{gt}: {needle}")
    assert not (tmp_path / "m.json").exists()
    torch_model = create_model("fcos_demo", num_classes=10)
    save_checkpoint(tmp_path / "ck", "best", torch_model, extra={
        "model": "fcos_demo", "model_kwargs": {}, "num_classes": 10, "class_names": [str(d) for d in range(10)],
        "label_to_cat_id": list(range(1, 11)), "image_size": 64, "task": "detection",
        "config": {"model": "fcos_demo", "data": "builtin:amounts", "image_size": 64}})
    code, _, err = cli("eval", "--weights", tmp_path / "ck" / "best.safetensors", "--data",
                       f"coco:{gt},{split / 'images'}", "--out", tmp_path / "ev", "--device", "cpu")
    _one_line(code, err, f"{gt}: {needle}")
    train = tiny_amounts / "amounts" / "train"
    spec = f"coco:{train / 'annotations.json'},{train / 'images'},{gt},{split / 'images'}"
    code, _, err = cli("train", "--data", spec, "image_size=64", "epochs=1", "max_steps=2", "batch_size=4",
                       "--out", tmp_path / "r")
    _one_line(code, err, f"{gt}: {needle}")
    assert not (tmp_path / "r" / "checkpoints").exists()
