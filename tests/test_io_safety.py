"""Files in and out: the one atomic writer (umask, full disk, permissions), the one JSON reader
(BOM, line/column, deep nesting), the one image reader (decompression bombs), output-path checks,
dataset generators that only replace their own folders, and checkpoint state that is checked."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from image_files import bomb_png
from hybridvision.errors import DataError, UserInputError
from hybridvision.fileio import (atomic_save_tensors, atomic_write_json, atomic_write_text,
                                 check_output_path, read_json)

BOM = b"\xef\xbb\xbf"


# ----------------------------------------------------------------------------- helpers
def _png(path: Path, w: int = 50, h: int = 40, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


def _coco(tmp_path: Path, n: int = 3) -> tuple[dict, Path]:
    img_dir = tmp_path / "images"
    images, anns = [], []
    for i in range(1, n + 1):
        _png(img_dir / f"im{i}.png", value=30 * i)
        images.append({"id": i, "file_name": f"im{i}.png", "width": 50, "height": 40})
        anns.append({"id": 10 + i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 10],
                     "area": 200, "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}, img_dir


def _one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.fixture
def umask():
    """Set the process umask for a test and restore it after."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


# ------------------------------------------------------------------------ atomic writer
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_get_the_umask_mode(tmp_path, umask, mask, mode):
    umask(mask)
    a = atomic_write_text(tmp_path / "a.txt", "x")
    b = atomic_write_json(tmp_path / "b.json", {"k": 1})
    c = atomic_save_tensors(tmp_path / "c.safetensors", {"w": torch.ones(2)})
    for p in (a, b, c):
        assert p.stat().st_mode & 0o777 == mode, p


def test_converter_and_checkpoint_use_the_one_writer(tmp_path, umask):
    """write_json_atomic and checkpoints had their own mkstemp writers (files left 0600)."""
    from hybridvision.data.converters import write_json_atomic
    from hybridvision.engine.checkpoint import save_checkpoint

    umask(0o022)
    write_json_atomic({"a": 1}, tmp_path / "c.json")
    save_checkpoint(tmp_path, "last", torch.nn.Linear(2, 2), extra={"step": 1})
    for name in ("c.json", "last.safetensors", "last.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.parametrize("where", ["fsync", "write"])
def test_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, where):
    target = tmp_path / "m.json"
    target.write_text("old")

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "fsync":
        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(UserInputError, match=r"m\.json: no space left") as e:
            atomic_write_text(target, "new")
    else:
        import builtins

        real_open = builtins.open

        class Full:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *a):
                self.f.close()

            def write(self, _data):
                full()

        monkeypatch.setattr(builtins, "open", lambda p, m="r", *a, **k: Full(real_open(p, m, *a, **k))
                            if "w" in m and str(p).endswith(".tmp") else real_open(p, m, *a, **k))
        with pytest.raises(UserInputError, match=r"m\.json: no space left") as e:
            atomic_write_text(target, "new")
    assert "\n" not in str(e.value)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # no temp file left


@pytest.mark.parametrize("err", [PermissionError(errno.EACCES, "Permission denied"),
                                 OSError(errno.EROFS, "Read-only file system")])
def test_permission_and_read_only_errors_are_one_line(tmp_path, monkeypatch, err):
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"old")

    def refuse(*_a, **_k):
        raise err

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(UserInputError, match=r"w\.safetensors: cannot write here") as e:
        atomic_save_tensors(target, {"w": torch.zeros(3)})
    assert "\n" not in str(e.value) and target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


# --------------------------------------------------------------------------- JSON reader
def test_read_json_accepts_a_bom_and_names_line_and_column(tmp_path):
    p = tmp_path / "a.json"
    p.write_bytes(BOM + b'{"a": [1, 2]}')
    assert read_json(p) == {"a": [1, 2]}
    p.write_text('{\n  "a": [1,\n  2,,]\n}')
    with pytest.raises(UserInputError, match=r"a\.json: .*line 3 column 5"):
        read_json(p, what="COCO annotation")


