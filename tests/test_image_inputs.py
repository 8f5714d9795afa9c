"""Images as users have them, through the one checked reader (hybridvision.imageio): a PNG with
corrupt pixel data is one line (it crashed torchvision's native decoder with SIGSEGV), a phone
photo stored sideways is read upright as its EXIF says, sliced inference refuses an overlap that
would never end, and an extreme aspect ratio (a 4000×3 strip) is evaluated with and without TTA."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from hybridvision.errors import DataError, UserInputError

BIN = Path(sys.executable).with_name("hybridvision")


def _one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """An untrained detector checkpoint with the sidecar `train` writes (no training: fast)."""
    from hybridvision.engine.checkpoint import save_checkpoint
    from hybridvision.factory import create_model

    torch.manual_seed(0)
    model = create_model("fcos_demo", num_classes=3)
    return save_checkpoint(tmp_path_factory.mktemp("w"), "best", model, extra={
        "epoch": 1, "step": 5, "model": "fcos_demo", "model_kwargs": {}, "num_classes": 3,
        "class_names": ["a", "b", "c"], "label_to_cat_id": [1, 2, 3], "image_size": 64, "task": "detection"})


def _corrupt_idat_png(path: Path) -> Path:
    """A 64×64 PNG whose IDAT bytes are scrambled and whose chunk CRC is fixed up, so PIL's
    ``verify`` passes it and only decoding the pixels finds the damage."""
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    at = data.find(b"IDAT")
    n = struct.unpack(">I", data[at - 4:at])[0]
    for i in range(at + 4 + 10, at + 4 + n - 4, 7):
        data[i] ^= 0xFF
    data[at + 4 + n:at + 8 + n] = struct.pack(">I", zlib.crc32(bytes(data[at:at + 4 + n])) & 0xFFFFFFFF)
    path.write_bytes(data)
    return path


def _rotated_jpeg(path: Path, orientation: int = 6) -> np.ndarray:
    """A 40 wide × 20 high JPEG stored with EXIF Orientation ``orientation``; a white block marks
    its stored top-left corner. Returns the stored pixels ``[20, 40, 3]``."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:6, :12] = 255
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif.tobytes(), quality=100)
    return stored


# ------------------------------------------------------------------ 1. one checked decoder
def test_predict_on_a_png_with_corrupt_pixel_data_is_one_line(weights, tmp_path):
    """Before: `predict` died with SIGSEGV inside torchvision's libpng decoder (exit -11)."""
    bad = _corrupt_idat_png(tmp_path / "broken.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([str(BIN), "predict", str(bad), "--weights", str(weights), "--out",
                          str(tmp_path / "pred"), "--device", "cpu"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 2, (run.returncode, run.stderr[-800:])
    assert "broken.png" in run.stderr and "unreadable image" in run.stderr and _one_line(run.stderr)


def test_every_reader_refuses_the_corrupt_png_with_one_line(tmp_path):
    from hybridvision.data.sbir import load_modality_image
    from hybridvision.imageio import load_gray_uint8, load_image, load_image_uint8

    bad = _corrupt_idat_png(tmp_path / "broken.png")
    for read in (load_image_uint8, load_image, load_gray_uint8, lambda p: load_modality_image(p, "photo")):
        with pytest.raises(DataError, match=r"broken\.png: unreadable image .*replace|broken\.png: unreadable"
                                            r" image .*re-export") as e:
            read(bad)
        assert "\n" not in str(e.value)


def test_sixteen_bit_and_palette_images_read_as_eight_bit_rgb(tmp_path):
    from hybridvision.imageio import load_gray_uint8, load_image_uint8

    grey = np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 250
    Image.fromarray(grey).save(tmp_path / "deep.png")
    img = load_image_uint8(tmp_path / "deep.png")
    assert img.shape == (3, 12, 20) and torch.equal(img[0], torch.from_numpy((grey >> 8).astype(np.uint8)))
    assert np.array_equal(load_gray_uint8(tmp_path / "deep.png"), (grey >> 8).astype(np.uint8))
    Image.fromarray(np.full((5, 7, 3), 200, np.uint8)).convert("P").save(tmp_path / "pal.gif")
    assert load_image_uint8(tmp_path / "pal.gif").shape == (3, 5, 7)


# ------------------------------------------------------------------ 2. EXIF orientation
@pytest.mark.parametrize("orientation", [2, 3, 5, 6, 7, 8])
def test_exif_orientation_is_applied_by_every_reader(tmp_path, orientation):
    """Before: a photo stored sideways was read in its stored frame (40×20 instead of 20×40)."""
    from hybridvision.data.coco import load_image_uint8 as coco_load
    from hybridvision.imageio import load_gray_uint8, load_image_uint8, read_image_size

    path = tmp_path / "phone.jpg"
    _rotated_jpeg(path, orientation)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))  # what viewers show
    h, w = upright.shape[:2]
    assert (w, h) == ((20, 40) if orientation >= 5 else (40, 20))
    assert read_image_size(path) == (w, h)
    for read in (load_image_uint8, coco_load):
        assert np.array_equal(read(path).permute(1, 2, 0).numpy(), upright)
    assert load_gray_uint8(path).shape == (h, w)


