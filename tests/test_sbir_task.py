"""The SBIR task end to end on tiny built-in bimodal data: stage 1 → 2 → 3, each a run started
from the previous stage's weights; stage 2 leaves the branches' own stages bit-identical; every
stage evaluates retrieval (mAP, mRR, P@10 on held-out sketches and photos)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from hybridvision.config import TrainConfig
from hybridvision.engine.trainer import train
from hybridvision.errors import UserInputError


def _cfg(tmp_path, stage, **extra):
    return TrainConfig.from_dict({
        **TrainConfig().to_dict(), "model": "sbir_resnet26", "data": "builtin:bimodal",
        "data_root": str(tmp_path / "data"),
        "data_kwargs": {"sketches": 5, "photos": 5, "size": 32}, "image_size": 32, "batch_size": 8, "epochs": 1,
        "max_steps": 2, "optimizer": "adamw", "lr": 1e-3, "warmup_steps": 0, "eval_every": 0, "progress": False,
        "model_kwargs": {"stage": stage, "width": 0.25, "hidden": 32, "embed_dim": 16},
        "out": str(tmp_path / f"stage{stage}"), "device": "cpu", **extra})


def test_three_stages_chain_and_stage_two_freezes_the_branches(tmp_path):
    weights = None
    for stage in (1, 2, 3):
        summary = train(_cfg(tmp_path, stage), weights=weights)
        metrics = json.loads((tmp_path / f"stage{stage}" / "eval" / "last" / "retrieval_metrics.json").read_text())
        assert 0 <= metrics["mAP"] <= 1 and metrics["queries"] == 27 * 1 and "P@10" in metrics
        assert summary["evaluation"]["mAP"] == metrics["mAP"]
        assert {"sketch_top1", "photo_top1", "zs_uni_mAP", "zs_mAP", "zs_P@10"} <= set(metrics)
        assert all(0 <= metrics[k] <= 1 for k in ("sketch_top1", "zs_uni_mAP", "zs_mAP"))
        weights = str(tmp_path / f"stage{stage}" / "checkpoints" / "last.safetensors")
    one, two, three = (load_file(tmp_path / f"stage{s}" / "checkpoints" / "last.safetensors") for s in (1, 2, 3))
    early = [k for k in one if k.startswith(("sketch_early.", "photo_early."))]
    shared = [k for k in one if k.startswith(("shared.", "head."))]
    assert early and shared
    assert all((one[k] == two[k]).all() for k in early)  # frozen in stage 2, BN statistics too
    assert any(not (one[k] == two[k]).all() for k in shared)
    assert any(not (two[k] == three[k]).all() for k in early)  # stage 3 trains everything


def test_bad_sbir_options_are_refused(tmp_path):
    with pytest.raises(UserInputError, match="not an option of SBIR data"):
        train(_cfg(tmp_path, 1, data_kwargs={"bogus": 1}))
    with pytest.raises(UserInputError, match="augment"):
        train(_cfg(tmp_path, 1, augment={"hflip": 0.5}))