def test_deeply_nested_json_is_one_line_everywhere(cli, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(UserInputError, match=r"deep\.json: .*nested too deeply"):
        read_json(deep)
    code, _, err = cli("data", "check", deep, "--images", tmp_path)
    assert code != 0 and "deep.json" in err and "Traceback" not in err
    coco, _ = _coco(tmp_path)
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(coco))
    code, _, err = cli("eval", "--gt", gt, "--dt", deep)
    assert code == 2 and "deep.json" in err and _one_line(err)


def test_coco_with_a_bom_is_accepted_by_check_dataset_and_eval(cli, tmp_path):
    from hybridvision.data.coco import CocoDetection

    coco, img_dir = _coco(tmp_path)
    ann = tmp_path / "ann.json"
    ann.write_bytes(BOM + json.dumps(coco).encode())
    code, out, err = cli("data", "check", ann, "--images", img_dir)
    assert code == 0 and "OK" in out, err
    ds = CocoDetection(ann, img_dir)  # what training loads
    assert len(ds) == 3 and ds.class_names == ["thing"]
    dt = tmp_path / "dt.json"
    dt.write_bytes(BOM + json.dumps([{"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 10],
                                      "score": 0.9}]).encode())
    code, _, err = cli("eval", "--gt", ann, "--dt", dt, "--out", tmp_path / "m.json")
    assert code == 0, err
    assert json.loads((tmp_path / "m.json").read_text())["AP50"] > 0


# -------------------------------------------------------------------------- image reader
def test_one_image_extension_list():
    from hybridvision import api, imageio
    from hybridvision.data import converters, sketch_readers

    assert api.IMAGE_EXTENSIONS is imageio.IMAGE_EXTENSIONS
    assert converters.IMAGE_EXTENSIONS is imageio.IMAGE_EXTENSIONS
    assert sketch_readers.IMAGE_EXTENSIONS is imageio.IMAGE_EXTENSIONS


def test_load_image_reads_common_formats(tmp_path):
    from hybridvision.imageio import load_image, load_image_uint8

    rgb = np.random.default_rng(0).integers(0, 255, (12, 20, 3), dtype=np.uint8)
    for name in ("a.png", "a.bmp", "a.tif", "a.webp"):
        Image.fromarray(rgb).save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
        img = load_image_uint8(tmp_path / name)
        assert img.shape == (3, 12, 20) and img.dtype == torch.uint8
        assert torch.equal(img, torch.from_numpy(rgb).permute(2, 0, 1)), name
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.jpg")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    for name in ("grey.jpg", "deep.png"):
        img = load_image(tmp_path / name)
        assert img.shape == (3, 12, 20) and img.dtype == torch.float32 and 0 <= img.min() <= img.max() <= 1


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    from hybridvision.data.coco import load_image as coco_load
    from hybridvision.data.sketch_readers import load_sketch_image
    from hybridvision.data.validate import check_coco
    from hybridvision.imageio import load_image, read_image_size

    bomb = bomb_png(tmp_path / "bomb.png")
    for fn in (load_image, read_image_size, coco_load, load_sketch_image):
        with pytest.raises(DataError, match=r"bomb\.png: .*pixel") as e:
            fn(bomb)
        assert "\n" not in str(e.value)
    # just over the limit (PIL itself only warns up to twice the limit)
    big = bomb_png(tmp_path / "big.png", 10_000, 9_000)
    with pytest.raises(DataError, match=r"big\.png: .*pixel"):
        load_image(big)
    coco = {"images": [{"id": 1, "file_name": "bomb.png", "width": 30000, "height": 30000}],
            "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    findings = check_coco(tmp_path / "ann.json", tmp_path)
    assert len(findings) == 1 and "pixel" in findings[0].problem


# -------------------------------------------------------------------------- output paths
def test_check_output_path_refusals(tmp_path, monkeypatch):
    src = tmp_path / "src"
    img = _png(src / "a.png")
    gt = tmp_path / "gt.json"
    gt.write_text("{}")
    with pytest.raises(UserInputError, match="is also an input"):
        check_output_path(gt, inputs=[gt, img])
    with pytest.raises(UserInputError, match="is also an input"):
        check_output_path(src, inputs=[src], kind="dir")
    with pytest.raises(UserInputError, match="contains the input"):
        check_output_path(tmp_path, inputs=[img], kind="dir")
    with pytest.raises(UserInputError, match="inside the input folder"):
        check_output_path(src / "out", inputs=[src], kind="dir")
    with pytest.raises(UserInputError, match="is a folder"):
        check_output_path(src, kind="file")
    with pytest.raises(UserInputError, match="is a file, not a folder"):
        check_output_path(gt, kind="dir")
    with pytest.raises(UserInputError, match="is a file, so no folder"):
        check_output_path(gt / "sub" / "m.json")
    mine = tmp_path / "mine"
    (mine / "notes.txt").parent.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(UserInputError, match="did not create"):
        check_output_path(mine, kind="dir")
    assert check_output_path(mine, kind="dir", exist_ok=True) == mine
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / ".hybridvision").write_text("")
    (tmp_path / "ours" / "x.png").write_text("")
    check_output_path(tmp_path / "ours", kind="dir")  # a folder we made may be written again
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(UserInputError, match="cannot write in"):
        check_output_path(tmp_path / "new" / "m.json")