def test_exif_orientation_of_a_png_and_an_invalid_tag(tmp_path):
    from hybridvision.imageio import load_image_uint8, read_image_size

    im = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 8
    im.save(tmp_path / "rot.png", exif=exif.tobytes())
    assert read_image_size(tmp_path / "rot.png") == (20, 40)
    assert load_image_uint8(tmp_path / "rot.png").shape == (3, 40, 20)
    exif[0x0112] = 77  # not an orientation: the pixels as stored
    im.save(tmp_path / "odd.jpg", exif=exif.tobytes())
    assert read_image_size(tmp_path / "odd.jpg") == (40, 20)
    assert load_image_uint8(tmp_path / "odd.jpg").shape == (3, 20, 40)


def test_predict_and_data_check_use_the_upright_frame(cli, weights, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _rotated_jpeg(src / "phone.jpg", 6)
    code, _, err = cli("predict", src, "--weights", weights, "--out", tmp_path / "pred", "--device", "cpu",
                       "--conf", "0")
    assert code == 0, err
    record = json.loads((tmp_path / "pred" / "images.json").read_text())["images"][0]
    assert (record["width"], record["height"]) == (20, 40)
    assert Image.open(tmp_path / "pred" / "phone.jpg.png").size == (20, 40)
    labels = json.loads((tmp_path / "pred" / "labels" / "phone.jpg.json").read_text())
    for d in labels["detections"]:  # boxes inside the upright image
        x, y, bw, bh = d["bbox"]
        assert -1e-3 <= x and x + bw <= 20 + 1e-3 and -1e-3 <= y and y + bh <= 40 + 1e-3
    # data check: a record with the upright size is right, one with the stored size is flagged
    ann = tmp_path / "ann.json"
    for (w, h), ok in (((20, 40), True), ((40, 20), False)):
        ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "phone.jpg", "width": w, "height": h}],
                                   "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
        code, out, err = cli("data", "check", ann, "--images", src)
        assert (code == 0) == ok, (out, err)
        if not ok:
            assert "20x40" in out + err


# ------------------------------------------------------------------ 3. tiling and extreme shapes
@pytest.mark.parametrize("overlap", ["0.999", "0.95", "1", "-0.1", "nan"])
def test_predict_refuses_a_tile_overlap_that_would_never_end(cli, weights, tmp_path, overlap):
    """Before: --tile-overlap 0.999 made a window every pixel (millions of windows; it never ended)."""
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(tmp_path / "big.png")
    code, _, err = cli("predict", tmp_path / "big.png", "--weights", weights, "--tile", "--tile-overlap", overlap,
                       "--image-size", "64", "--out", tmp_path / "p", "--device", "cpu")
    assert code == 2 and err.startswith("error: --tile-overlap") and "0.9" in err and _one_line(err), err
    assert not (tmp_path / "p").exists()


def test_tiling_bounds_the_windows(weights):
    from hybridvision.api import load_trained
    from hybridvision.engine.tiling import MAX_TILE_OVERLAP, predict_tiled, tile_windows

    with pytest.raises(UserInputError, match="--tile-overlap 0.999"):
        tile_windows(2000, 2000, 512, 0.999)
    model, _ = load_trained(weights, torch.device("cpu"))
    with pytest.raises(UserInputError, match="--tile-overlap 0.999"):
        predict_tiled(model, torch.rand(3, 100, 100), 64, overlap=0.999)
    # the most overlap allowed: a window step of a tenth of a window
    windows = tile_windows(2000, 2000, 512, MAX_TILE_OVERLAP)
    assert len(windows) <= (2000 // 51 + 2) ** 2
    assert predict_tiled(model, torch.rand(3, 100, 80), 64, overlap=MAX_TILE_OVERLAP)["boxes"].shape[1] == 4


def test_an_extreme_aspect_ratio_is_resized_to_at_least_one_pixel():
    from hybridvision.data.transforms import build_detection_transforms

    img = torch.rand(3, 3, 4000)
    target = {"boxes": torch.tensor([[10.0, 0.0, 500.0, 3.0]]), "labels": torch.tensor([0])}
    out, t = build_detection_transforms(False, 128)(img, target)  # before: RuntimeError (height 0)
    assert out.shape == (3, 1, 128) and t["boxes"].shape == (1, 4)
    out, _ = build_detection_transforms(True, 64)(torch.rand(3, 4000, 3), target)  # train geometry
    assert out.shape[0] == 3 and min(out.shape[1:]) >= 1


@pytest.mark.parametrize("tta", [None, "flip", "multiscale"])
def test_eval_with_tta_on_a_strip_image(cli, weights, tmp_path, tta):
    """Before: a 4000×3 image evaluated at 128 px resized to 0 rows: a RuntimeError traceback."""
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (3, 4000, 3), dtype=np.uint8)).save(images / "s.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (2000, 20, 3), dtype=np.uint8)).save(images / "t.png")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "s.png", "width": 4000, "height": 3},
                   {"id": 2, "file_name": "t.png", "width": 20, "height": 2000}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 0, 500, 3], "area": 1500,
                         "iscrowd": 0},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [2, 10, 10, 50], "area": 500,
                         "iscrowd": 0}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]}))
    args = ["--tta", tta] if tta else []
    code, _, err = cli("eval", "--weights", weights, "--data", f"coco:{ann},{images}", *args,
                       "--out", tmp_path / "ev", "--device", "cpu")
    assert code == 0, err
    assert json.loads((tmp_path / "ev" / "coco_metrics.json").read_text())["AP"] >= 0
