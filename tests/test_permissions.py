"""Outputs that cannot be written, checked as an unprivileged user (the tests otherwise run as
root, whom no permission stops): every verb refuses a folder it cannot write in with one
``error:`` line naming the path, exit 2, before any work — and writes where it may.

As root, the commands run under ``setpriv`` as ``nobody`` keeping only CAP_DAC_READ_SEARCH (to read
the interpreter and the code wherever they are installed, e.g. under ``/root``; writing obeys the
permissions); with ``runuser`` (no capability kept) where there is no setpriv. Neither: the test
fails under ``CI=true`` and is skipped elsewhere. One child process runs every command in turn
(one interpreter start), each with its stdout and stderr captured.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Runs each argv of sys.argv[1] through hybridvision's CLI in this one process; prints
# [[exit code, stdout, stderr], ...] as JSON on the real stdout.
RUNNER = r"""
import json, os, sys, tempfile
from hybridvision.cli import main

results, real_out = [], os.dup(1)
for argv in json.loads(sys.argv[1]):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
        sys.argv = ["hybridvision", *argv]
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            code = -1
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        out.seek(0), err.seek(0)
        results.append([code, out.read().decode(errors="replace"), err.read().decode(errors="replace")])
os.write(real_out, json.dumps(results).encode())
"""


def _unprivileged() -> list[str]:
    """The command prefix that runs a program as an unprivileged user ([] if we are one)."""
    if os.geteuid() != 0:
        return []
    nobody = pwd.getpwnam("nobody")
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                "--inh-caps=-all,+dac_read_search", "--ambient-caps=-all,+dac_read_search"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    message = "running as root and neither setpriv nor runuser (util-linux) is installed"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}: install util-linux")
    pytest.skip(message)


def _run_unprivileged(commands: list[list[str]], tmp: Path) -> list[tuple[int, str, str]]:
    env = {**os.environ, "HOME": str(tmp / "w"), "TMPDIR": str(tmp / "w"), "MPLCONFIGDIR": str(tmp / "w"),
           "OMP_NUM_THREADS": "1"}
    env.pop("COLUMNS", None)
    proc = subprocess.run([*_unprivileged(), sys.executable, "-c", RUNNER, json.dumps(commands)], cwd=tmp / "w",
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [tuple(r) for r in json.loads(proc.stdout)]


@pytest.fixture
def tree():
    """A folder readable by everyone and writable by no one but root, holding the inputs, a run
    folder (not writable either) and ``w/``, writable by everyone. Not under pytest's tmp_path:
    that lies in a folder only its owner may enter."""
    base = Path(tempfile.mkdtemp(prefix="hv-perm-"))
    try:
        base.chmod(0o755)
        (base / "w").mkdir(mode=0o777)
        (base / "w").chmod(0o777)
        gt = {"images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8], "area": 64,
                               "iscrowd": 0}],
              "categories": [{"id": 1, "name": "thing"}]}
        (base / "gt.json").write_text(json.dumps(gt))
        (base / "dt.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8],
                                                   "score": 0.9}]))
        from PIL import Image

        Image.new("RGB", (20, 20)).save(base / "a.png")
        (base / "w.safetensors").write_bytes(b"not read: the output is checked first")
        run = base / "run" / "checkpoints"
        run.mkdir(parents=True)
        (base / "run" / "config.yaml").write_text("model: fcos_demo\n")
        (run / "last.json").write_text("{}")
        for p in [base, *base.rglob("*")]:  # not writable by its owner either (a run as a plain user)
            if p != base / "w":
                p.chmod(0o555 if p.is_dir() else 0o444)
        yield base
    finally:
        for p in [base, *base.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_outputs_that_cannot_be_written_are_one_line_errors(tree):
    ro = tree  # not writable by the user the commands run as
    gt, dt = str(tree / "gt.json"), str(tree / "dt.json")
    refused = {  # argv → what the one error line must say
        ("train", "--out", str(ro / "new_run"), "--device", "cpu"): f"{ro} is not writable",
        ("train", "--resume", "--out", str(ro / "run")): f"{ro / 'run'} is not writable",
        ("eval", "--gt", gt, "--dt", dt, "--out", str(ro / "m.json")): f"cannot write in {ro}",
        ("eval", "--gt", gt, "--dt", dt, "--out", str(ro / "evaluation")): f"cannot write in {ro}",
        ("predict", str(tree / "a.png"), "--weights", str(tree / "w.safetensors"), "--out", str(ro / "p")):
            f"cannot write in {ro}",
        ("bench", "fcos_demo", "--size", "64", "--runs", "1", "--warmup", "0", "--no-memory",
         "--out", str(ro / "b.json")): f"cannot write in {ro}",
        ("export", "--model", "fcos_demo", "--size", "64", "--no-check", "--out", str(ro / "m.onnx")):
            f"cannot write in {ro}",
        ("data", "make", "amounts", "--out", str(ro / "amounts")): f"cannot write in {ro}",
        ("data", "stats", gt, "--out", str(ro / "stats")): f"cannot write in {ro}",
        ("explain", "--weights", str(tree / "w.safetensors"), "--image", str(tree / "a.png"), "--point", "1,1",
         "--out", str(ro / "x.png")): f"cannot write in {ro}",
        ("demo", "--out", str(ro / "demo")): f"{ro} is not writable",
    }
    allowed = ("eval", "--gt", gt, "--dt", dt, "--out", str(tree / "w" / "m.json"))
    results = _run_unprivileged([list(a) for a in refused] + [list(allowed)], tree)
    for (argv, expected), (code, _, err) in zip(refused.items(), results):
        assert code == 2, (argv, code, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (argv, err)
        assert expected in err and ("not writable" in err or "cannot write" in err), (argv, err)
    code, _, err = results[-1]
    assert code == 0, err  # the same user writes where it may: the refusals above are the permissions
    assert json.loads((tree / "w" / "m.json").read_text())["AP"] == pytest.approx(1.0)
    assert sorted(p.name for p in tree.iterdir()) == ["a.png", "dt.json", "gt.json", "run", "w", "w.safetensors"]
