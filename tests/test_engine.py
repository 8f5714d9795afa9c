"""Engine: schedule, checkpoints, resume equality, non-finite guard, DDP on gloo."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hybridvision.config import TrainConfig, apply_overrides
from hybridvision.engine.checkpoint import load_checkpoint_state, save_checkpoint
from hybridvision.engine.trainer import NonFiniteLossError, lr_factor, train
from hybridvision.errors import UserInputError


def _cfg(root, out, **kw) -> TrainConfig:
    base = dict(model="fcos_demo", data="builtin:amounts", data_root=str(root),
                data_kwargs=dict(n_train=32, n_val=8, image_size=64), image_size=64, epochs=2,
                batch_size=8, lr=0.01, warmup_steps=2, eval_every=0, out=str(out), progress=False,
                device="cpu", seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_hand_values():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, warmup_factor=0.1, schedule="cosine")
    assert lr_factor(0, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(5, 100, cfg) == pytest.approx((0.1 * 0.5 + 0.5) * 0.5 * (1 + math.cos(math.pi * 0.05)))
    assert lr_factor(50, 100, cfg) == pytest.approx(0.5)
    assert lr_factor(100, 100, cfg) == pytest.approx(0.0)
    step = TrainConfig(warmup_steps=0, schedule="step", milestones=[0.5, 0.75])
    assert [lr_factor(s, 100, step) for s in (0, 49, 50, 75)] == pytest.approx([1, 1, 0.1, 0.01])


def test_overrides_nested_and_errors():
    cfg = apply_overrides(TrainConfig(), ["lr=0.5", "model_kwargs.width=0.5", "milestones=[0.5]"])
    assert cfg.lr == 0.5 and cfg.model_kwargs == {"width": 0.5} and cfg.milestones == [0.5]
    with pytest.raises(UserInputError, match="unknown key"):
        apply_overrides(TrainConfig(), ["nope=1"])
    with pytest.raises(UserInputError, match="key=value"):
        apply_overrides(TrainConfig(), ["lr"])


def test_checkpoint_roundtrip_restores_optimizer(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    save_checkpoint(tmp_path, "last", model, optimizer=opt, extra={"epoch": 2, "step": 3})
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    state = load_checkpoint_state(tmp_path, "last", model2, opt2)
    assert state["epoch"] == 2
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for k in s1["state"]:
        for name, v in s1["state"][k].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][k][name]))
    assert not list(tmp_path.glob("*.tmp"))


def test_resumed_optimizer_buffers_keep_a_channels_last_parameter_layout(tmp_path):
    """Saved tensors are contiguous; after loading, AdamW's buffers have the layout of their
    channels-last parameter again (as a fresh run's), with the saved values."""
    def make():
        torch.manual_seed(0)
        m = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
        return m, torch.optim.AdamW(m.parameters(), lr=0.1)

    model, opt = make()
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)).pow(2).sum().backward()
        opt.step()
    save_checkpoint(tmp_path, "last", model, optimizer=opt, extra={"epoch": 1, "step": 2})
    model2, opt2 = make()
    load_checkpoint_state(tmp_path, "last", model2, opt2)
    w = model2.weight
    assert w.is_contiguous(memory_format=torch.channels_last)
    for name in ("exp_avg", "exp_avg_sq"):
        assert opt2.state[w][name].stride() == w.stride(), name
        assert torch.equal(opt2.state[w][name], opt.state[model.weight][name])


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    from hybridvision.engine.checkpoint import load_weights

    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(UserInputError, match="w.safetensors"):
        load_weights(torch.nn.Linear(2, 2), bad)