# ------------------------------------------------------------------- explicit output files
def test_an_existing_output_file_needs_exist_ok(tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text("keep")
    with pytest.raises(UserInputError, match=r"--out .*mine\.json: the file exists; pass --exist-ok"):
        check_output_path(mine, kind="file", exist_ok=False)
    assert check_output_path(mine, kind="file", exist_ok=True) == mine
    with pytest.raises(UserInputError, match="the file exists"):  # one rule: the default refuses too
        check_output_path(mine, kind="file")
    assert mine.read_text() == "keep"
    assert check_output_path(tmp_path / "new.json", kind="file", exist_ok=False) == tmp_path / "new.json"


def _gt_dt(tmp_path: Path) -> tuple[Path, Path]:
    coco, _ = _coco(tmp_path)
    gt, dt = tmp_path / "gt.json", tmp_path / "dt.json"
    gt.write_text(json.dumps(coco))
    dt.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 10], "score": 0.9}]))
    return gt, dt


def test_eval_out_file_that_exists_needs_exist_ok(cli, tmp_path):
    gt, dt = _gt_dt(tmp_path)
    out = tmp_path / "F.json"
    out.write_text("my notes")
    code, _, err = cli("eval", "--gt", gt, "--dt", dt, "--out", out)
    assert code == 2 and _one_line(err) and "F.json: the file exists" in err and "--exist-ok" in err, err
    assert out.read_text() == "my notes"
    code, _, err = cli("eval", "--gt", gt, "--dt", dt, "--out", out, "--exist-ok")
    assert code == 0, err
    assert "AP50" in json.loads(out.read_text())


def test_bench_out_file_that_exists_needs_exist_ok(cli, tmp_path):
    out = tmp_path / "F"
    out.write_text("my notes")
    args = ("bench", "fcos_demo", "--size", "64", "--runs", "1", "--warmup", "0", "--no-memory", "--out", out)
    code, stdout, err = cli(*args)
    assert code == 2 and _one_line(err) and "F: the file exists" in err and "--exist-ok" in err, err
    assert out.read_text() == "my notes" and "fcos_demo" not in stdout  # refused before any timing
    code, _, err = cli(*args, "--exist-ok")
    assert code == 0, err
    assert json.loads(out.read_text())["rows"][0]["name"] == "fcos_demo"


