"""Shared fixtures: a tiny built-in dataset made once per test session; the CLI runner."""

from __future__ import annotations

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
