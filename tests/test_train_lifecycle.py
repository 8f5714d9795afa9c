"""A training run's life: refusing a bad --out before any work, the start summary, resuming
(from last.json's config, after a torn metrics line), Ctrl-C, last versus best, AMP scaler state,
and rank > 0 writing nothing. Tiny runs: 32 images at 64², batch 16, two steps per epoch."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from hybridvision.config import TrainConfig
from hybridvision.engine.checkpoint import load_checkpoint_state, save_checkpoint
from hybridvision.engine.tasks import DetectionTask
from hybridvision.engine.tasks import small_box_warning
from hybridvision.engine.trainer import (check_run_folder, restore_scaler, scaler_state,
                                         train)
from hybridvision.errors import UserInputError

TINY = dict(model="fcos_demo", data="builtin:amounts", data_kwargs=dict(n_train=32, n_val=8, image_size=64),
            image_size=64, epochs=2, batch_size=16, lr=0.01, warmup_steps=1, eval_every=0, progress=False,
            device="cpu", seed=1)


def _cfg(root, out, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "data_root": str(root), "out": str(out), **kw})


def _args(root, out, *extra) -> list[str]:
    """CLI arguments of the TINY run."""
    return ["--model", "fcos_demo", "--data", "builtin:amounts", "--epochs", "2", "--batch-size", "16",
            "--image-size", "64", "--device", "cpu", "--seed", "1", "--out", str(out), f"data_root={root}",
            "data_kwargs={n_train: 32, n_val: 8, image_size: 64}", "warmup_steps=1", "eval_every=0",
            "progress=false", *extra]


@pytest.fixture(scope="module")
def half_run(tiny_amounts, tmp_path_factory):
    """A run stopped after epoch 1 of 2 (a killed or time-sliced run)."""
    out = tmp_path_factory.mktemp("runs") / "half"
    train(_cfg(tiny_amounts, out), stop_after=1)
    return out


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


# ---------------------------------------------------------------------------------- --out
def test_out_with_other_files_is_refused_before_any_work(cli, tiny_amounts, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    data_root = tmp_path / "data"  # would be generated if the check came after the data
    code, _, err = cli("train", "--out", out, "--device", "cpu", f"data_root={data_root}")
    assert code == 2 and "notes.txt" in err and "--exist-ok" in err, err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and not data_root.exists()


def test_out_that_is_a_file_is_refused(cli, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    for out in (f, f / "sub"):
        code, _, err = cli("train", "--out", out, "--device", "cpu", f"data_root={tmp_path / 'data'}")
        assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1, err
    assert f.read_text() == "x" and not (tmp_path / "data").exists()


def test_run_folder_rules(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("epochs: 1\n")
    check_run_folder(run)  # a run killed before its first checkpoint may be restarted
    (run / "checkpoints" / "last.json").write_text("{}")
    with pytest.raises(UserInputError, match="--resume"):
        check_run_folder(run)
    check_run_folder(run, exist_ok=True)
    check_run_folder(run, resume=True)
    with pytest.raises(UserInputError, match="nothing to resume"):
        check_run_folder(tmp_path / "new", resume=True)
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------ lifecycle
def test_start_summary_and_last_versus_best(cli, tiny_amounts, tmp_path, monkeypatch):
    """AP 0.5 after epoch 1, 0.1 after epoch 2: best is epoch 1, last epoch 2; both are written
    and printed by name, and eval/coco_metrics.json is best's."""
    real = DetectionTask.evaluate
    aps = iter([0.5, 0.1])

    def fake(self, *a, **kw):
        evaluation, results = real(self, *a, **kw)
        return {**evaluation, "metrics": {**evaluation["metrics"], "AP": next(aps)}}, results

    monkeypatch.setattr(DetectionTask, "evaluate", fake)
    out = tmp_path / "run"
    code, stdout, err = cli("train", *_args(tiny_amounts, out, "eval_every=1"))
    assert code == 0, err
    flat = " ".join(stdout.split())
    for part in ("train fcos_demo:", "M params", "32 train / 8 val images", "10 classes", "input 64 px",
                 "2 steps/epoch", "4 steps in all", "cpu", "torch threads"):
        assert part in flat, part
    assert "last (epoch 2)" in flat and "best (epoch 1)" in flat
    ap = {k: json.loads((out / "eval" / k / "coco_metrics.json").read_text())["AP"] for k in ("last", "best")}
    assert ap == {"last": 0.1, "best": 0.5}
    assert json.loads((out / "eval/coco_metrics.json").read_text())["AP"] == 0.5
    assert (out / "eval/last/predictions.json").is_file() and (out / "eval/best/predictions.json").is_file()
    assert json.loads((out / "checkpoints/best.json").read_text())["epoch"] == 1