def test_export_out_file_that_exists_needs_exist_ok(cli, tmp_path, monkeypatch):
    from onnx import TensorProto, helper

    from hybridvision import export

    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)])
    onnx_bytes = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    monkeypatch.setattr(export, "_export_bytes", lambda *a, **k: onnx_bytes)  # the exporter takes 20 s here
    out = tmp_path / "F.onnx"
    args = ("export", "--model", "fcos_demo", "--size", "64", "--no-check", "--out", out)
    for existing in (out, Path(f"{out}.json")):  # the model file, or the metadata beside it
        existing.write_text("my notes")
        code, _, err = cli(*args)
        assert code == 2 and _one_line(err) and f"{existing.name}: the file exists" in err, err
        assert "--exist-ok" in err and existing.read_text() == "my notes"
        assert sorted(p.name for p in tmp_path.iterdir()) == [existing.name]
        existing.unlink()
    out.write_text("my notes")
    code, _, err = cli(*args, "--exist-ok")
    assert code == 0, err
    assert out.read_bytes() == onnx_bytes and json.loads(Path(f"{out}.json").read_text())["model"] == "fcos_demo"


# --------------------------------------------------------------------- dataset generators
def test_data_make_never_deletes_a_users_files(cli, tmp_path):
    from hybridvision.data.builtin import amounts as A

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for kind in ("amounts", "sketches"):
        code, _, err = cli("data", "make", kind, "--out", mine, *(["--train", 2, "--val", 1] if kind == "amounts"
                                                                     else ["--per-class", 1]))
        assert code == 2 and "mine" in err and _one_line(err), err
        assert (mine / "notes.txt").read_text() == "keep me"
    # our own dataset, with a user's file added: regenerating it would delete that file
    root = tmp_path / "amounts"
    A.make_amounts(root, n_train=2, n_val=1, image_size=32)
    (root / "train" / "images" / "my_photo.png").write_bytes(b"mine")
    code, _, err = cli("data", "make", "amounts", "--out", root, "--train", 3, "--val", 1)
    assert code == 2 and "my_photo.png" in err and _one_line(err)
    assert (root / "train" / "images" / "my_photo.png").read_bytes() == b"mine"
    (root / "train" / "images" / "my_photo.png").unlink()
    code, _, err = cli("data", "make", "amounts", "--out", root, "--train", 3, "--val", 1,
                       "--image-size", 32)
    assert code == 0, err  # our own, untouched: replaced
    assert len(list((root / "train" / "images").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amounts", "mine"]  # no temp folders left
    # a file where the folder should be
    code, _, err = cli("data", "make", "sketches", "--out", mine / "notes.txt", "--per-class", 1)
    assert code == 2 and "is a file" in err and (mine / "notes.txt").read_text() == "keep me"


def test_full_disk_while_generating_keeps_the_old_dataset(tmp_path, monkeypatch):
    from hybridvision.data.builtin import amounts as A

    root = tmp_path / "amounts"
    A.make_amounts(root, n_train=2, n_val=1, image_size=32)
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(A, "_write_split", full)
    with pytest.raises(UserInputError, match=r"amounts: no space left") as e:
        A.make_amounts(root, n_train=3, n_val=1, image_size=32)
    assert "\n" not in str(e.value)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amounts"]


def test_generated_data_gets_the_umask_mode(tmp_path, umask):
    from hybridvision.data.builtin.amounts import make_amounts
    from hybridvision.data.builtin.sketches import make_sketches

    umask(0o022)
    make_amounts(tmp_path / "am", n_train=1, n_val=1, image_size=32)
    make_sketches(tmp_path / "sk", per_class=1)
    for d in ("am", "sk"):
        assert (tmp_path / d).stat().st_mode & 0o777 == 0o755  # mkdtemp alone makes 0700


def test_builtin_sketches_in_data_root_spare_a_users_quickdraw_folder(tmp_path):
    from hybridvision.data.builtin.sketches import ensure_sketches
    from hybridvision.data.sketches import build_sketch_dataset

    user = tmp_path / "sketches"
    user.mkdir()
    (user / "cat.ndjson").write_text('{"word": "cat", "drawing": [[[0, 10], [0, 10]]]}\n')
    with pytest.raises(UserInputError, match=r"sketches: .*not a sketches dataset"):
        build_sketch_dataset("builtin:sketches", "train", root=tmp_path, per_class=2)
    assert (user / "cat.ndjson").is_file()
    # a generation of ours with a file added is not replaced either
    ours = tmp_path / "ours"
    ensure_sketches(ours, per_class=1)
    (ours / "extra.ndjson").write_text("{}\n")
    with pytest.raises(UserInputError, match="extra.ndjson"):
        ensure_sketches(ours, per_class=3)
    assert (ours / "extra.ndjson").is_file()


def test_convert_montos_never_writes_over_its_inputs(cli, tmp_path):
    img = _png(tmp_path / "img" / "m1.png")
    lab = tmp_path / "lab" / "m1.txt"
    lab.parent.mkdir()
    lab.write_text("4: 1, 2, 10, 10\n")
    before = (lab.read_bytes(), img.read_bytes())
    for out in (lab, img):
        code, _, err = cli("data", "convert", "montos", lab.parent, "--images", img.parent, "--out", out)
        assert code == 2 and "is also an input" in err and _one_line(err), err
    assert (lab.read_bytes(), img.read_bytes()) == before
    code, _, err = cli("data", "convert", "montos", lab.parent, "--images", img.parent, "--out", lab.parent)
    assert code == 2 and "is a folder" in err
    code, _, err = cli("data", "convert", "montos", lab.parent, "--images", img.parent,
                       "--out", tmp_path / "ann.json")
    assert code == 0, err


# ------------------------------------------------------------------------------ checkpoints
def _checkpoint(folder: Path, **extra) -> Path:
    from hybridvision.engine.checkpoint import save_checkpoint
    from hybridvision.factory import create_model

    model = create_model("fcos_demo", num_classes=3)
    info = {"epoch": 1, "step": 5, "model": "fcos_demo", "model_kwargs": {}, "num_classes": 3,
            "class_names": ["a", "b", "c"], "label_to_cat_id": [1, 2, 3], "image_size": 64,
            "task": "detection", **extra}
    return save_checkpoint(folder, "best", model, extra=info)


TAMPERED = {
    "model": 3,
    "model_kwargs": "x",
    "num_classes": -1,
    "class_names": [1, 2, 3],
    "label_to_cat_id": "1,2,3",
    "image_size": "big",
    "task": "segmentation",
    "step": "5",
    "best": "high",
    "best_epoch": -1,
    "train_seconds": "abc",
    "train_loop_seconds": -3.0,
}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.mark.parametrize("key", sorted(TAMPERED))
def test_tampered_sidecar_names_the_file_and_key(ckpt, tmp_path, key):
    from hybridvision.api import load_trained

    w = tmp_path / "best.safetensors"
    w.write_bytes(ckpt.read_bytes())
    info = json.loads(ckpt.with_suffix(".json").read_text())
    info[key] = TAMPERED[key]
    w.with_suffix(".json").write_text(json.dumps(info))
    with pytest.raises(UserInputError, match=rf"best\.json: key '{key}'") as e:
        load_trained(w)
    assert "\n" not in str(e.value)


def test_sidecar_problems_are_one_line(cli, ckpt, tmp_path):
    from hybridvision.api import load_trained
    from hybridvision.engine.checkpoint import load_checkpoint_state

    w = tmp_path / "best.safetensors"
    w.write_bytes(ckpt.read_bytes())
    side = w.with_suffix(".json")
    info = json.loads(ckpt.with_suffix(".json").read_text())
    side.write_text("[" * 100_000)
    with pytest.raises(UserInputError, match=r"best\.json: .*nested too deeply"):
        load_trained(w)
    side.write_bytes(BOM + json.dumps(info).encode())  # a BOM from an editor is fine
    load_trained(w)
    side.write_text(json.dumps({**info, "model_kwargs": {"no_such_option": 1}}))
    with pytest.raises(UserInputError, match=r"best\.json: key 'model_kwargs'"):
        load_trained(w)
    side.write_text(json.dumps({k: v for k, v in info.items() if k != "epoch"}))
    with pytest.raises(UserInputError, match=r"best\.json: .*lacks the key 'epoch'"):
        load_checkpoint_state(tmp_path, "best", torch.nn.Linear(2, 2))
    side.write_text(json.dumps({**info, "model": 3}))
    code, _, err = cli("predict", _png(tmp_path / "x.png"), "--weights", w, "--out", tmp_path / "p")
    assert code == 2 and "best.json: key 'model'" in err and _one_line(err)


def test_torn_checkpoint_is_refused(tmp_path):
    """Weights saved at step 7 with the JSON state of step 5: a run killed between the writes."""
    from hybridvision.api import load_trained
    from hybridvision.engine.checkpoint import load_checkpoint_state, save_checkpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, "last", model, optimizer=opt, extra={"epoch": 1, "step": 5})
    side = (tmp_path / "last.json").read_bytes()
    save_checkpoint(tmp_path, "last", model, optimizer=opt, extra={"epoch": 2, "step": 7})
    (tmp_path / "last.json").write_bytes(side)  # the new tensors, the old state
    with pytest.raises(UserInputError, match="from step 7 but the state last.json from step 5.*torn"):
        load_checkpoint_state(tmp_path, "last", torch.nn.Linear(3, 2))
    # the optimizer file alone torn
    save_checkpoint(tmp_path, "last", model, optimizer=opt, extra={"epoch": 1, "step": 5})
    optim = (tmp_path / "last.optim.safetensors").read_bytes()
    save_checkpoint(tmp_path, "last", model, optimizer=opt, extra={"epoch": 2, "step": 7})
    (tmp_path / "last.optim.safetensors").write_bytes(optim)
    with pytest.raises(UserInputError, match=r"last\.optim\.safetensors: .*from step 5 .*step 7"):
        load_checkpoint_state(tmp_path, "last", torch.nn.Linear(3, 2),
                              torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1, momentum=0.9))
    w = _checkpoint(tmp_path / "b", step=9)  # weights and JSON both say 9
    info = json.loads(w.with_suffix(".json").read_text())
    w.with_suffix(".json").write_text(json.dumps({**info, "step": 4}))
    with pytest.raises(UserInputError, match="torn"):
        load_trained(w)


