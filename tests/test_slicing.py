"""``hybridvision data slice``: tiles that cover each image, boxes clipped by the visible-area rule,
a round trip through the files, the option checks, and a short training run on the tiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybridvision.data.slicing import plan_tiles, slice_box, slice_coco, tile_windows
from hybridvision.data.validate import check_coco
from hybridvision.errors import UserInputError


def _write_dataset(root: Path, images: list[tuple[str, int, int]], boxes: list[tuple[int, list[float]]],
                   seed: int = 0) -> tuple[Path, Path]:
    """Random-pixel images ``(file_name, width, height)`` and boxes ``(image index, [x, y, w, h])``
    as a COCO dataset under ``root``; returns (annotation file, image folder)."""
    rng = np.random.default_rng(seed)
    folder = root / "imgs"
    records = []
    for i, (name, w, h) in enumerate(images):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
        records.append({"id": 10 + i, "file_name": name, "width": w, "height": h})
    anns = [{"id": 100 + k, "image_id": 10 + i, "category_id": 7 if k % 2 else 3, "bbox": box, "iscrowd": 0}
            for k, (i, box) in enumerate(boxes)]
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": records, "annotations": anns,
                               "categories": [{"id": 3, "name": "tree"}, {"id": 7, "name": "shrub"}]}))
    return ann, folder


def _coco(width: int, height: int, boxes: list[list[float]]) -> dict:
    return {"images": [{"id": 1, "file_name": "big.png", "width": width, "height": height}],
            "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": b, "iscrowd": 0}
                            for k, b in enumerate(boxes)],
            "categories": [{"id": 1, "name": "tree"}]}


# ------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("width,height,size,overlap", [
    (200, 150, 64, 0.25), (1249, 1035, 400, 0.2), (64, 64, 64, 0.5), (65, 300, 64, 0.0),
    (50, 40, 64, 0.2), (500, 37, 128, 0.9), (97, 97, 32, 0.0),
])
def test_tiles_cover_the_image_and_stay_inside(width, height, size, overlap):
    windows = tile_windows(width, height, size, overlap)
    covered = np.zeros((height, width), dtype=bool)
    for x, y, w, h in windows:
        assert w == min(size, width) and h == min(size, height)  # not padded, never cut short
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        covered[y:y + h, x:x + w] = True
    assert covered.all()  # the union of the tiles is the image
    assert len(set(windows)) == len(windows)
    xs = sorted({x for x, *_ in windows})
    assert xs[-1] + min(size, width) == width  # the last column is flush with the right edge
    step = size - round(overlap * size)
    assert all(b - a <= step for a, b in zip(xs, xs[1:]))  # neighbours overlap at least as asked


def test_image_smaller_than_a_tile_is_one_unpadded_tile():
    assert tile_windows(50, 40, 64, 0.2) == [(0, 0, 50, 40)]
    coco, crops, _ = plan_tiles(_coco(50, 40, [[1.5, 2.0, 10.0, 12.0]]), size=64)
    assert coco["images"][0] == {"id": 1, "file_name": "big_x0_y0.png", "width": 50, "height": 40,
                                      "source_image_id": 1, "source_file_name": "big.png",
                                      "offset_x": 0, "offset_y": 0}
    assert coco["annotations"][0]["bbox"] == [1.5, 2.0, 10.0, 12.0] and crops == [(1, (0, 0, 50, 40))]


def test_box_wholly_inside_one_tile_comes_back_exactly_shifted():
    box = [70.3, 101.7, 20.9, 15.1]  # inside the tile at (48, 96) only (size 64, step 48)
    coco, _, counts = plan_tiles(_coco(200, 200, [box]), size=64, overlap=0.25, keep_empty=False)
    homes = [(im, a) for a in coco["annotations"] for im in coco["images"] if im["id"] == a["image_id"]]
    exact = [(im, a) for im, a in homes if a["bbox"][2:] == box[2:]]
    assert exact, homes
    for im, a in exact:
        assert a["bbox"] == [box[0] - im["offset_x"], box[1] - im["offset_y"], box[2], box[3]]
        assert a["area"] == box[2] * box[3] and a["source_annotation_id"] == 1
    assert (exact[0][0]["offset_x"], exact[0][0]["offset_y"]) == (48, 96)
    # mapped back with the tile's offset, the box is the original
    im, a = exact[0]
    assert [a["bbox"][0] + im["offset_x"], a["bbox"][1] + im["offset_y"]] == pytest.approx(box[:2], abs=1e-12)
    assert counts["lost"] == 0


def test_cut_box_follows_the_visible_area_rule():
    # Tiles of 64 at step 64 (no overlap): x in [0, 64) and [64, 128). A 20-px-wide box from x=54
    # keeps 10/20 = 50 % left of the edge and 50 % right of it; one from x=58 keeps 30 % / 70 %.
    half = [54.0, 10.0, 20.0, 10.0]
    third = [58.0, 30.0, 20.0, 10.0]
    coco, _, counts = plan_tiles(_coco(128, 64, [half, third]), size=64, overlap=0.0, min_visible=0.5)
    by_tile = {im["offset_x"]: [a for a in coco["annotations"] if a["image_id"] == im["id"]]
               for im in coco["images"]}
    left = {a["source_annotation_id"]: a["bbox"] for a in by_tile[0]}
    right = {a["source_annotation_id"]: a["bbox"] for a in by_tile[64]}
    assert left == {1: [54.0, 10.0, 10.0, 10.0]}  # 50 %: kept, clipped at the tile's right edge
    assert right == {1: [0.0, 10.0, 10.0, 10.0], 2: [0.0, 30.0, 14.0, 10.0]}  # 70 % kept; 30 % dropped
    assert counts == {"boxes": 3, "cut_kept": 3, "cut_dropped": 1, "empty_dropped": 0, "lost": 0}
    # a stricter rule drops the halves; a looser one keeps the 30 % part too
    strict, _, _ = plan_tiles(_coco(128, 64, [half, third]), size=64, overlap=0.0, min_visible=0.6)
    assert [a["source_annotation_id"] for a in strict["annotations"]] == [2]
    loose, _, _ = plan_tiles(_coco(128, 64, [half, third]), size=64, overlap=0.0, min_visible=0.3)
    assert sorted(a["source_annotation_id"] for a in loose["annotations"]) == [1, 1, 2, 2]
    assert slice_box([0.0, 0.0, 10.0, 10.0], (20, 0, 64, 64)) == (None, 0.0)


def test_box_larger_than_every_tile_is_counted_as_lost():
    coco, _, counts = plan_tiles(_coco(256, 256, [[0.0, 0.0, 250.0, 250.0]]), size=64, overlap=0.2)
    assert coco["annotations"] == [] and counts["lost"] == 1


def test_keep_empty_or_not():
    data = _coco(200, 64, [[5.0, 5.0, 10.0, 10.0]])
    every, _, _ = plan_tiles(data, size=64, overlap=0.0)
    boxed, _, counts = plan_tiles(data, size=64, overlap=0.0, keep_empty=False)
    assert len(every["images"]) == 4 and len(boxed["images"]) == 1 and counts["empty_dropped"] == 3
    assert boxed["annotations"][0]["image_id"] == boxed["images"][0]["id"] == 1


# -------------------------------------------------------------------------------------- files
def test_round_trip_through_files(tmp_path):
    ann, imgs = _write_dataset(tmp_path, [("sub/big.png", 150, 110), ("tiny.jpg", 40, 30)],
                               [(0, [12.0, 20.5, 25.0, 30.0]), (0, [100.0, 70.0, 30.0, 30.0]),
                                (1, [3.0, 4.0, 10.0, 10.0])])
    summary = slice_coco(ann, imgs, tmp_path / "out", size=64, overlap=0.25)
    out = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert summary.tiles == len(out["images"]) and summary.boxes == len(out["annotations"])
    assert out["categories"] == json.loads(ann.read_text())["categories"]
    assert check_coco(tmp_path / "out" / "annotations.json", tmp_path / "out" / "images") == []
    sources = {im["id"]: np.asarray(Image.open(imgs / im["file_name"]).convert("RGB"))
               for im in json.loads(ann.read_text())["images"]}
    originals = {a["id"]: a for a in json.loads(ann.read_text())["annotations"]}
    for im in out["images"]:
        tile = np.asarray(Image.open(tmp_path / "out" / "images" / im["file_name"]))
        x, y = im["offset_x"], im["offset_y"]
        src = sources[im["source_image_id"]]
        if im["source_file_name"] == "sub/big.png":  # PNG: the tile holds the very pixels
            np.testing.assert_array_equal(tile, src[y:y + im["height"], x:x + im["width"]])
        assert tile.shape == (im["height"], im["width"], 3)
    for a in out["annotations"]:
        im = next(i for i in out["images"] if i["id"] == a["image_id"])
        orig = originals[a["source_annotation_id"]]
        bx, by, bw, bh = a["bbox"]
        ox, oy, ow, oh = orig["bbox"]
        # every tile box is the original clipped to the tile, in the tile's pixels
        assert bx + im["offset_x"] == pytest.approx(max(ox, im["offset_x"]))
        assert by + im["offset_y"] == pytest.approx(max(oy, im["offset_y"]))
        assert bw * bh >= 0.5 * ow * oh - 1e-9 and a["category_id"] == orig["category_id"]
    names = sorted(im["file_name"] for im in out["images"])
    assert "sub/big_x0_y0.png" in names and "tiny_x0_y0.png" in names
    # every original box is in some tile whole
    whole = {a["source_annotation_id"] for a in out["annotations"]
             if a["bbox"][2:] == originals[a["source_annotation_id"]]["bbox"][2:]}
    assert whole == set(originals)


def test_images_sharing_a_stem_get_distinct_tiles(tmp_path):
    ann, imgs = _write_dataset(tmp_path, [("a.png", 40, 40), ("a.jpg", 40, 40)], [])
    slice_coco(ann, imgs, tmp_path / "out", size=32, overlap=0.0)
    names = {im["file_name"] for im in json.loads((tmp_path / "out/annotations.json").read_text())["images"]}
    assert {"a_png_x0_y0.png", "a_jpg_x0_y0.png"} <= names and len(names) == 8


# ---------------------------------------------------------------------------------------- CLI
def test_cli_slices_and_names_the_result(cli, tmp_path):
    ann, imgs = _write_dataset(tmp_path, [("big.png", 130, 64)], [(0, [10.0, 10.0, 20.0, 20.0])])
    code, out, err = cli("data", "slice", ann, "--images", imgs, "--size", "64", "--overlap", "0.5",
                         "--out", tmp_path / "tiles", "--no-keep-empty")
    assert code == 0, err
    assert "annotations.json" in out and f"coco:{tmp_path / 'tiles'}/annotations.json" in out.replace("\n", "")
    data = json.loads((tmp_path / "tiles/annotations.json").read_text())
    assert len(data["images"]) == 1  # only the tile holding the box (it is in one tile whole)
    assert (tmp_path / "tiles/.hybridvision").is_file()
    # running again into the folder it made is allowed
    code, _, err = cli("data", "slice", ann, "--images", imgs, "--size", "64", "--out", tmp_path / "tiles")
    assert code == 0, err


@pytest.mark.parametrize("args,message", [
    (["--size", "16"], "--size 16: use a tile side in [32, 8192]"),
    (["--size", "64", "--overlap", "1"], "--overlap 1: use a fraction of a tile in [0, 0.9]"),
    (["--size", "64", "--overlap", "-0.1"], "--overlap -0.1"),
    (["--size", "64", "--overlap", "nan"], "--overlap nan"),
    # the cap predict --tile-overlap has (one rule): not only a step under 1 pixel is refused
    (["--size", "64", "--overlap", "0.999"], "--overlap 0.999: use a fraction of a tile in [0, 0.9]"),
    (["--size", "4096", "--overlap", "0.95"], "--overlap 0.95: use a fraction of a tile in [0, 0.9]"),
    (["--size", "64", "--min-visible", "0"], "--min-visible 0.0: use a fraction of a box's area in (0, 1]"),
    (["--size", "64", "--min-visible", "1.5"], "--min-visible 1.5"),
])
def test_cli_refuses_bad_options_in_one_line(cli, tmp_path, args, message):
    ann, imgs = _write_dataset(tmp_path, [("big.png", 70, 70)], [])
    code, _, err = cli("data", "slice", ann, "--images", imgs, *args, "--out", tmp_path / "tiles")
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "tiles").exists()


def test_cli_refuses_a_users_folder_and_bad_inputs(cli, tmp_path):
    ann, imgs = _write_dataset(tmp_path, [("big.png", 70, 70)], [(0, [1.0, 1.0, 5.0, 5.0])])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = cli("data", "slice", ann, "--images", imgs, "--size", "64", "--out", mine)
    assert code == 2 and "non-empty folder that hybridvision did not create" in err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    code, _, err = cli("data", "slice", ann, "--images", imgs, "--size", "64", "--out", mine, "--exist-ok")
    assert code == 0, err
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "annotations.json").is_file()
    code, _, err = cli("data", "slice", ann, "--images", imgs, "--size", "64", "--out", imgs / "tiles")
    assert code == 2 and "inside the input folder" in err
    code, _, err = cli("data", "slice", tmp_path / "nope.json", "--images", imgs, "--size", "64",
                       "--out", tmp_path / "t2")
    assert code == 2 and "nope.json: not found" in err
    # a record whose size differs from its image: the dataset check's line, nothing written
    data = json.loads(ann.read_text())
    data["images"][0]["width"] = 90
    ann.write_text(json.dumps(data))
    code, _, err = cli("data", "slice", ann, "--images", imgs, "--size", "64", "--out", tmp_path / "t3")
    assert code == 2 and "image is 70x70 but the record says 90x70" in err and "Traceback" not in err
    assert not (tmp_path / "t3").exists()


def test_library_checks_options_too(tmp_path):
    ann, imgs = _write_dataset(tmp_path, [("big.png", 70, 70)], [])
    with pytest.raises(UserInputError, match="--size 64.0"):
        slice_coco(ann, imgs, tmp_path / "o", size=64.0)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="--overlap True"):
        slice_coco(ann, imgs, tmp_path / "o", size=64, overlap=True)


# ------------------------------------------------------------------------------- training on tiles
def test_two_step_training_on_sliced_data(tmp_path):
    from hybridvision.config import TrainConfig
    from hybridvision.engine.trainer import train

    boxes = [(i, [float(10 + 37 * k % 150), float(8 + 23 * k % 90), 14.0, 12.0]) for i in range(2) for k in range(6)]
    ann, imgs = _write_dataset(tmp_path, [("a.png", 180, 120), ("b.png", 180, 120)], boxes)
    summary = slice_coco(ann, imgs, tmp_path / "tiles", size=64, overlap=0.2)
    cfg = TrainConfig(model="fcos_demo", data=f"coco:{summary.annotation_file},{summary.images_dir}",
                      image_size=64, epochs=1, max_steps=2, batch_size=4, out=str(tmp_path / "run"),
                      progress=False, device="cpu", warmup_steps=0)
    result = train(cfg)
    assert result.evaluation["metrics"]["AP"] >= 0
    assert (tmp_path / "run/checkpoints/last.safetensors").is_file()
