"""CocoDetection, collate_detection, detection transforms and the montos converter, on files
written in the real formats in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybridvision.data import (
    TRANSFORM_PRESETS,
    CocoDetection,
    build_detection_transforms,
    build_preset_transforms,
    collate_detection,
    montos_to_coco,
)
from hybridvision.data.builtin import amounts as A
from hybridvision.errors import DataError


def _png(path: Path, w: int, h: int, seed: int = 0) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


@pytest.fixture()
def coco_dir(tmp_path) -> Path:
    """Three images (one without annotations), non-contiguous shuffled category ids, a crowd box."""
    _png(tmp_path / "img" / "a.png", 40, 30, 0)
    _png(tmp_path / "img" / "b.jpg", 20, 50, 1)
    _png(tmp_path / "img" / "c.png", 16, 16, 2)
    coco = {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 20, "file_name": "b.jpg", "width": 20, "height": 50},
            {"id": 30, "file_name": "c.png", "width": 16, "height": 16},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 42, "bbox": [1, 2, 10, 5], "area": 50, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [20.5, 10, 19.5, 20], "area": 390, "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 7, "bbox": [0, 0, 40, 30], "area": 1200, "iscrowd": 1},
            {"id": 4, "image_id": 20, "category_id": 7, "bbox": [2, 3, 4, 5], "area": 20},
        ],
        "categories": [{"id": 42, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 7, "name": "eel"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return tmp_path


def test_contract_types_and_label_map(coco_dir):
    ds = CocoDetection(coco_dir / "ann.json", coco_dir / "img")
    assert len(ds) == 3 and ds.ids == [10, 20, 30] and ds.num_classes == 3
    # Categories sorted by id -> contiguous labels; the map round-trips both ways.
    assert ds.label_to_cat_id == [3, 7, 42] and ds.class_names == ["dog", "eel", "cat"]
    assert all(ds.label_to_cat_id[ds.cat_id_to_label[c]] == c for c in (3, 7, 42))
    assert all(ds.cat_id_to_label[ds.label_to_cat_id[k]] == k for k in range(3))

    image, t = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 30, 40)
    assert 0.0 <= image.min() and image.max() <= 1.0
    ref = np.array(Image.open(coco_dir / "img" / "a.png").convert("RGB"))
    assert torch.equal((image * 255).round().byte().permute(1, 2, 0), torch.from_numpy(ref))
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    # xywh -> xyxy; the crowd box (id 3) is not a training target.
    assert t["boxes"].tolist() == [[1, 2, 11, 7], [20.5, 10, 40, 30]]
    assert t["labels"].tolist() == [ds.cat_id_to_label[42], ds.cat_id_to_label[3]] == [2, 0]
    assert t["image_id"] == 10 and isinstance(t["image_id"], int)
    assert tuple(t["orig_size"]) == (30, 40)

    _, t2 = ds[1]
    assert t2["labels"].tolist() == [1] and tuple(t2["orig_size"]) == (50, 20)
    image3, t3 = ds[2]  # no annotations: kept, empty boxes
    assert image3.shape == (3, 16, 16)
    assert t3["boxes"].shape == (0, 4) and t3["labels"].shape == (0,) and t3["labels"].dtype == torch.int64


def test_invalid_file_raises_data_error_not_traceback(coco_dir):
    coco = json.loads((coco_dir / "ann.json").read_text())
    coco["annotations"][0]["bbox"] = [1, 2, 0, 5]
    coco["annotations"][1]["category_id"] = 99
    (coco_dir / "bad.json").write_text(json.dumps(coco))
    with pytest.raises(DataError) as e:
        CocoDetection(coco_dir / "bad.json", coco_dir / "img")
    msg = str(e.value).splitlines()
    assert "2 problems" in msg[0] and len(msg) == 3
    assert "annotation id=1" in msg[1] and "annotation id=2" in msg[2]
    assert len(e.value.findings) == 2


def test_collate_pads_bottom_right_to_multiple(coco_dir):
    ds = CocoDetection(coco_dir / "ann.json", coco_dir / "img")
    batch = [ds[0], ds[1], ds[2]]
    images, targets, sizes = collate_detection(batch, size_divisible=32)
    assert images.shape == (3, 3, 64, 64)  # max h 50, max w 40 -> 64, 64
    assert sizes == [(30, 40), (50, 20), (16, 16)]
    for i, (im, _) in enumerate(batch):
        h, w = sizes[i]
        assert torch.equal(images[i, :, :h, :w], im)
        assert images[i, :, h:].abs().sum() == 0 and images[i, :, :, w:].abs().sum() == 0
    assert targets[0] is batch[0][1]
    images1, _, _ = collate_detection(batch, size_divisible=1)
    assert images1.shape == (3, 3, 50, 40)


# ----------------------------------------------------------------------------- transforms


def _rect_image(h: int, w: int, box: list[float]) -> torch.Tensor:
    """White image with a black axis-aligned rectangle on integer pixel bounds (xyxy)."""
    img = torch.ones(3, h, w)
    x0, y0, x1, y1 = (int(v) for v in box)
    img[:, y0:y1, x0:x1] = 0.0
    return img


def test_eval_resize_scales_boxes_exactly():
    tf = build_detection_transforms(False, 64)
    boxes = torch.tensor([[0.0, 0.0, 128.0, 128.0], [10.0, 20.0, 30.5, 90.0]])
    target = {"boxes": boxes.clone(), "labels": torch.tensor([1, 2]), "image_id": 5, "orig_size": (128, 128)}
    image, out = tf(torch.rand(3, 128, 128), target)
    assert image.shape == (3, 64, 64) and type(image) is torch.Tensor and type(out["boxes"]) is torch.Tensor
    torch.testing.assert_close(out["boxes"], boxes / 2)
    assert out["labels"].tolist() == [1, 2] and out["image_id"] == 5 and out["orig_size"] == (128, 128)
    # Keep aspect: the longer side becomes `size` (here 100x60 -> 50x30, factor 0.5 both ways).
    tf = build_detection_transforms(False, 50)
    target = {"boxes": torch.tensor([[4.0, 6.0, 100.0, 60.0]]), "labels": torch.tensor([0])}
    image, out = tf(torch.rand(3, 60, 100), target)
    assert image.shape == (3, 30, 50)
    torch.testing.assert_close(out["boxes"], torch.tensor([[2.0, 3.0, 50.0, 30.0]]))


def test_train_transforms_keep_boxes_on_the_object():
    """After random scale + crop (+ flip), each box still bounds its rectangle: the object's pixels
    fill the box and none lie outside it (1 px slack for resampling)."""
    torch.manual_seed(0)
    tf = build_detection_transforms(True, 64, hflip=0.5, scale_jitter=(0.6, 1.3), crop=True, color_jitter=False)
    kept = 0
    for _ in range(25):
        box = [20.0, 30.0, 60.0, 70.0]
        img = torch.ones(3, 96, 96)  # white paper, a red object (padding will be black)
        img[1:, 30:70, 20:60] = 0.0
        image, out = tf(img, {"boxes": torch.tensor([box]), "labels": torch.tensor([3])})
        assert image.shape == (3, 64, 64)
        assert out["boxes"].shape[0] == out["labels"].shape[0]
        if out["boxes"].shape[0] == 0:
            continue  # cropped away: SanitizeBoundingBoxes dropped box and label together
        kept += 1
        assert out["labels"].tolist() == [3]
        obj = (image[0] > 0.5) & (image[1] < 0.5)  # [64, 64] red pixels
        x0, y0, x1, y1 = out["boxes"][0].tolist()
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        inside = torch.zeros_like(obj)
        inside[max(0, int(y0) - 1) : int(np.ceil(y1)) + 1, max(0, int(x0) - 1) : int(np.ceil(x1)) + 1] = True
        assert not (obj & ~inside).any()
        core = obj[int(np.ceil(y0)) : int(y1), int(np.ceil(x0)) : int(x1)]
        assert core.float().mean() > 0.9
    assert kept >= 15


def test_hflip_mirrors_boxes_and_is_off_by_default():
    box = torch.tensor([[10.0, 5.0, 30.0, 25.0]])
    flip = build_detection_transforms(True, 64, hflip=1.0, scale_jitter=None, crop=False, color_jitter=False)
    img = _rect_image(64, 64, box[0].tolist())
    image, out = flip(img, {"boxes": box.clone(), "labels": torch.tensor([0])})
    torch.testing.assert_close(out["boxes"], torch.tensor([[64 - 30.0, 5.0, 64 - 10.0, 25.0]]))
    assert torch.equal(image, img.flip(-1))
    # Off by default, and off in the amounts preset (a mirrored digit is another symbol).
    for tf in (
        build_detection_transforms(True, 64),
        build_preset_transforms("amounts", True, 64),
    ):
        assert tf.hflip == 0.0
    assert TRANSFORM_PRESETS["amounts"]["hflip"] == 0.0 and TRANSFORM_PRESETS["coco"]["hflip"] > 0
    ident = build_preset_transforms("amounts", True, 64, scale_jitter=None, crop=False, color_jitter=False)
    for _ in range(5):
        _, out = ident(img, {"boxes": box.clone(), "labels": torch.tensor([0])})
        torch.testing.assert_close(out["boxes"], box)


def test_dataset_with_transforms(coco_dir):
    ds = CocoDetection(coco_dir / "ann.json", coco_dir / "img", build_detection_transforms(False, 20))
    image, t = ds[0]  # 40x30 -> 20x15
    assert image.shape == (3, 15, 20)
    torch.testing.assert_close(t["boxes"], torch.tensor([[0.5, 1.0, 5.5, 3.5], [10.25, 5.0, 20.0, 15.0]]))
    assert tuple(t["orig_size"]) == (30, 40)


# ----------------------------------------------------------------------------- montos converter


def test_montos_round_trip_equals_generator_json(tmp_path):
    man = A.make_amounts(tmp_path / "amt", n_train=8, n_val=0, seed=2)
    split = tmp_path / "amt" / "train"
    coco = montos_to_coco(split / "labels", split / "images", tmp_path / "out" / "conv.json")
    written = json.loads((tmp_path / "out" / "conv.json").read_text())
    gen = json.loads((split / "annotations.json").read_text())
    for key in ("images", "annotations", "categories"):
        assert written[key] == gen[key] == coco[key]
    assert len(coco["annotations"]) == man["splits"]["train"]["num_boxes"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["conv.json"]  # no temp file left


def test_montos_parses_seed_example_and_sizes_from_images(tmp_path):
    _png(tmp_path / "img" / "m1.jpg", 400, 70)
    _png(tmp_path / "img" / "m2.PNG", 30, 20)
    (tmp_path / "lab").mkdir()
    # The thesis' example (Código 3.1), plus spacing variants and a decimal.
    (tmp_path / "lab" / "m1.txt").write_text(
        "4: 83, 8, 43, 53\n6: 143, 11, 39, 50\n\n0:204,11,43,43\n 6 : 264.5, 15, 43, 43 \n"
    )
    (tmp_path / "lab" / "m2.txt").write_text("")  # an image without objects
    coco = montos_to_coco(tmp_path / "lab", tmp_path / "img", tmp_path / "c.json", class_names=list("0123456789"))
    assert coco["images"] == [
        {"id": 1, "file_name": "m1.jpg", "width": 400, "height": 70},
        {"id": 2, "file_name": "m2.PNG", "width": 30, "height": 20},
    ]
    assert [(a["category_id"], a["bbox"], a["image_id"]) for a in coco["annotations"]] == [
        (5, [83, 8, 43, 53], 1), (7, [143, 11, 39, 50], 1), (1, [204, 11, 43, 43], 1), (7, [264.5, 15, 43, 43], 1)
    ]
    ds = CocoDetection(tmp_path / "c.json", tmp_path / "img")  # the output validates
    assert ds[0][1]["labels"].tolist() == [4, 6, 0, 6]


@pytest.mark.parametrize(
    "content, needle",
    [
        ("4: 83, 8, 43\n", "m1.txt:1: malformed line"),
        ("4: 83, 8, 43, 53\nfour: 1, 2, 3, 4\n", "m1.txt:2: malformed line"),
        ("12: 1, 2, 3, 4\n", "m1.txt:1: class 12 is not in 0..9"),
        ("3: 1, 2, 0, 4\n", "m1.txt:1: box width/height"),
        # before: 1e999 was read as inf and written into the COCO file as Infinity, exit 0
        ("3: 1e999, 2, 5, 4\n", "m1.txt:1: '3: 1e999, 2, 5, 4' holds a number too large"),
        # before: boxes outside the image went into the COCO file, exit 0
        ("3: 40, 2, 20, 4\n", "m1.txt:1: box 40, 2, 20, 4 reaches outside its 50×50 image"),
        ("3: -1, 2, 5, 4\n", "m1.txt:1: box -1, 2, 5, 4 reaches outside"),
    ],
)
def test_montos_malformed_line_names_file_and_line(tmp_path, content, needle):
    _png(tmp_path / "img" / "m1.png", 50, 50)
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "m1.txt").write_text(content)
    with pytest.raises(DataError) as e:
        montos_to_coco(tmp_path / "lab", tmp_path / "img", tmp_path / "c.json")
    assert needle in str(e.value) and "fix:" in str(e.value)
    assert not (tmp_path / "c.json").exists()


def test_montos_missing_or_ambiguous_image(tmp_path):
    _png(tmp_path / "img" / "a.png", 10, 10)
    _png(tmp_path / "img" / "a.jpg", 10, 10)
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "a.txt").write_text("1: 1, 1, 2, 2\n")
    (tmp_path / "lab" / "zz.txt").write_text("1: 1, 1, 2, 2\n")
    with pytest.raises(DataError) as e:
        montos_to_coco(tmp_path / "lab", tmp_path / "img", tmp_path / "c.json")
    lines = str(e.value).splitlines()
    assert "2 problems" in lines[0]
    assert "a.txt: several images match" in lines[1]
    assert "zz.txt: no image named zz." in lines[2]
