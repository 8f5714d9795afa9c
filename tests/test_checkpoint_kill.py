"""``kill -9`` while a checkpoint is saved: the run resumes from the last good checkpoint and ends
exactly as an uninterrupted run.

A save renames files into ``checkpoints/`` one after another (``engine/checkpoint.py``: the
previous set linked as ``NAME.prev.*``, then the weights, the optimizer state and the JSON). A
forked child resumes a run stopped after epoch 1 and SIGKILLs itself right after the k-th rename
(or removal) in ``checkpoints/`` of its epoch-2 saves (best, then last); ``train --resume`` then
finishes the run, and its weights and ``metrics.jsonl`` must equal those of a run never stopped.
Plots and the evaluation files are skipped (matplotlib is most of a tiny run's time).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hybridvision.config import TrainConfig
from hybridvision.engine import trainer
from hybridvision.engine.trainer import train

TINY = dict(model="fcos_demo", data="builtin:amounts", data_kwargs=dict(n_train=32, n_val=8, image_size=64),
            image_size=64, epochs=2, batch_size=16, lr=0.01, warmup_steps=1, eval_every=0, progress=False,
            device="cpu", seed=1)

# The file operations in checkpoints/ of the epoch-2 saves of the half run resumed: best (1 weights,
# 2 JSON; no previous best to keep), then last (3-8: 3 links to last.prev.*, each a temp removal
# and a rename; 9 weights, 10 optimizer, 11 JSON; 12-14: the removals of last.prev.*).
N_OPS = 14
TORN = (9, 10)  # last.* from two saves: the previous set is restored


@pytest.fixture(scope="module")
def quick():
    """No plots and no evaluation files: the runs compared are the weights and metrics.jsonl."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "_plot_loss", lambda out: None)
        mp.setattr(trainer, "_write_evaluation", lambda *a, **k: None)
        yield


def _cfg(root, out, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "data_root": str(root), "out": str(out), **kw})


@pytest.fixture(scope="module")
def runs(quick, tiny_amounts, tmp_path_factory):
    """(an uninterrupted run, a run stopped cleanly after epoch 1 of 2)."""
    base = tmp_path_factory.mktemp("kill")
    train(_cfg(tiny_amounts, base / "straight"))
    train(_cfg(tiny_amounts, base / "half"), stop_after=1)
    return base / "straight", base / "half"


def _killed_at(k: int, cfg: TrainConfig, *, resume: bool, killed: bool = True) -> None:
    """Run ``train(cfg)`` in a forked child that SIGKILLs itself right after its k-th file
    operation (rename or removal) in the run's checkpoints/ folder; the child must die so (or,
    ``killed=False``, finish with fewer operations)."""
    ckpt = str(Path(cfg.out, "checkpoints"))
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            count = [0]
            real_replace, real_unlink = os.replace, os.unlink

            def counted(real):
                def op(path, *a, **kw):
                    real(path, *a, **kw)
                    target = a[0] if real is real_replace else path
                    if os.path.dirname(os.path.abspath(target)) == ckpt:
                        count[0] += 1
                        if count[0] == k:
                            os.kill(os.getpid(), signal.SIGKILL)
                return op

            os.replace, os.unlink = counted(real_replace), counted(real_unlink)
            train(cfg, resume=resume)
        finally:
            os._exit(3)  # not killed: fewer operations than k
    _, status = os.waitpid(pid, 0)
    if not killed:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3, f"killed at op {k}: {status}"
        return
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"not killed at op {k}: {status}"


def _same_run(a: Path, b: Path) -> None:
    wa, wb = (load_file(str(r / "checkpoints/last.safetensors")) for r in (a, b))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[key], wb[key]) for key in wa)
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    assert json.loads((b / "checkpoints/best.json").read_text())["epoch"] == 2


def _killed_then_resumed(k, runs, root, tmp_path, cli) -> tuple[Path, str]:
    """A copy of the half run, resumed in a child killed at operation k, then resumed by the CLI."""
    straight, half = runs
    run = tmp_path / "run"
    shutil.copytree(half, run)
    _killed_at(k, _cfg(root, run), resume=True)
    code, out, err = cli("train", "--resume", "--out", run)
    assert code == 0, err
    _same_run(straight, run)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.json", "best.safetensors", "last.json", "last.optim.safetensors",
                     "last.safetensors"], names  # no previous set, no temp file left
    return run, out


@pytest.mark.parametrize("k", range(1, N_OPS + 1))
def test_kill_during_a_save_resumes_from_the_last_good_checkpoint(k, runs, tiny_amounts, tmp_path, cli):
    _, out = _killed_then_resumed(k, runs, tiny_amounts, tmp_path, cli)
    assert ("restored the checkpoint before it (step 2)" in out) == (k in TORN), out
    assert "[yellow]" not in out


def test_there_is_no_operation_after_the_last_one_killed_at(runs, tiny_amounts, tmp_path):
    """The kills above cover every file operation of the saves: there is no operation N_OPS + 1."""
    shutil.copytree(runs[1], tmp_path / "run")
    _killed_at(N_OPS + 1, _cfg(tiny_amounts, tmp_path / "run"), resume=True, killed=False)


def test_kill_in_the_first_save_leaves_nothing_to_resume(quick, tiny_amounts, tmp_path, cli):
    """Killed before the first checkpoint was whole: nothing to resume (one line), and a new
    run in the same folder starts without --exist-ok."""
    run = tmp_path / "run"
    _killed_at(3, _cfg(tiny_amounts, run, epochs=1, max_steps=1), resume=False)  # best.*, last.safetensors
    code, _, err = cli("train", "--resume", "--out", run)
    assert code == 2 and "nothing to resume" in err and len(err.strip().splitlines()) == 1, err
    train(_cfg(tiny_amounts, run, epochs=1, max_steps=1))
    assert json.loads((run / "checkpoints/last.json").read_text())["step"] == 1