def _sgd_step(model, opt):
    model(torch.ones(1, model.in_features)).sum().backward()
    opt.step()
    opt.zero_grad()


def _disk_full_on(monkeypatch, name: str) -> None:
    """Writing the temp file of ``name`` fails as it does on a full disk: safetensors raises its own
    error (``SafetensorError(... os error 28)``, not OSError); a JSON's write raises ENOSPC."""
    import builtins

    import safetensors.torch
    from safetensors import SafetensorError

    real_save, real_open = safetensors.torch.save_file, builtins.open

    def save_file(tensors, filename, metadata=None):
        if Path(filename).name.startswith(f".{name}."):
            Path(filename).write_bytes(b"\0" * 10)  # a partial write
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(tensors, filename, metadata)

    def opened(path, mode="r", *a, **k):
        if "w" in mode and Path(path).name.startswith(f".{name}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    monkeypatch.setattr(builtins, "open", opened)


@pytest.mark.parametrize("name", ["last.safetensors", "last.optim.safetensors", "last.json", "best.safetensors"])
def test_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_old_one(tmp_path, monkeypatch, name):
    """Each write of a checkpoint set on a full disk: one line naming the file and the fix; the
    previous checkpoint is whole under its own names; no temp or previous-set file left."""
    from hybridvision.engine.checkpoint import load_checkpoint_state, save_checkpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _sgd_step(model, opt)
    kind = name.split(".")[0]
    with_opt = opt if kind == "last" else None
    save_checkpoint(tmp_path, kind, model, optimizer=with_opt, extra={"epoch": 1, "step": 5})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    _sgd_step(model, opt)
    _disk_full_on(monkeypatch, name)
    with pytest.raises(UserInputError, match=rf"{name}: no space left on the device.*free space on the disk "
                                             rf"holding {tmp_path}") as e:
        save_checkpoint(tmp_path, kind, model, optimizer=with_opt, extra={"epoch": 2, "step": 7})
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    fresh = torch.nn.Linear(3, 2)
    state = load_checkpoint_state(tmp_path, kind, fresh, torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
                                  if with_opt else None)
    assert state["step"] == 5


def test_full_disk_while_training_is_one_line(cli, tiny_amounts, tmp_path, monkeypatch):
    """`train` on a disk that fills up at the first checkpoint: `error:` line, exit 2."""
    _disk_full_on(monkeypatch, "last.optim.safetensors")
    out = tmp_path / "run"
    code, _, err = cli("train", "--model", "fcos_demo", "--data", "builtin:amounts", "--epochs", "1",
                       "--batch-size", "16", "--image-size", "64", "--device", "cpu", "--out", out,
                       f"data_root={tiny_amounts}", "data_kwargs={n_train: 32, n_val: 8, image_size: 64}",
                       "max_steps=1", "progress=false")
    assert code == 2 and _one_line(err) and "last.optim.safetensors: no space left" in err, err
    assert "free space on the disk holding" in err
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp") or ".prev." in p.name]


def test_full_disk_while_logging_metrics_is_one_line(tmp_path, monkeypatch):
    """metrics.jsonl is appended to, not replaced: its full disk is one line too."""
    import builtins

    from hybridvision.engine.trainer import _append_jsonl

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n')
    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, _data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(builtins, "open", lambda p, m="r", *a, **k: Full(real_open(p, m, *a, **k))
                        if m == "a" else real_open(p, m, *a, **k))
    with pytest.raises(UserInputError, match=r"metrics\.jsonl: no space left .*free space on the disk") as e:
        _append_jsonl(log, {"step": 2})
    assert "\n" not in str(e.value)


def test_a_set_from_two_saves_of_the_same_step_is_torn(tmp_path):
    """Same step, another save (a run overwritten with --exist-ok, killed between the writes): the
    generation stamp tells them apart."""
    from hybridvision.engine.checkpoint import load_checkpoint_state, save_checkpoint

    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path, "last", model, extra={"epoch": 1, "step": 5})
    side = (tmp_path / "last.json").read_bytes()
    save_checkpoint(tmp_path, "last", torch.nn.Linear(3, 2), extra={"epoch": 1, "step": 5})
    (tmp_path / "last.json").write_bytes(side)
    with pytest.raises(UserInputError, match=r"last\.safetensors: weights are from another save .*torn"):
        load_checkpoint_state(tmp_path, "last", torch.nn.Linear(3, 2))