def test_resume_equals_straight_run(tiny_amounts, tmp_path):
    straight = train(_cfg(tiny_amounts, tmp_path / "a"))
    assert straight.steps == 8
    cfg_b = _cfg(tiny_amounts, tmp_path / "b")
    first = train(cfg_b, stop_after=1)
    assert first.steps == 4
    side = json.loads((tmp_path / "b/checkpoints/last.json").read_text())
    assert side["epoch"] == 1 and 0 < side["train_loop_seconds"] <= side["train_seconds"] <= first.seconds
    # The resumed run's times add the earlier calls' up to the checkpoint (made large here to show).
    (tmp_path / "b/checkpoints/last.json").write_text(json.dumps({**side, "train_seconds": 1e4,
                                                                   "train_loop_seconds": 5e3}))
    second = train(cfg_b, resume=True)
    assert 1e4 < second.seconds < 1e4 + 600 and 5e3 < second.loop_seconds < 5e3 + 600
    end = json.loads((tmp_path / "b/checkpoints/last.json").read_text())
    assert end["train_loop_seconds"] == pytest.approx(second.loop_seconds)
    wa = load_file(str(tmp_path / "a/checkpoints/last.safetensors"))
    wb = load_file(str(tmp_path / "b/checkpoints/last.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # and the run folder has what DESIGN promises
    for rel in ("config.yaml", "metrics.jsonl", "checkpoints/best.safetensors", "eval/coco_metrics.json",
                "predictions.json", "plots/loss.png"):
        assert (tmp_path / "b" / rel).is_file(), rel


def test_existing_run_folder_is_not_overwritten(tiny_amounts, tmp_path):
    cfg = _cfg(tiny_amounts, tmp_path / "r", epochs=1, max_steps=1)
    train(cfg)
    with pytest.raises(UserInputError, match="--resume"):
        train(cfg)


def test_non_finite_loss_stops_without_saving(tiny_amounts, tmp_path):
    cfg = _cfg(tiny_amounts, tmp_path / "nan", lr=1e30, warmup_steps=0, optimizer="sgd", epochs=1)
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        train(cfg)
    assert not (tmp_path / "nan/checkpoints/last.safetensors").exists()


def test_ddp_two_processes_gloo(tiny_amounts, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "hybridvision", "train", "--model", "fcos_demo", "--data", "builtin:amounts",
           "--epochs", "1", "--batch-size", "4", "--image-size", "64", "--device", "cpu",
           "--out", str(out), f"data_root={tiny_amounts}", "data_kwargs={n_train: 32, n_val: 8, image_size: 64}",
           "max_steps=1", "progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one writer: rank 1 prints nothing, so each line (the closing "run folder:" one included) comes once
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert sum(line.startswith("run folder:") for line in lines) == 1, proc.stdout
    assert len(lines) == len(set(lines)), proc.stdout
    rec = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert rec[0]["step"] == 1 and math.isfinite(rec[0]["loss"])
    assert (out / "checkpoints/last.safetensors").is_file()


def test_classification_trains_through_engine(tmp_path):
    cfg = TrainConfig(model="resnet26", model_kwargs={"width": 0.25, "in_chans": 1},
                      data="builtin:sketches", data_root=str(tmp_path / "data"),
                      data_kwargs={"per_class": 10}, image_size=32, epochs=1, max_steps=3,
                      batch_size=16, lr=0.1, warmup_steps=1, out=str(tmp_path / "cls"),
                      progress=False, device="cpu")
    summary = train(cfg)
    m = summary.evaluation
    assert 0.0 <= m["top1"] <= m["top5"] <= 1.0
    saved = json.loads((tmp_path / "cls/eval/metrics.json").read_text())
    assert saved == pytest.approx(m)
    side = json.loads((tmp_path / "cls/checkpoints/last.json").read_text())
    assert side["task"] == "classification" and len(side["class_names"]) >= 30


def test_fcos_on_hybrid_backbone_learns():
    """fcos_hib_patch_2_2_nl (SAN + NL backbone under FCOS) fits a fixed batch: loss falls."""
    from hybridvision.factory import create_model

    torch.manual_seed(0)
    model = create_model("fcos_hib_patch_2_2_nl_small", num_classes=2)
    x = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 48.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[20.0, 4.0, 60.0, 30.0]]), "labels": torch.tensor([0])}]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        loss = model.loss(model(x), targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.6 * losses[0], losses


def test_a_log_without_a_live_bar_carries_loss_speed_and_eta(tmp_path, capsys):
    train(_cfg(tmp_path / "data", tmp_path / "run", epochs=1, data_kwargs=dict(n_train=96, n_val=8, image_size=64)))
    lines = [line for line in capsys.readouterr().out.splitlines() if "steps/s" in line]
    # 12 steps: a line at step 10 and at the epoch's end, each with the loss and an ETA
    assert [line.split()[3] for line in lines] == ["10/12", "12/12"], lines
    assert all(" loss " in line and "ETA" in line for line in lines)
    assert lines[-1].endswith("ETA 0:00")


def test_each_rank_draws_its_own_augmentation(tiny_amounts):
    """A distributed run's ranks get different augmentation streams (else every rank would crop
    and mosaic the same way for the same batch slot); one process keeps the (seed, epoch) stream."""
    from hybridvision.engine.tasks import make_task
    from hybridvision.engine.trainer import augmentation_seed, epoch_loader

    assert augmentation_seed(3, 5) == augmentation_seed(3, 5, rank=0) == 3 * 1_000_003 + 5
    seeds = {augmentation_seed(3, e, r) for e in range(50) for r in range(8)}
    assert len(seeds) == 400
    cfg = _cfg(tiny_amounts, "unused")
    bundle = make_task(cfg).build_data(cfg)
    loaders = [epoch_loader(bundle, cfg, 2, world=2, rank=r) for r in (0, 1)]
    assert loaders[0].generator.initial_seed() != loaders[1].generator.initial_seed()
    assert list(loaders[0].sampler) != list(loaders[1].sampler)  # and each its own share of the images