def test_resume_reevaluates_an_earlier_best(half_run, tmp_path, monkeypatch):
    """Best from the first call (epoch 1, not in memory any more) is evaluated again at the end."""
    run = _copy(half_run, tmp_path)
    cfg = TrainConfig.from_dict(json.loads((run / "checkpoints/last.json").read_text())["config"])
    cfg.out, cfg.eval_every = str(run), 1
    real = DetectionTask.evaluate
    aps = iter([0.0, 0.3])  # epoch 2 (last), then the re-evaluated best of epoch 1
    best = {"best": 0.3, "best_epoch": 1}  # as if epoch 1 had scored 0.3
    state = json.loads((run / "checkpoints/last.json").read_text())
    (run / "checkpoints/last.json").write_text(json.dumps({**state, **best}))
    side = {k: v for k, v in state.items() if k not in ("optimizer", "best", "best_epoch")}
    save_checkpoint(run / "checkpoints", "best", _model_of(run), extra={**side, "epoch": 1})

    def fake(self, *a, **kw):
        evaluation, results = real(self, *a, **kw)
        return {**evaluation, "metrics": {**evaluation["metrics"], "AP": next(aps)}}, results

    monkeypatch.setattr(DetectionTask, "evaluate", fake)
    summary = train(cfg, resume=True)
    assert summary.last_epoch == 2 and summary.best_epoch == 1
    assert summary.best_evaluation["metrics"]["AP"] == 0.3 and summary.evaluation["metrics"]["AP"] == 0.0
    assert json.loads((run / "eval/best/coco_metrics.json").read_text())["AP"] == 0.3


def _model_of(run):
    from hybridvision.api import load_trained

    model, _ = load_trained(run / "checkpoints/last.safetensors")
    return model


def test_resume_without_config_yaml_uses_last_json(cli, half_run, tmp_path):
    run = _copy(half_run, tmp_path)
    stored = json.loads((run / "checkpoints/last.json").read_text())["config"]
    (run / "config.yaml").unlink()
    code, stdout, err = cli("train", "--resume", "--out", run)
    assert code == 0, err
    assert "resuming" in stdout and "epoch 2/2" in stdout
    from hybridvision.config import load_config

    again = load_config(run / "config.yaml").to_dict()
    assert again == {**stored, "out": str(run)}  # not the defaults (image_size 128, data_root "data")


def test_resume_with_nothing_to_resume_is_one_line(cli, tmp_path):
    code, _, err = cli("train", "--resume", "--out", tmp_path / "empty")
    assert code == 2 and "no config.yaml and no checkpoints/last.json" in err
    assert len(err.strip().splitlines()) == 1


def test_resume_after_a_torn_metrics_line(cli, half_run, tmp_path):
    run = _copy(half_run, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "step": 3, "lo')  # killed in the middle of an append
    code, _, err = cli("train", "--resume", "--out", run)
    assert code == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["epoch"] == 2 and "AP" in records[-1]


def test_resume_with_a_corrupt_middle_line_names_it(cli, half_run, tmp_path):
    run = _copy(half_run, tmp_path)
    lines = ["{not json", *(run / "metrics.jsonl").read_text().splitlines()]  # a bad line, then good ones
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    code, _, err = cli("train", "--resume", "--out", run)
    assert code == 2 and "metrics.jsonl line 1" in err and len(err.strip().splitlines()) == 1, err


def test_ctrl_c_exits_130_with_the_resume_hint(cli, monkeypatch, tmp_path):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("hybridvision.cli.train", interrupted)
    code, _, err = cli("train", "--out", tmp_path / "run", "--device", "cpu")
    assert code == 130
    assert "interrupted; a training run continues with `hybridvision train --out RUN --resume`" in err


# ---------------------------------------------------------------------------- AMP, ranks
def test_grad_scaler_state_saved_and_restored(tmp_path):
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**10)
    scaler.scale(torch.tensor(1.0))  # the scale tensor is made lazily
    scaler.update(new_scale=1234.0)
    state = scaler_state(scaler)
    assert state is not None and state["scale"] == 1234.0
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, "last", model, extra={"epoch": 1, "step": 2, "scaler": state})
    sidecar = load_checkpoint_state(tmp_path, "last", torch.nn.Linear(2, 2))
    fresh = torch.amp.GradScaler("cpu", enabled=True)
    assert restore_scaler(fresh, sidecar) and fresh.get_scale() == 1234.0
    assert fresh.state_dict() == scaler.state_dict()
    off = torch.amp.GradScaler("cpu", enabled=False)
    assert scaler_state(off) is None and not restore_scaler(off, sidecar)
    assert not restore_scaler(torch.amp.GradScaler("cpu", enabled=True), {"epoch": 1})


def test_rank_above_zero_prints_and_writes_nothing(tiny_amounts, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")  # WORLD_SIZE unset: one process that believes it is rank 1
    out = tmp_path / "run"
    summary = train(_cfg(tiny_amounts, out, epochs=1, max_steps=1))
    assert summary.steps == 1
    assert not out.exists()
    assert capsys.readouterr().out == ""


def test_small_box_warning(tiny_amounts):
    from hybridvision.data.coco import CocoDetection

    ds = CocoDetection(tiny_amounts / "amounts/train/annotations.json", tiny_amounts / "amounts/train/images")
    warning = small_box_warning(ds, 32, 16.0)  # digits of median 24 px in 64² images become ~12 px
    assert warning and "--image-size 32" in warning and "try --image-size" in warning
    assert small_box_warning(ds, 64, 1.0) is None
    assert small_box_warning(torch.utils.data.Subset(ds, list(range(len(ds)))[::-1]), 32, 16.0)  # a Subset