def test_recover_checkpoint_restores_the_previous_set(tmp_path):
    """A save killed after the new weights: recover_checkpoint puts the kept previous set back."""
    from hybridvision.engine.checkpoint import load_checkpoint_state, recover_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path, "last", model, extra={"epoch": 1, "step": 5})
    old = (tmp_path / "last.safetensors").read_bytes()
    for suffix in ("safetensors", "json"):  # what the kept set is, before the new writes
        os.link(tmp_path / f"last.{suffix}", tmp_path / f"last.prev.{suffix}")
    atomic_save_tensors(tmp_path / "last.safetensors", {"weight": torch.ones(2, 3), "bias": torch.ones(2)},
                        {"step": "7", "generation": "x"})
    (tmp_path / ".last.json.abc.tmp").write_text("{")  # a temp file of a killed write
    assert "torn" in recover_checkpoint(tmp_path, "last")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]
    assert (tmp_path / "last.safetensors").read_bytes() == old
    assert load_checkpoint_state(tmp_path, "last", torch.nn.Linear(3, 2))["step"] == 5
    assert recover_checkpoint(tmp_path, "last") is None


def test_optimizer_state_of_another_model_is_one_line(tmp_path):
    from hybridvision.engine.checkpoint import load_checkpoint_state, save_checkpoint

    def trained(model, opt):
        model(torch.ones(2, model[0].in_features)).sum().backward()
        opt.step()
        return model, opt

    # same parameter count, other shapes: load_state_dict itself would accept it
    b = torch.nn.Sequential(torch.nn.Linear(4, 3))
    save_checkpoint(tmp_path / "x", "last", b, extra={"epoch": 1, "step": 1})
    c = torch.nn.Sequential(torch.nn.Linear(5, 3))
    save_checkpoint(tmp_path / "c", "last", c, optimizer=trained(c, torch.optim.AdamW(c.parameters()))[1],
                    extra={"epoch": 1, "step": 1})
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(tmp_path / "c" / "last.safetensors"), framework="pt") as f:
        meta = f.metadata()  # b's weights as if saved with c's optimizer state (step, generation)
    save_file(load_file(str(tmp_path / "x" / "last.safetensors")), str(tmp_path / "c" / "last.safetensors"), meta)
    with pytest.raises(UserInputError, match=r"optim\.safetensors: .*exp_avg.*shape \[3, 5\].*\[3, 4\]") as e:
        load_checkpoint_state(tmp_path / "c", "last", b, torch.optim.AdamW(b.parameters()))
    assert "\n" not in str(e.value)
    # another parameter count
    d = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    save_checkpoint(tmp_path / "d", "last", b, optimizer=trained(b, torch.optim.AdamW(b.parameters()))[1],
                    extra={"epoch": 1, "step": 1})
    with pytest.raises(UserInputError, match="another model"):
        load_checkpoint_state(tmp_path / "d", "last", b, torch.optim.AdamW(d.parameters()))


