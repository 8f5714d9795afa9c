"""Shared fixtures: a tiny built-in dataset made once per test session; the CLI runner. And the
CI rule: under ``CI=true`` a skipped test fails, unless it needs a GPU."""

from __future__ import annotations

import os
import sys

import pytest
import torch

# Tiny tensors: one intra-op thread is faster than two on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_amounts(tmp_path_factory):
    """A 32-train / 8-val `amounts` dataset at 64×64 under a session temp folder (the data root)."""
    from hybridvision.data.builtin.amounts import make_amounts

    root = tmp_path_factory.mktemp("data")
    make_amounts(root / "amounts", n_train=32, n_val=8, seed=0, image_size=64)
    return root


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli(*args) -> (exit code, stdout, stderr)`` of ``hybridvision ARGS`` run in-process."""
    from hybridvision.cli import main

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["hybridvision", *map(str, args)])
        with pytest.raises(SystemExit) as e:
            main()
            raise SystemExit(0)
        out = capsys.readouterr()
        return int(e.value.code or 0), out.out, out.err

    return run


#: The one thing a test may lack in CI and still skip: a GPU (no CI machine here has one).
CI_MAY_SKIP = ("CUDA",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``CI=true`` a test skipped for a missing system dependency (a browser, a tool) fails:
    ``.ci/run`` installs what the tests need, and a skip there would hide a missing install step."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(word in reason for word in CI_MAY_SKIP):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true ({reason}); .ci/run must install what this test needs"
