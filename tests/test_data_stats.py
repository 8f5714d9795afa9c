"""`hybridvision data stats`: the numbers of a small COCO file the test writes (counts, COCO size
buckets, normalised centres), its files and summary, and its refusals (bad file, --out that is
an input or someone else's folder) as one line with exit 2."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from hybridvision.evaluation.analysis import dataset_stats
from hybridvision.plots import plot_box_centres, plot_box_sizes, plot_class_counts


def _coco(tmp_path):
    """3 images of 200×100; boxes with sides 10 (small), 50 and 60 (medium), 100 (large);
    one crowd box; one image without boxes; a category without boxes."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 200, "height": 100} for i in (1, 2, 3)]
    boxes = [(1, 1, [0, 0, 10, 10]), (1, 2, [100, 50, 50, 50]), (2, 1, [40, 20, 60, 60]),
             (2, 1, [50, 0, 100, 100])]
    anns = [{"id": k + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3]}
            for k, (im, c, b) in enumerate(boxes)]
    anns[1]["iscrowd"] = 1
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "owl"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    return path


def test_stats_numbers(tmp_path):
    s = dataset_stats(_coco(tmp_path))
    assert (s.images, s.boxes, s.crowd, s.empty_images) == (3, 4, 1, 1)
    assert s.class_counts == {"cat": 3, "dog": 1, "owl": 0}
    assert s.sides.tolist() == [10, 50, 60, 100]
    assert s.buckets == {"small": 0.25, "medium": 0.5, "large": 0.25}
    assert s.centres.tolist() == [[5 / 200, 5 / 100], [125 / 200, 75 / 100], [70 / 200, 50 / 100], [0.5, 0.5]]
    d = s.to_dict()
    assert d["classes"] == 3 and d["side"] == {"min": 10, "median": 55, "max": 100}
    assert len(plot_class_counts(s).axes[0].patches) == 3
    assert sum(p.get_height() for p in plot_box_sizes(s).axes[0].patches) == 4
    centres = plot_box_centres(s).axes[0].images[0].get_array()
    assert centres.sum() == 4 and centres.shape == (50, 50)


def test_stats_cli_writes_files_and_summary(cli, tmp_path, monkeypatch):
    ann = _coco(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("data", "stats", ann)
    assert code == 0, err
    folder = tmp_path / "runs" / "stats" / "ann"  # the default: under runs/, never beside the data
    for name in ("class_counts.png", "box_sizes.png", "box_centres.png"):
        assert Image.open(folder / name).format == "PNG"
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["images"] == 3 and stats["boxes"] == 4 and stats["class_counts"]["cat"] == 3
    assert math.isclose(sum(stats["buckets"].values()), 1.0)
    assert "3 images" in out and "4 boxes" in out and "medium 50 %" in out
    code, _, err = cli("data", "stats", ann)  # again: its own folder is replaced
    assert code == 0, err


@pytest.mark.parametrize("case", ["not_json", "bad_box", "missing", "folder"])
def test_stats_cli_refuses_a_bad_file(cli, tmp_path, case):
    ann = _coco(tmp_path)
    if case == "not_json":
        ann.write_text("{oops")
    elif case == "bad_box":
        coco = json.loads(ann.read_text())
        coco["annotations"][0]["bbox"] = [0, 0, -5, 10]
        ann.write_text(json.dumps(coco))
    elif case == "missing":
        ann = tmp_path / "nope.json"
    else:
        ann = tmp_path
    code, out, err = cli("data", "stats", ann, "--out", tmp_path / "s")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_stats_cli_never_writes_over_an_input_or_a_foreign_folder(cli, tmp_path):
    ann = _coco(tmp_path)
    before = ann.read_bytes()
    for out in (ann, tmp_path):  # the input itself; the folder holding it
        code, _, err = cli("data", "stats", ann, "--out", out)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, _, err = cli("data", "stats", ann, "--out", mine)
    assert code == 2 and "did not create" in err, err
    code, _, err = cli("data", "stats", ann, "--out", mine, "--exist-ok")
    assert code == 0, err
    assert (mine / "notes.txt").read_text() == "keep" and ann.read_bytes() == before
    code, out, _ = cli("data", "stats", "--help")
    assert code == 0 and "Usage" in out
