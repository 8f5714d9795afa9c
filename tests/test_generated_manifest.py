"""One manifest rule for every generated dataset (amounts, sketches, bimodal), kept in
``data/builtin/generated.py``: the same refusal of a folder that is not a generation, the same
tolerance of a manifest that is unreadable or has fields of the wrong type, and the same reuse
rule (``ensure_*`` regenerates a generation that lost one of its files)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hybridvision.data.builtin.amounts import ensure_amounts, make_amounts
from hybridvision.data.builtin.bimodal import ensure_bimodal, make_bimodal
from hybridvision.data.builtin.sketches import ensure_sketches, make_sketches
from hybridvision.errors import UserInputError

# name -> (make, ensure, small settings, a generated file, a count field of its manifest)
SETS = {
    "amounts": (make_amounts, ensure_amounts, dict(n_train=2, n_val=1, image_size=32),
                "train/images/000000.png", None),
    "sketches": (make_sketches, ensure_sketches, dict(per_class=1), "fish.ndjson", "per_class"),
    "bimodal": (make_bimodal, ensure_bimodal, dict(sketches=1, photos=1, size=32), "photos/fish/0000.png",
                "photos_per_class"),
}


def _refusal(root: Path, name: str) -> str:
    article = "an" if name == "amounts" else "a"
    return (rf"^{re.escape(str(root))}: is not {article} {name} dataset made by hybridvision; regenerating "
            rf"would delete its files — move it out, .*delete {re.escape(str(root))}")


@pytest.mark.parametrize("name", SETS)
def test_ensure_regenerates_a_generation_that_lost_a_file(tmp_path, name):
    """Before: amounts and bimodal reused such a folder (only sketches checked its files were there),
    and training then read a dataset with an image missing."""
    make, ensure, kw, rel, _ = SETS[name]
    root = tmp_path / name
    make(root, **kw)
    (root / rel).unlink()
    ensure(root, **kw)
    assert (root / rel).is_file()
    before = (root / rel).read_bytes()
    ensure(root, **kw)  # complete now: reused as it is
    assert (root / rel).read_bytes() == before


@pytest.mark.parametrize("name", SETS)
def test_a_folder_that_is_not_a_generation_is_refused_in_one_way(cli, tmp_path, name):
    """Before: three wordings ("exists and is not an amounts dataset; choose another output folder
    or remove it", "not a bimodal dataset …", "is not a sketches dataset …")."""
    make, ensure, kw, _, _ = SETS[name]
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    for fn in (make, ensure):
        with pytest.raises(UserInputError, match=_refusal(root, name)) as e:
            fn(root, **kw)
        assert "\n" not in str(e.value)
    code, _, err = cli("data", "make", name, "--out", root)
    assert code == 2 and f"is not {'an' if name == 'amounts' else 'a'} {name} dataset" in err, err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt"] and (root / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("name", SETS)
def test_an_unreadable_manifest_makes_the_folder_not_ours(tmp_path, name):
    """Before: amounts read its manifest without catching RecursionError, so a manifest nested too
    deeply ended `data make amounts` with a traceback."""
    make, _, kw, _, _ = SETS[name]
    root = tmp_path / name
    root.mkdir()
    (root / "manifest.json").write_text("[" * 100_000)
    with pytest.raises(UserInputError, match=_refusal(root, name)):
        make(root, **kw)
    assert (root / "manifest.json").read_text() == "[" * 100_000


@pytest.mark.parametrize("name", ["sketches", "bimodal"])
def test_a_manifest_field_of_the_wrong_type_means_regenerate(tmp_path, name):
    """Before: `int("many")` in ensure_sketches / ensure_bimodal ended with a ValueError traceback."""
    make, ensure, kw, rel, field = SETS[name]
    root = tmp_path / name
    make(root, **kw)
    man = json.loads((root / "manifest.json").read_text())
    man[field] = "many"
    (root / "manifest.json").write_text(json.dumps(man))
    assert json.loads((root / "manifest.json").read_text())[field] == "many"
    again = ensure(root, **kw)  # the files are the generator's, unedited: regenerated in place
    assert again[field] == 1 and json.loads((root / "manifest.json").read_text())[field] == 1
    assert (root / rel).is_file()
