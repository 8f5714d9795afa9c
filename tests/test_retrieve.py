"""`hybridvision retrieve`: ranks a gallery for a sketch, caches the gallery index and reuses it
while nothing changed, rebuilds it when a gallery file changes, writes the grid; bad input gets
one line."""

from __future__ import annotations

import time

import pytest
from PIL import Image

from hybridvision.api import retrieve
from hybridvision.data.builtin.bimodal import make_bimodal
from hybridvision.engine.checkpoint import save_checkpoint
from hybridvision.errors import UserInputError
from hybridvision.factory import create_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieve")
    make_bimodal(root / "data", sketches=2, photos=3, size=32)
    model = create_model("sbir_resnet26", num_classes=27, width=0.25, hidden=32, embed_dim=16)
    weights = save_checkpoint(root, "w", model, extra={
        "model": "sbir_resnet26", "num_classes": 27, "task": "sbir", "image_size": 32,
        "model_kwargs": {"width": 0.25, "hidden": 32, "embed_dim": 16}})
    return root, weights


def test_ranks_caches_and_draws_the_grid(setup, tmp_path):
    root, weights = setup
    gallery = root / "data" / "photos"
    query = root / "data" / "sketches" / "fish" / "0000.png"
    t = time.perf_counter()
    first = retrieve(query, weights=weights, gallery=gallery, k=5, cache=tmp_path / "cache")
    built = time.perf_counter() - t
    t = time.perf_counter()
    second = retrieve(query, weights=weights, gallery=gallery, k=5, cache=tmp_path / "cache",
                      out=tmp_path / "grid.png")
    reused = time.perf_counter() - t
    assert not first["cached"] and second["cached"] and first["gallery_size"] == 36 * 3
    assert [r["file"] for r in first["results"]] == [r["file"] for r in second["results"]]
    assert [r["rank"] for r in first["results"]] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in first["results"]]
    assert scores == sorted(scores, reverse=True)
    grid = Image.open(tmp_path / "grid.png")
    assert grid.width > 5 * 100 and grid.mode == "RGB"
    print(f"index built in {built:.2f} s, reused in {reused:.2f} s")
    # a changed gallery file makes a new index
    touched = gallery / "fish" / "0001.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(touched)
    assert not retrieve(query, weights=weights, gallery=gallery, k=5, cache=tmp_path / "cache")["cached"]


def test_bad_retrieval_input_gets_one_line(setup, tmp_path):
    root, weights = setup
    query = root / "data" / "sketches" / "fish" / "0000.png"
    with pytest.raises(UserInputError, match="--gallery"):
        retrieve(query, weights=weights, gallery=tmp_path / "none")
    with pytest.raises(UserInputError, match="--query"):
        retrieve(tmp_path / "q.png", weights=weights, gallery=root / "data" / "photos")
    with pytest.raises(UserInputError, match="-k 0"):
        retrieve(query, weights=weights, gallery=root / "data" / "photos", k=0)
    # the output may not replace an input
    with pytest.raises(UserInputError):
        retrieve(query, weights=weights, gallery=root / "data" / "photos", out=query)
