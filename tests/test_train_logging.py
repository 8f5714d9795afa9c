"""What a run logs and draws beyond metrics.jsonl: TensorBoard scalars (read back with
TensorBoard's own EventAccumulator) equal to the JSONL records, a resume that purges the events
after its checkpoint, the refusal when TensorBoard is missing, ``plots/results.png`` (one panel per
loss and per metric) and the evaluation analysis in ``eval/``, ``eval/last/``, ``eval/best/``.
Tiny runs: 32 images at 64², batch 16, two steps per epoch."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from hybridvision.config import TrainConfig
from hybridvision.engine import trainer
from hybridvision.engine.trainer import train
from hybridvision.errors import UserInputError
from hybridvision.evaluation.coco import COCO_METRIC_KEYS
from hybridvision.plots import plot_results

TINY = dict(model="fcos_demo", data="builtin:amounts", data_kwargs=dict(n_train=32, n_val=8, image_size=64),
            image_size=64, epochs=2, batch_size=16, lr=0.01, warmup_steps=1, eval_every=1, progress=False,
            device="cpu", seed=1)
LOSSES = ["loss", "loss_box_reg", "loss_centerness", "loss_cls"]  # fcos_demo's, total first


def _cfg(root, out, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "data_root": str(root), "out": str(out), **kw})


def _records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _scalars(run) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` read back from the run's event files by TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def tb_run(tiny_amounts, tmp_path_factory):
    pytest.importorskip("tensorboard")
    out = tmp_path_factory.mktemp("runs") / "tb"
    train(_cfg(tiny_amounts, out, logger="tensorboard"))
    return out


def test_tensorboard_scalars_equal_the_jsonl_records(tb_run):
    scalars = _scalars(tb_run)
    records = _records(tb_run)
    train_recs = [r for r in records if "loss" in r]
    eval_recs = [r for r in records if "AP" in r]
    assert len(train_recs) == 2 and len(eval_recs) == 2  # one of each per epoch
    for key in [*LOSSES, "lr"]:
        assert scalars[f"train/{key}"] == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in train_recs], key
    for key in COCO_METRIC_KEYS:
        want = [(r["step"], pytest.approx(r[key], abs=1e-7)) for r in eval_recs if r[key] >= 0]
        assert scalars.get(f"val/{key}", []) == want, key  # -1 (an empty size bucket) is not a value
    assert not any(tag.endswith(("/epoch", "/step")) for tag in scalars)


def test_results_png_has_a_panel_per_loss_and_metric(tb_run, tmp_path):
    png = tb_run / "plots" / "results.png"
    assert Image.open(png).format == "PNG" and (tb_run / "plots" / "loss.png").is_file()
    path, titles = plot_results(tb_run / "metrics.jsonl", tmp_path / "r.png")
    assert titles == [f"train/{k}" for k in LOSSES] + [f"val/{k}" for k in COCO_METRIC_KEYS]
    with Image.open(path) as im, Image.open(png) as written:
        assert im.size == written.size == (5 * 320, 4 * 260)  # 16 panels: 4 rows of 5


def test_every_eval_folder_of_a_run_has_the_analysis(tb_run):
    for folder in (tb_run / "eval", tb_run / "eval" / "last", tb_run / "eval" / "best"):
        for name in ("coco_metrics.json", "pr_curves.json", "pr_curve.png", "confusion_matrix.json",
                     "confusion_matrix.png", "per_class_ap.csv"):
            assert (folder / name).is_file(), folder / name
    cm = json.loads((tb_run / "eval" / "confusion_matrix.json").read_text())
    assert len(cm["matrix"]) == 11 and cm["labels"][-1] == "background"  # 10 digits + background


def test_resume_purges_events_after_the_checkpoint(tb_run, tiny_amounts, tmp_path):
    """A run killed during epoch 2 may have logged steps its checkpoint (epoch 1, step 2) never
    saw; the resumed run hides them, so every step has one value: the resumed run's."""
    from torch.utils.tensorboard import SummaryWriter

    out = tmp_path / "half"
    train(_cfg(tiny_amounts, out, logger="tensorboard"), stop_after=1)
    assert [s for s, _ in _scalars(out)["train/loss"]] == [2]
    killed = SummaryWriter(str(out / "tensorboard"))  # what the killed process wrote after step 2
    killed.add_scalar("train/loss", 99.0, 4)
    killed.close()
    train(_cfg(tiny_amounts, out, logger="tensorboard"), resume=True)
    loss = _scalars(out)["train/loss"]
    assert [s for s, _ in loss] == [2, 4]
    assert loss[-1][1] == pytest.approx(_records(out)[-2]["loss"], rel=1e-6) != 99.0
    assert loss == _scalars(tb_run)["train/loss"]  # the same as the run never stopped


def test_missing_tensorboard_is_refused_before_any_work(cli, monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard"
                        else real(name, *a))
    data_root = tmp_path / "data"
    code, _, err = cli("train", "--out", tmp_path / "run", "--device", "cpu", f"data_root={data_root}",
                       "logger=tensorboard")
    assert code == 2 and "pip install 'hybridvision[tensorboard]'" in err, err
    assert len(err.strip().splitlines()) == 1 and not data_root.exists() and not (tmp_path / "run").exists()
    code, _, err = cli("train", "--out", tmp_path / "run", "logger=wandb")
    assert code == 2 and "jsonl or tensorboard" in err


def test_a_failing_plot_never_loses_the_run(monkeypatch, tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "step": 1, "loss": 1.0}) + "\n")

    def broken(*_a, **_k):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(trainer, "plot_results", broken)
    trainer._plot_loss(tmp_path)  # prints that results.png was skipped
    assert (tmp_path / "plots" / "loss.png").is_file() and not (tmp_path / "plots" / "results.png").exists()


def test_plot_results_on_hand_records(tmp_path):
    lines = [{"epoch": 1, "step": 10, "lr": 0.1, "loss": 2.0, "loss_a": 1.0},
             {"epoch": 1, "step": 10, "top1": 0.5, "top5": 0.9},
             {"epoch": 2, "step": 20, "lr": 0.05, "loss": 1.5, "loss_a": 0.7},
             {"epoch": 2, "step": 20, "top1": 0.6, "top5": 0.95}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    _, titles = plot_results(path, tmp_path / "r.png", ncols=3)
    assert titles == ["train/loss", "train/loss_a", "val/top1", "val/top5"]
    assert Image.open(tmp_path / "r.png").size == (3 * 320, 2 * 260)
    path.write_text("")
    with pytest.raises(UserInputError, match="no loss or metric"):
        plot_results(path, tmp_path / "r2.png")
