"""Bimodal retrieval data: the folders layout (Flickr15k's), the zero-shot split file with its
errors, and the per-epoch pairs and triplets (labels right, half positive, seeded)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hybridvision.data.sbir import PairEpoch, TripletEpoch, read_bimodal, resolve_bimodal
from hybridvision.errors import DataError, UserInputError


def _tree(root, classes, n, mode):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new(mode, (20, 20), 255 if mode == "L" else (i * 40, 0, 0)).save(root / c / f"{i + 1}.png")


@pytest.fixture
def folders(tmp_path):
    _tree(tmp_path / "sk", ["cat", "dog", "owl"], 4, "L")
    _tree(tmp_path / "ph", ["cat", "dog", "owl"], 3, "RGB")
    (tmp_path / "unseen.txt").write_text("# zero-shot\nowl\n")
    return tmp_path


def test_folders_spec_reads_both_trees_and_the_split(folders):
    data = resolve_bimodal(f"folders:{folders / 'sk'},{folders / 'ph'},{folders / 'unseen.txt'}")
    assert data.classes == ["cat", "dog", "owl"] and data.unseen == ["owl"]
    assert len(data.sketches) == 12 and len(data.photos) == 9
    seen, unseen = data.subset("seen"), data.subset("unseen")
    assert seen.classes == ["cat", "dog"] and len(seen.sketches) == 8 and {y for _, y in seen.photos} == {0, 1}
    assert unseen.classes == ["owl"] and {y for _, y in unseen.sketches} == {0}


def test_bad_layouts_name_the_file_and_the_fix(folders):
    (folders / "unseen.txt").write_text("owl\nbat\n")
    with pytest.raises(DataError, match=r"unseen.txt line 2: class 'bat'"):
        read_bimodal(folders / "sk", folders / "ph", folders / "unseen.txt")
    _tree(folders / "sk", ["emu"], 1, "L")
    with pytest.raises(DataError, match="has no photos for emu"):
        read_bimodal(folders / "sk", folders / "ph")
    with pytest.raises(UserInputError, match="folders:SKETCH_DIR,PHOTO_DIR"):
        resolve_bimodal("folders:only_one")


def test_pairs_and_triplets_per_epoch(folders):
    data = read_bimodal(folders / "sk", folders / "ph")
    pairs = PairEpoch(data, epoch=0, seed=3)
    photo_labels = np.array([y for _, y in data.photos])
    sketch_labels = np.array([y for _, y in data.sketches])
    assert pairs.same.sum() == 6  # half of 12
    assert ((photo_labels[pairs.partner] == sketch_labels) == pairs.same).all()
    sketch, photo, same, ys, yp = pairs[0]
    assert sketch.shape == (1, 20, 20) and photo.shape == (3, 20, 20) and (ys == yp) == same
    again, other = PairEpoch(data, epoch=0, seed=3), PairEpoch(data, epoch=1, seed=3)
    assert (again.partner == pairs.partner).all() and (again.same == pairs.same).all()
    assert not ((other.partner == pairs.partner).all() and (other.same == pairs.same).all())
    trip = TripletEpoch(data, epoch=0, seed=3)
    assert (photo_labels[trip.positive] == sketch_labels).all()
    assert (photo_labels[trip.negative] != sketch_labels).all()


def test_the_packaged_sketchy_split_is_named_like_a_file(tmp_path):
    from hybridvision.data.sbir import PACKAGED_SPLITS

    unseen = [c for c in PACKAGED_SPLITS["sketchy"].read_text().splitlines() if c and not c.startswith("#")]
    assert len(unseen) == 21 and "bat" in unseen
    _tree(tmp_path / "sk", [*unseen, "zebra"], 1, "L")
    _tree(tmp_path / "ph", [*unseen, "zebra"], 1, "RGB")
    data = resolve_bimodal(f"folders:{tmp_path / 'sk'},{tmp_path / 'ph'},sketchy")
    assert data.unseen == unseen and data.subset("seen").classes == ["zebra"]
