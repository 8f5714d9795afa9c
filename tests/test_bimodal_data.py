"""The built-in bimodal retrieval data: layout, determinism, prefix stability, the zero-shot split,
and a foreign folder left untouched."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hybridvision.data.builtin.bimodal import BIMODAL_CLASSES, UNSEEN_CLASSES, ensure_bimodal, make_bimodal
from hybridvision.errors import UserInputError


def test_layout_split_and_determinism(tmp_path):
    m = make_bimodal(tmp_path / "a", sketches=2, photos=3, size=32, seed=1)
    root = tmp_path / "a"
    assert sorted(p.name for p in (root / "photos").iterdir()) == sorted(BIMODAL_CLASSES)
    photo = Image.open(root / "photos" / "fish" / "0002.png")
    sketch = Image.open(root / "sketches" / "fish" / "0001.png")
    assert photo.mode == "RGB" and photo.size == (32, 32) and sketch.mode == "L"
    assert (root / "unseen_classes.txt").read_text().split() == list(UNSEEN_CLASSES) == m["unseen_classes"]
    assert len(UNSEEN_CLASSES) == 9 and not set(UNSEEN_CLASSES) - set(BIMODAL_CLASSES)
    # same seed → same pixels; more images per class → the first ones unchanged (prefix-stable)
    make_bimodal(tmp_path / "b", sketches=3, photos=4, size=32, seed=1)
    for rel in ("photos/fish/0002.png", "sketches/house/0001.png"):
        assert np.array_equal(np.asarray(Image.open(root / rel)), np.asarray(Image.open(tmp_path / "b" / rel)))
    make_bimodal(tmp_path / "c", sketches=1, photos=1, size=32, seed=2)  # another seed, other pixels
    rel = "photos/fish/0000.png"
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "c" / rel)), np.asarray(Image.open(root / rel)))
    # ensure reuses a generation of exactly these settings, and regenerates one of more images per
    # class (the reader takes every image of the folders: it would train on more than asked for)
    stamp = (root / "manifest.json").stat().st_mtime_ns
    assert ensure_bimodal(root, sketches=2, photos=3, size=32, seed=1)["photos_per_class"] == 3
    assert (root / "manifest.json").stat().st_mtime_ns == stamp  # reused
    assert ensure_bimodal(root, sketches=1, photos=2, size=32, seed=1)["photos_per_class"] == 2
    assert len(list((root / "photos" / "fish").glob("*.png"))) == 2


def test_a_users_folder_is_never_replaced(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(UserInputError, match="not a bimodal dataset"):
        make_bimodal(tmp_path, sketches=1, photos=1, size=32)
    assert (tmp_path / "mine.txt").read_text() == "keep"
