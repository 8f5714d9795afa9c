"""``bench`` with torchvision peers that need their own input size: an SSD runs at its fixed size
and the output says so; a ViT is built for the bench size; a classifier that cannot run on the
bench size is refused in one line naming the size it needs (each was a traceback)."""

from __future__ import annotations

import json

import pytest

FAST = ("--runs", "1", "--warmup", "0", "--no-memory")


def _one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_ssdlite_runs_at_its_fixed_size_and_says_so(cli, tmp_path):
    out = tmp_path / "b.json"
    code, stdout, err = cli("bench", "fcos_demo", "torchvision:ssdlite320_mobilenet_v3_large", "--size", "64",
                            *FAST, "--out", out)
    assert code == 0, err
    assert "torchvision:ssdlite320_mobilenet_v3_large *" in stdout
    assert "* torchvision:ssdlite320_mobilenet_v3_large ran at 320×320, the fixed size it resizes every input " \
           "to (the bench size is 64×64)" in stdout
    ours, ssd = json.loads(out.read_text())["rows"]
    assert (ours["size"], ssd["size"]) == (64, 320) and "note" not in ours and "320×320" in ssd["note"]


def test_vit_runs_at_the_bench_size(cli):
    code, stdout, err = cli("bench", "resnet26", "torchvision:vit_b_16", "--size", "64", *FAST)
    assert code == 0, err
    assert "torchvision:vit_b_16" in stdout and "ran at" not in stdout


@pytest.mark.parametrize("peer, size, expected", [
    ("torchvision:vit_b_16", "65", "its input side must be a multiple of its patch size 16, not --size 65; "
                                   "pass --size 64 or 80"),
    ("torchvision:inception_v3", "64", "cannot run on 64×64 inputs"),
    ("torchvision:alexnet", "32", "pass --size 224, the input size of torchvision's weights for it (at least 63)"),
], ids=["vit-patch", "inception-min", "alexnet-min"])
def test_a_peer_that_cannot_run_on_the_size_is_one_line(cli, peer, size, expected):
    code, stdout, err = cli("bench", "resnet26", peer, "--size", size, *FAST)
    assert code == 2 and _one_line(err), err
    assert err.startswith(f"error: {peer}: ") and expected in err, err
    if peer.endswith("inception_v3"):
        assert "pass --size 299" in err and "(at least 75)" in err