def test_extra_state_round_trips(tmp_path):
    """The trainer stores the AMP GradScaler state in ``extra["scaler"]``; it comes back as saved."""
    from hybridvision.engine.checkpoint import load_checkpoint_state, save_checkpoint

    scaler = {"scale": 32768.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 17}
    extra = {"epoch": 3, "step": 12, "scaler": scaler, "best": 0.25, "notes": {"a": [1, None, "x"]}}
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, "last", model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                    extra=extra)
    state = load_checkpoint_state(tmp_path, "last", torch.nn.Linear(2, 2),
                                  torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1))
    assert {k: state[k] for k in extra} == extra
    restored = torch.amp.GradScaler("cpu", enabled=True)
    restored.load_state_dict(state["scaler"])
    assert restored.get_scale() == 32768.0


def test_training_data_accepts_a_coco_file_with_a_bom(tiny_amounts, tmp_path):
    """`train --data coco:…` reads annotation files through the BOM-tolerant reader too."""
    from hybridvision.config import TrainConfig
    from hybridvision.engine.tasks import make_task

    src = tiny_amounts / "amounts" / "train"
    ann = tmp_path / "ann.json"
    ann.write_bytes(BOM + (src / "annotations.json").read_bytes())
    cfg = TrainConfig(model="fcos_demo", data=f"coco:{ann},{src / 'images'}", image_size=64)
    bundle = make_task(cfg).build_data(cfg)
    assert len(bundle.train) + len(bundle.val) == 32 and bundle.num_classes == 10
