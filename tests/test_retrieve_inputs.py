"""`hybridvision retrieve` with inputs as users have them: an existing --out file is kept unless
--exist-ok, a tampered gallery cache is rebuilt (never trusted), and the gallery is listed as
training lists class folders (symlinked folders followed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from hybridvision.api import retrieve
from hybridvision.data.builtin.bimodal import make_bimodal
from hybridvision.engine.checkpoint import save_checkpoint
from hybridvision.factory import create_model
from hybridvision.fileio import atomic_save_tensors
from hybridvision.retrieval.index import gallery_files


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieve_inputs")
    make_bimodal(root / "data", sketches=1, photos=1, size=32)
    torch.manual_seed(0)
    model = create_model("sbir_resnet26", num_classes=27, width=0.25, hidden=32, embed_dim=16)
    weights = save_checkpoint(root, "w", model, extra={
        "model": "sbir_resnet26", "num_classes": 27, "task": "sbir", "image_size": 32,
        "model_kwargs": {"width": 0.25, "hidden": 32, "embed_dim": 16}})
    return root / "data", weights


def _query(data: Path) -> Path:
    return data / "sketches" / "fish" / "0000.png"


def test_an_existing_out_file_is_kept_without_exist_ok(cli, setup, tmp_path):
    """Before: `retrieve --out F` replaced the user's F (exit 0)."""
    data, weights = setup
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's picture")
    args = ["retrieve", "--query", _query(data), "--weights", weights, "--gallery", data / "photos", "-k", "3",
            "--cache", tmp_path / "cache", "--out", mine, "--device", "cpu"]
    code, _, err = cli(*args)
    assert code == 2 and err.startswith(f"error: --out {mine}") and "--exist-ok" in err, err
    assert len(err.strip().splitlines()) == 1 and mine.read_bytes() == b"the user's picture"
    code, _, err = cli(*args, "--exist-ok")
    assert code == 0, err
    assert mine.read_bytes().startswith(b"\x89PNG")


def _cache_file(cache: Path) -> Path:
    (path,) = cache.glob("index-*.safetensors")
    return path


def _tamper(path: Path, emb: torch.Tensor) -> None:
    """Rewrite the cache's embeddings, keeping its metadata (fingerprint and file list)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    atomic_save_tensors(path, {"embeddings": emb}, meta)


@pytest.mark.parametrize("kind", ["another width", "nan", "fewer rows", "not unit", "3-d"])
def test_a_tampered_gallery_cache_is_rebuilt_not_trusted(setup, tmp_path, kind):
    """Before: a cache of another width was a traceback; NaN scores and a cache with fewer rows than
    photos were ranked as if right."""
    data, weights = setup
    kw = dict(weights=weights, gallery=data / "photos", k=36, cache=tmp_path / "cache", device="cpu")
    first = retrieve(_query(data), **kw)
    path = _cache_file(tmp_path / "cache")
    with safe_open(str(path), framework="pt") as f:
        good = f.get_tensor("embeddings")  # [36, 16]
    bad = {"another width": torch.nn.functional.normalize(torch.rand(36, 8), dim=1),
           "nan": good.clone().fill_(float("nan")),
           "fewer rows": good[:20].clone(),
           "not unit": good * 1e6,
           "3-d": good[None].clone()}[kind]
    _tamper(path, bad)
    again = retrieve(_query(data), **kw)
    assert not again["cached"] and again["results"] == first["results"]
    assert all(r["score"] == r["score"] for r in again["results"])  # no NaN
    with safe_open(str(path), framework="pt") as f:  # the cache is right again
        assert torch.equal(f.get_tensor("embeddings"), good)
    assert retrieve(_query(data), **kw)["cached"]


def test_symlinked_class_folders_are_followed_as_in_training(setup, tmp_path):
    """Before: a class folder that is a link (training follows it) was left out of the gallery."""
    from hybridvision.data.sketch_readers import find_image_folder

    data, weights = setup
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for cls in ("fish", "house"):
        (elsewhere / cls).mkdir()
        (elsewhere / cls / "0000.png").write_bytes((data / "photos" / cls / "0000.png").read_bytes())
        os.symlink(elsewhere / cls, gallery / cls, target_is_directory=True)
    os.symlink(gallery, gallery / "fish" / "loop", target_is_directory=True)  # a link to an ancestor
    (gallery / ".hidden").mkdir()
    (gallery / ".hidden" / "x.png").write_bytes((data / "photos" / "fish" / "0000.png").read_bytes())
    samples, classes = find_image_folder(gallery)  # what training reads
    assert classes == ["fish", "house"] and len(samples) == 2
    rel = [p.relative_to(gallery).as_posix() for p in gallery_files(gallery)]
    assert rel == ["fish/0000.png", "house/0000.png"]
    res = retrieve(_query(data), weights=weights, gallery=gallery, k=2, cache=tmp_path / "cache", device="cpu")
    assert res["gallery_size"] == 2 and {r["file"] for r in res["results"]} == set(rel)


def test_a_model_with_nan_weights_is_refused_with_one_line(setup, tmp_path):
    from hybridvision.errors import UserInputError

    data, weights = setup
    model = create_model("sbir_resnet26", num_classes=27, width=0.25, hidden=32, embed_dim=16)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    info = json.loads(weights.with_suffix(".json").read_text())
    broken = save_checkpoint(tmp_path, "nan", model, extra={k: info[k] for k in
                                                            ("model", "num_classes", "task", "image_size",
                                                             "model_kwargs")})
    with pytest.raises(UserInputError, match=r"nan\.safetensors: .*not finite") as e:
        retrieve(_query(data), weights=broken, gallery=data / "photos", cache=tmp_path / "cache", device="cpu")
    assert "\n" not in str(e.value)
