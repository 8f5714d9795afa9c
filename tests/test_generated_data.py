"""One rule for every generated dataset (amounts, sketches, bimodal): a file the generator did not
write, or one whose SHA-256 differs from what it wrote, is the user's and is never replaced or
deleted by a regeneration; Ctrl-C while `data make` starts ends with exit 130, no traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybridvision.data.builtin.amounts import make_amounts
from hybridvision.data.builtin.bimodal import ensure_bimodal, make_bimodal
from hybridvision.data.builtin.sketches import make_sketches
from hybridvision.errors import UserInputError


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _replace_png(path: Path) -> None:
    """The user's own picture saved under a generated name."""
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(path)


def test_regenerating_bimodal_keeps_a_photo_the_user_replaced(cli, tmp_path):
    """Before: the replaced photo was silently overwritten (only added files counted as the user's)."""
    root = tmp_path / "bimodal"
    make_bimodal(root, sketches=1, photos=1, size=32)
    _replace_png(root / "photos" / "fish" / "0000.png")
    before = _files(root)
    with pytest.raises(UserInputError, match=r"photos/fish/0000\.png changed since the dataset was generated "
                                             r".*SHA-256.*move it out.*or delete") as e:
        make_bimodal(root, sketches=1, photos=2, size=32)
    assert "\n" not in str(e.value)
    with pytest.raises(UserInputError, match=r"photos/fish/0000\.png"):  # training asking for more
        ensure_bimodal(root, sketches=1, photos=2, size=32)
    code, _, err = cli("data", "make", "bimodal", "--out", root, "--photos", "2", "--sketches", "1", "--size", "32")
    assert code == 2 and "photos/fish/0000.png" in err and len(err.strip().splitlines()) == 1, err
    assert _files(root) == before and sorted(p.name for p in tmp_path.iterdir()) == ["bimodal"]


def test_regenerating_bimodal_keeps_an_added_file_and_replaces_an_untouched_generation(tmp_path):
    root = tmp_path / "bimodal"
    make_bimodal(root, sketches=1, photos=1, size=32)
    assert make_bimodal(root, sketches=1, photos=2, size=32)["photos_per_class"] == 2  # ours: replaced
    (root / "photos" / "fish" / "mine.png").write_bytes((root / "photos" / "fish" / "0000.png").read_bytes())
    with pytest.raises(UserInputError, match=r"photos/fish/mine\.png was not written by the generator"):
        make_bimodal(root, sketches=1, photos=1, size=32)
    assert (root / "photos" / "fish" / "mine.png").is_file()


def test_regenerating_amounts_keeps_a_replaced_image(tmp_path):
    """Before: amounts checked only its JSON and label files; a replaced PNG was overwritten."""
    root = tmp_path / "amounts"
    make_amounts(root, n_train=2, n_val=1, image_size=32)
    _replace_png(root / "train" / "images" / "000001.png")
    before = _files(root)
    with pytest.raises(UserInputError, match=r"train/images/000001\.png changed since the dataset was generated"):
        make_amounts(root, n_train=3, n_val=1, image_size=32)
    assert _files(root) == before


def test_regenerating_sketches_keeps_an_edited_file(tmp_path):
    root = tmp_path / "sketches"
    make_sketches(root, per_class=1)
    edited = root / "fish.ndjson"
    edited.write_text(edited.read_text() + '{"word": "fish", "drawing": [[[0, 9], [0, 9]]]}\n')
    before = _files(root)
    with pytest.raises(UserInputError, match=r"fish\.ndjson changed since the dataset was generated"):
        make_sketches(root, per_class=2)
    assert _files(root) == before
    edited.unlink()  # a generated file removed: nothing of the user's to lose
    assert make_sketches(root, per_class=2)["per_class"] == 2
    assert "fish.ndjson" in json.loads((root / "manifest.json").read_text())["sha256"]


def test_ctrl_c_while_data_make_starts_is_exit_130_without_traceback(tmp_path):
    """Before: Ctrl-C in the seconds the command spends importing torch printed a long traceback
    (or aborted the process from inside torch's native start-up)."""
    out = tmp_path / "amounts"
    proc = subprocess.Popen([str(Path(sys.executable).with_name("hybridvision")), "data", "make", "amounts",
                             "--out", str(out), "--train", "2", "--val", "1", "--image-size", "32"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(1.0)  # inside the imports (they take seconds)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-800:]
    assert "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no dataset, no half-written folder
