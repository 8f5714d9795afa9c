"""Sketch data: QuickDraw ndjson/npy, TU-Berlin folders, split lists, built-in sketches, transforms.

Every dataset file here is written in its real format in ``tmp_path``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybridvision.data.builtin.sketches import SKETCH_CLASSES, ensure_sketches, make_sketches, read_manifest
from hybridvision.data.classification_transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
    build_classification_transforms,
)
from hybridvision.data.sketch_raster import rasterize_strokes
from hybridvision.data.sketch_readers import read_ndjson
from hybridvision.data.sketch_splits import read_class_map, read_split_list
from hybridvision.data.sketches import build_sketch_dataset
from hybridvision.errors import DataError, UserInputError

QD_KEYS = ("word", "countrycode", "timestamp", "recognized", "key_id", "drawing")


def _record(word: str, drawing, key: int = 0) -> dict:
    return {"word": word, "countrycode": "CL", "timestamp": "2017-03-09 00:28:55.637750 UTC",
            "recognized": True, "key_id": str(5_000_000_000_000_000 + key), "drawing": drawing}


def _write_ndjson(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _hline(y: int = 128):
    return [[[0, 255], [y, y]]]


# ---------------------------------------------------------------------------------- rasteriser
@pytest.mark.parametrize("size", [64, 224])
@pytest.mark.parametrize("line_width", [2, 6])
def test_horizontal_stroke_darkens_middle_row(tmp_path, size, line_width):
    f = _write_ndjson(tmp_path / "line.ndjson", [_record("line", _hline())])
    [(lineno, rec)] = read_ndjson(f)
    assert lineno == 1 and all(k in rec for k in QD_KEYS)
    img = rasterize_strokes(rec["drawing"], size=size, line_width=line_width, padding=0)
    assert img.shape == (size, size) and img.dtype == np.uint8
    # Canvas y = 128 maps to (128 + 0.5) · size / 256 ≈ the middle row.
    mid = int((128 + 0.5) * size / 256)
    assert img[mid, size // 4 : 3 * size // 4].max() < 100  # ink is black along the middle row
    assert (img[: size // 4] == 255).all()  # paper stays white above the stroke
    assert (img[-size // 4 :] == 255).all()
    # The stroke is about line_width pixels thick (anti-aliasing blurs at most one row each side).
    dark_rows = np.flatnonzero(img[:, size // 2] < 128)
    assert line_width - 1 <= len(dark_rows) <= line_width + 1
    assert abs(dark_rows.mean() - (128 + 0.5) * size / 256) <= 1.0


def test_rasterizer_axes_padding_and_width():
    # A vertical stroke at canvas x = 64 must darken a column (x ↦ columns, y ↦ rows).
    size, pad = 128, 16
    img = rasterize_strokes([[[64, 64], [0, 255]]], size=size, line_width=3, padding=pad, supersample=1)
    col = pad + (64 + 0.5) * (size - 2 * pad) / 256
    dark_cols = np.flatnonzero(img[size // 2] < 128)
    assert abs(dark_cols.mean() - col) <= 1.0
    assert (img[:, : pad // 2] == 255).all() and (img[:, -pad // 2 :] == 255).all()
    thin = rasterize_strokes(_hline(), size=size, line_width=2)
    thick = rasterize_strokes(_hline(), size=size, line_width=8)
    assert (thick < 128).sum() > 2 * (thin < 128).sum()


def test_rasterizer_rejects_bad_drawing():
    with pytest.raises(UserInputError, match="stroke 0"):
        rasterize_strokes([[[0, 1, 2], [0, 1]]], size=32)


# ------------------------------------------------------------------------------------ QuickDraw
def _quickdraw_dir(tmp_path: Path, n: int = 10) -> Path:
    d = tmp_path / "qd"
    d.mkdir()
    for cls, y in (("line", 128), ("top", 10)):
        _write_ndjson(d / f"{cls}.ndjson", [_record(cls, _hline(y), key=i) for i in range(n)])
    return d


def test_quickdraw_ndjson_dataset_split(tmp_path):
    d = _quickdraw_dir(tmp_path)
    tr = build_sketch_dataset(f"quickdraw:{d}", "train", seed=3)
    va = build_sketch_dataset(f"quickdraw:{d}", "val", seed=3)
    assert tr.classes == va.classes == ["line", "top"]
    assert len(tr) == 16 and len(va) == 4  # 80/20 per class
    assert sorted(tr.targets) == [0] * 8 + [1] * 8 and sorted(va.targets) == [0, 0, 1, 1]
    loc_tr, loc_va = {s for s, _ in tr.samples}, {s for s, _ in va.samples}
    assert not loc_tr & loc_va
    every = {f"{d / c}.ndjson:{i}" for c in ("line", "top") for i in range(1, 11)}
    assert loc_tr | loc_va == every  # locators are file:line, every drawing lands in one split
    again = build_sketch_dataset(f"quickdraw:{d}", "val", seed=3)
    assert again.samples == va.samples
    other = [build_sketch_dataset(f"quickdraw:{d}", "val", seed=s).samples for s in range(4, 10)]
    assert any(o != va.samples for o in other)
    # Samples are the rasterised strokes, black on white; label matches the class file.
    img, label = tr[0]
    assert img.dtype == torch.float32 and img.shape == (1, 256, 256)
    row = 128 if tr.classes[label] == "line" else 10
    mid = int((row + 0.5) * (256 - 16) / 256 + 8)
    assert img[0, mid, 128] < 0.5 and img[0, 200 if row == 10 else 40].min() == 1.0


def test_quickdraw_per_class_cap_and_class_selection(tmp_path):
    d = _quickdraw_dir(tmp_path, n=20)
    ds = build_sketch_dataset(f"quickdraw:{d}", "all", per_class=5, seed=0, classes=["top"])
    assert ds.classes == ["top"] and len(ds) == 5 and set(ds.targets) == {0}
    assert ds.samples == build_sketch_dataset(f"quickdraw:{d}", "all", per_class=5, seed=0, classes=["top"]).samples
    with pytest.raises(DataError, match="not found"):
        build_sketch_dataset(f"quickdraw:{d}", "all", classes=["giraffe"])


def test_malformed_ndjson_line_names_file_and_line(tmp_path):
    d = tmp_path / "qd"
    d.mkdir()
    good = json.dumps(_record("cat", _hline()))
    (d / "cat.ndjson").write_text(good + "\n" + good + "\n" + '{"word": "cat", "drawing": [[[1,2' + "\n")
    with pytest.raises(DataError) as e:
        build_sketch_dataset(f"quickdraw:{d}", "train")
    msg = str(e.value)
    assert "cat.ndjson" in msg and "line 3" in msg and "\n" not in msg
    (d / "cat.ndjson").write_text(good + "\n" + json.dumps(_record("cat", [[[1, 2, 3], [4, 5]]])) + "\n")
    with pytest.raises(DataError, match=r"cat\.ndjson: line 2: .*equal length"):
        build_sketch_dataset(f"quickdraw:{d}", "train")
    (d / "cat.ndjson").write_text(json.dumps({"word": "cat"}) + "\n")
    with pytest.raises(DataError, match=r"line 1: no \"drawing\" key"):
        build_sketch_dataset(f"quickdraw:{d}", "train")
    (d / "cat.ndjson").write_text("\n")
    with pytest.raises(DataError, match="no drawings"):
        build_sketch_dataset(f"quickdraw:{d}", "train")


def test_missing_dir_and_bad_spec(tmp_path):
    with pytest.raises(DataError, match="not found"):
        build_sketch_dataset(f"quickdraw:{tmp_path / 'nope'}", "train")
    with pytest.raises(DataError, match="not found"):
        build_sketch_dataset(f"tuberlin:{tmp_path / 'nope'}", "train")
    with pytest.raises(DataError, match="no .ndjson or .npy"):
        build_sketch_dataset(f"quickdraw:{tmp_path}", "train")
    with pytest.raises(UserInputError, match="unknown sketch data spec"):
        build_sketch_dataset("sketchy:/x", "train")


def test_npy_bitmaps_shape_and_polarity(tmp_path):
    d = tmp_path / "bitmaps"
    d.mkdir()
    # QuickDraw bitmaps: [N, 784] uint8, white ink (255) on black (0).
    for cls, (r, c) in (("dot", (3, 5)), ("bar", (20, 14))):
        arr = np.zeros((10, 28, 28), np.uint8)
        arr[:, r, c] = 255
        np.save(d / f"full_numpy_bitmap_{cls}.npy", arr.reshape(10, 784))
    ds = build_sketch_dataset(f"quickdraw:{d}", "all")
    assert ds.classes == ["bar", "dot"] and ds.kind == "bitmaps" and len(ds) == 20
    img, label = ds[0]
    assert img.shape == (1, 28, 28) and img.dtype == torch.float32
    r, c = (20, 14) if ds.classes[label] == "bar" else (3, 5)
    assert img[0, r, c] == 0.0  # ink is black, like the rasteriser's output
    assert (img > 0.99).sum() == 28 * 28 - 1  # paper white
    assert len(build_sketch_dataset(f"quickdraw:{d}", "val")) == 4
    np.save(d / "full_numpy_bitmap_bad.npy", np.zeros((3, 10), np.uint8))
    with pytest.raises(DataError, match=r"bad\.npy: shape \(3, 10\) is not \[N, 784\]"):
        build_sketch_dataset(f"quickdraw:{d}", "all")


# ----------------------------------------------------------------------------------- TU-Berlin
def _png(path: Path, ink_at: tuple[int, int] = (1, 1), size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size, size), 255, np.uint8)
    a[ink_at] = 0
    Image.fromarray(a).save(path)


def _tuberlin(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "tub"
    truth = {"airplane": [1, 2, 10, 11, 12], "flying saucer": [100, 101, 102, 103, 104]}
    for cls, ids in truth.items():
        for i in ids:
            _png(root / "png" / cls / f"{i}.png")
    (root / "png" / "filelist.txt").write_text("airplane/1.png\n")  # shipped with TU-Berlin
    return root, truth


def test_tuberlin_folder_pairs_and_split(tmp_path):
    root, truth = _tuberlin(tmp_path)
    ds = build_sketch_dataset(f"tuberlin:{root}", "all")
    assert ds.classes == ["airplane", "flying saucer"]
    expected = [(str(root / "png" / c / f"{i}.png"), label) for label, c in enumerate(ds.classes) for i in truth[c]]
    assert ds.samples == expected  # numeric order: 2.png before 10.png
    tr = build_sketch_dataset(f"tuberlin:{root}", "train", seed=1)
    va = build_sketch_dataset(f"tuberlin:{root}", "val", seed=1)
    assert len(tr) == 8 and len(va) == 2 and sorted(va.targets) == [0, 1]
    assert sorted(tr.samples + va.samples) == sorted(expected)
    img, label = ds[0]
    assert img.shape == (1, 16, 16) and img[0, 1, 1] == 0.0 and img[0, 0, 0] == 1.0 and label == 0


def test_tuberlin_empty_class_and_unreadable_image(tmp_path):
    root, _ = _tuberlin(tmp_path)
    bad = root / "png" / "airplane" / "1.png"
    bad.write_bytes(b"not a png")
    ds = build_sketch_dataset(f"tuberlin:{root}", "all")
    with pytest.raises(DataError, match=r"airplane/1\.png: unreadable image"):
        ds[0]
    (root / "png" / "zebra").mkdir()
    with pytest.raises(DataError, match="zebra: class folder has no images"):
        build_sketch_dataset(f"tuberlin:{root}", "all")


def test_transparent_png_becomes_white_paper(tmp_path):
    root = tmp_path / "rgba"
    rgba = np.zeros((8, 8, 4), np.uint8)  # transparent everywhere …
    rgba[4, 4] = (0, 0, 0, 255)  # … but one opaque black ink pixel
    (root / "dot").mkdir(parents=True)
    Image.fromarray(rgba, "RGBA").save(root / "dot" / "1.png")
    img, _ = build_sketch_dataset(f"tuberlin:{root}", "all")[0]
    assert img[0, 4, 4] == 0.0 and img[0, 0, 0] == 1.0


@pytest.mark.parametrize("form", ["tab", "lines"])
def test_split_lists_and_class_maps(tmp_path, form):
    root, truth = _tuberlin(tmp_path)
    classes = ["flying saucer", "airplane"]  # deliberately not alphabetical
    if form == "tab":
        (root / "classes.txt").write_text("1\tairplane\n0\tflying saucer\n")
    else:
        (root / "classes.txt").write_text("# one class per line\nflying saucer\nairplane\n")
    assert read_class_map(root / "classes.txt") == classes
    (root / "train.txt").write_text("png/airplane/1.png\t1\npng/flying saucer/100.png\t0\n"
                                    "png/airplane/2.png airplane\n")
    (root / "val.txt").write_text(f"{root}/png/flying saucer/101.png\tflying saucer\n")
    tr = build_sketch_dataset(f"tuberlin:{root}", "train")
    va = build_sketch_dataset(f"tuberlin:{root}", "val")
    assert tr.classes == va.classes == classes
    assert tr.samples == [(str(root / "png/airplane/1.png"), 1), (str(root / "png/flying saucer/100.png"), 0),
                          (str(root / "png/airplane/2.png"), 1)]
    assert va.samples == [(str(root / "png/flying saucer/101.png"), 0)]
    assert len(build_sketch_dataset(f"tuberlin:{root}", "all")) == 4
    (root / "val.txt").write_text("png/airplane/1.png\t7\n")
    with pytest.raises(DataError, match=r"val\.txt: line 1: label 7 outside 0\.\.1"):
        build_sketch_dataset(f"tuberlin:{root}", "val")


def test_split_list_without_class_map_uses_sorted_names(tmp_path):
    (tmp_path / "a.txt").write_text("x/1.png\tzebra\ny/2.png\tant\n")
    samples, classes = read_split_list(tmp_path / "a.txt")
    assert classes == ["ant", "zebra"] and samples == [(str(tmp_path / "x/1.png"), 1), (str(tmp_path / "y/2.png"), 0)]
    (tmp_path / "b.txt").write_text("x/1.png\t3\n")
    with pytest.raises(DataError, match="need a class map"):
        read_split_list(tmp_path / "b.txt")


# ------------------------------------------------------------------------------------ built-in
def test_builtin_sketches_deterministic_valid_and_loadable(tmp_path):
    m = make_sketches(tmp_path / "a", per_class=5, seed=0)
    make_sketches(tmp_path / "b", per_class=5, seed=0)
    make_sketches(tmp_path / "c", per_class=5, seed=1)
    assert len(SKETCH_CLASSES) >= 30 and m["classes"] == list(SKETCH_CLASSES)
    assert m["num_drawings"] == 5 * len(SKETCH_CLASSES)
    diff = 0
    for cls in SKETCH_CLASSES:
        a = (tmp_path / "a" / f"{cls}.ndjson").read_bytes()
        assert a == (tmp_path / "b" / f"{cls}.ndjson").read_bytes()  # same seed: same bytes
        diff += a != (tmp_path / "c" / f"{cls}.ndjson").read_bytes()
        lines = a.decode().splitlines()
        assert len(lines) == 5
        for line in lines:
            rec = json.loads(line)
            assert tuple(rec) == QD_KEYS and rec["word"] == cls
            xs = [x for s in rec["drawing"] for x in s[0]]
            ys = [y for s in rec["drawing"] for y in s[1]]
            assert all(len(s) == 2 and len(s[0]) == len(s[1]) >= 1 for s in rec["drawing"])
            assert all(isinstance(v, int) for v in xs + ys)
            # QuickDraw simplified normalisation: top-left aligned, max extent exactly 255.
            assert min(xs) == 0 and min(ys) == 0 and max(max(xs), max(ys)) == 255
    assert diff == len(SKETCH_CLASSES)
    # Prefix-stable: fewer drawings per class = the first lines of more.
    make_sketches(tmp_path / "d", per_class=3, seed=0)
    lines5 = (tmp_path / "a" / "star.ndjson").read_text().splitlines()
    assert (tmp_path / "d" / "star.ndjson").read_text().splitlines() == lines5[:3]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left

    # The real QuickDraw loader reads it through the builtin spec (generated into root/sketches).
    tr = build_sketch_dataset("builtin:sketches", "train", root=tmp_path, per_class=5, raster_size=32)
    va = build_sketch_dataset("builtin:sketches", "val", root=tmp_path, per_class=5, raster_size=32)
    assert tr.classes == list(SKETCH_CLASSES) and len(tr) == 4 * len(SKETCH_CLASSES) and len(va) == len(SKETCH_CLASSES)
    img, label = va[0]
    assert img.shape == (1, 32, 32) and 0 <= label < len(SKETCH_CLASSES)
    assert img.min() < 0.2 and img.max() == 1.0  # some ink on white paper


def test_ensure_sketches_reuses_complete_and_regenerates_incomplete(tmp_path):
    root = tmp_path / "sketches"
    m = ensure_sketches(root, per_class=4, seed=0)
    stamp = (root / "manifest.json").stat().st_mtime_ns
    assert ensure_sketches(root, per_class=3, seed=0) == m  # enough drawings: reused
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    (root / "manifest.json").unlink()  # an interrupted generation has no manifest
    assert read_manifest(root) is None
    assert ensure_sketches(root, per_class=4, seed=0)["counts"] == m["counts"]
    assert ensure_sketches(root, per_class=6, seed=0)["per_class"] == 6  # more wanted: regenerated


# ---------------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_transforms_size_and_sketch_normalisation(train, in_chans):
    t = build_classification_transforms(train, 48, sketch=True, in_chans=in_chans)
    white = torch.full((1, 60, 80), 255, dtype=torch.uint8)  # blank paper
    black = torch.zeros((1, 60, 80), dtype=torch.uint8)  # all ink
    for img, raw in ((white, 0.0), (black, 1.0)):  # inverted: paper → 0, ink → 1
        out = t(img)
        assert out.shape == (in_chans, 48, 48) and out.dtype == torch.float32
        expected = (raw - MNIST_MEAN[0]) / MNIST_STD[0]
        assert torch.allclose(out, torch.full_like(out, expected), atol=1e-5)


def test_val_transform_resizes_short_side_and_centre_crops():
    size = 224
    h, w = 256, 300  # short side already 224·256/224 = 256: the crop alone decides
    ramp = torch.arange(w, dtype=torch.float32).div(w).expand(1, h, w).clone()  # x encoded in value
    out = build_classification_transforms(False, size, sketch=True, in_chans=1)(ramp)
    top, left = (h - size) // 2, round((w - size) / 2)
    expected = ((1 - ramp[:, top : top + size, left : left + size]) - MNIST_MEAN[0]) / MNIST_STD[0]
    assert torch.allclose(out, expected, atol=1e-5)
    # A smaller image is resized (short side → 256) before the crop.
    big = build_classification_transforms(False, size)(torch.zeros((1, 100, 150), dtype=torch.uint8))
    assert big.shape == (3, size, size)


def test_photo_transforms_use_imagenet_stats():
    out = build_classification_transforms(False, 32, sketch=False, in_chans=3)(Image.new("RGB", (40, 50), "white"))
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert torch.allclose(out[:, 16, 16], expected, atol=1e-5)


def test_dataset_with_transforms_batches(tmp_path):
    d = _quickdraw_dir(tmp_path, n=5)
    ds = build_sketch_dataset(f"quickdraw:{d}", "train", build_classification_transforms(True, 32, in_chans=3),
                              raster_size=40)
    images, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert type(images) is torch.Tensor


def test_unknown_data_option_is_a_user_error(tmp_path):
    d = _quickdraw_dir(tmp_path, n=5)
    with pytest.raises(UserInputError, match="unknown data option.*raster_sise"):
        build_sketch_dataset(f"quickdraw:{d}", "train", raster_sise=64)
    with pytest.raises(UserInputError, match="unknown data option.*raster_size"):
        build_sketch_dataset(f"tuberlin:{d}", "train", raster_size=64)


def test_npy_dataset_pickles_without_its_arrays(tmp_path):
    import pickle

    d = tmp_path / "bitmaps"
    d.mkdir()
    np.save(d / "cat.npy", np.full((500, 784), 7, np.uint8))  # 392 kB of bitmaps
    ds = build_sketch_dataset(f"quickdraw:{d}", "all")
    ds[0]  # opens the memory map
    blob = pickle.dumps(ds)  # what a DataLoader worker receives under spawn
    assert len(blob) < 100_000
    img, _ = pickle.loads(blob)[3]
    assert torch.allclose(img, torch.full((1, 28, 28), (255 - 7) / 255))
