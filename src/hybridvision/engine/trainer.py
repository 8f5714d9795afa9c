"""The training loop: one for every task, on one device or many (``torchrun``).

A run folder (``cfg.out``) holds::

    config.yaml                 the full TrainConfig
    metrics.jsonl               one JSON record per logged step and per epoch
    checkpoints/last.*          model + optimizer + epoch state after every epoch (resume point)
    checkpoints/best.*          the best evaluation so far (by the task's primary metric)
    eval/coco_metrics.json      final evaluation (detection; ``eval/metrics.json`` otherwise)
    predictions.json            COCO results of the final evaluation (detection)
    plots/loss.png              loss curve

Determinism and resume: the data order and augmentation of epoch ``e`` depend only on
``(seed, e)`` — each epoch reseeds its own generator — so ``--resume`` after epoch ``e``
continues exactly as an uninterrupted run would (same seed, CPU, ``workers=0``).
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from hybridvision.config import TrainConfig, save_config
from hybridvision.engine.checkpoint import load_checkpoint_state, load_weights, save_checkpoint
from hybridvision.engine.progress import console, is_main_process, make_progress
from hybridvision.engine.tasks import DataBundle, make_task
from hybridvision.errors import UserInputError
from hybridvision.fileio import atomic_write_text

__all__ = ["train", "NonFiniteLossError", "resolve_device", "lr_factor"]


class NonFiniteLossError(UserInputError):
    """Training produced NaN/Inf; nothing was saved from the broken step."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {name}: CUDA is not available here; use --device cpu")
    return dev


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based) of ``total``.

    Linear warm-up from ``warmup_factor`` over ``warmup_steps``, then cosine annealing to 0 or a
    step decay (×0.1 at each fraction of ``milestones``), as in the FCOS and SAN recipes.
    """
    warm = 1.0
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        alpha = step / cfg.warmup_steps
        warm = cfg.warmup_factor * (1 - alpha) + alpha
    if cfg.schedule == "cosine":
        main = 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))
    elif cfg.schedule == "step":
        main = 0.1 ** sum(step >= m * total for m in cfg.milestones)
    else:
        raise UserInputError(f"schedule {cfg.schedule!r}: use cosine or step")
    return warm * main


def _build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on norms and biases (standard for both recipes).
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise UserInputError(f"optimizer {cfg.optimizer!r}: use sgd or adamw")


def _setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, resolve_device(device_name)
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return rank, world, device


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def _truncate_jsonl_after(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (the epoch in flight when a run was killed)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln).get("step", 0) <= step]
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def _epoch_loader(bundle: DataBundle, cfg: TrainConfig, epoch: int, world: int, rank: int):
    """The training loader of one epoch; its order depends only on (seed, epoch)."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    if world > 1:
        sampler = DistributedSampler(bundle.train, num_replicas=world, rank=rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(bundle.train, generator=g)
    return DataLoader(bundle.train, batch_size=cfg.batch_size, sampler=sampler,
                      num_workers=cfg.workers, collate_fn=bundle.collate, drop_last=True,
                      generator=g, persistent_workers=False)


def _val_loader(bundle: DataBundle, cfg: TrainConfig):
    return DataLoader(bundle.val, batch_size=max(1, cfg.batch_size), shuffle=False,
                      num_workers=cfg.workers, collate_fn=bundle.collate)


def _checkpoint_extra(cfg, bundle, task, epoch, step, metrics=None) -> dict[str, Any]:
    return {
        "epoch": epoch, "step": step, "model": cfg.model, "model_kwargs": cfg.model_kwargs,
        "num_classes": bundle.num_classes, "class_names": bundle.class_names,
        "label_to_cat_id": bundle.meta.get("label_to_cat_id"), "image_size": cfg.image_size,
        "task": task.name, "config": cfg.to_dict(), "metrics": metrics or {},
    }


def train(cfg: TrainConfig, *, resume: bool = False, weights: str | None = None,
          exist_ok: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data``; returns ``dict(out, metrics, epochs, steps, seconds)``.

    Args:
        resume: continue from ``cfg.out/checkpoints/last`` with identical optimizer, schedule
            and epoch state.
        weights: a ``.safetensors`` file to initialise the model from (fine-tuning).
        exist_ok: allow writing into a run folder that already has checkpoints (overwrites them).
        stop_after: train at most this many epochs in this call and return; the schedule still
            spans ``cfg.epochs``, so a later ``resume=True`` call continues seamlessly (time-sliced
            jobs on shared clusters).
    """
    from hybridvision.registry import create_model

    rank, world, device = _setup_distributed(cfg.device)
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    if resume and not (ckpt_dir / "last.json").is_file():
        raise UserInputError(f"{ckpt_dir / 'last.json'}: nothing to resume; start without --resume")
    if not resume and not exist_ok and (ckpt_dir / "last.json").is_file():
        raise UserInputError(f"{out}: run folder already has checkpoints; pass --resume to continue "
                             "it, --exist-ok to overwrite, or another --out")
    torch.manual_seed(cfg.seed)
    task = make_task(cfg)
    bundle = task.build_data(cfg)
    if len(bundle.train) < cfg.batch_size * world:
        raise UserInputError(f"--data {cfg.data}: {len(bundle.train)} training images, fewer than one "
                             f"batch ({cfg.batch_size}×{world}); lower --batch-size")
    torch.manual_seed(cfg.seed)  # model init does not depend on how much data building consumed
    model = create_model(cfg.model, num_classes=bundle.num_classes, **cfg.model_kwargs).to(device)
    if weights:
        load_weights(model, weights)
    optimizer = _build_optimizer(model, cfg)
    steps_per_epoch = len(bundle.train) // (cfg.batch_size * world)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    start_epoch, step, best = 0, 0, -math.inf
    metrics_path = out / "metrics.jsonl"
    if resume:
        state = load_checkpoint_state(ckpt_dir, "last", model, optimizer)
        start_epoch, step = int(state["epoch"]), int(state["step"])
        best = float(state.get("best", -math.inf))
        if is_main_process():
            _truncate_jsonl_after(metrics_path, step)
            console.print(f"resuming {out} at epoch {start_epoch + 1}/{cfg.epochs} (step {step})")
    elif is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        metrics_path.unlink(missing_ok=True)
    if is_main_process():
        save_config(cfg, out / "config.yaml")

    train_model: nn.Module = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp else nullcontext

    t0 = time.time()
    last_eval: dict[str, Any] = {}
    results: list[dict] = []
    with make_progress(cfg.progress) as progress:
        end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
        for epoch in range(start_epoch, end_epoch):
            if cfg.max_steps and step >= cfg.max_steps:
                break
            torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # augmentation RNG of this epoch
            loader = _epoch_loader(bundle, cfg, epoch, world, rank)
            bar = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(loader), info="")
            train_model.train()
            running: dict[str, float] = {}
            n_running = 0
            for i, batch in enumerate(loader):
                if cfg.max_steps and step >= cfg.max_steps:
                    break
                lr = cfg.lr * lr_factor(step, total_steps, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with autocast():
                    losses = task.batch_loss(train_model, batch, device)
                loss = losses["loss"]
                finite = torch.isfinite(loss.detach()).float()
                if world > 1:
                    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
                if finite.item() < 1:
                    parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                    raise NonFiniteLossError(
                        f"{out}: non-finite loss at epoch {epoch + 1} step {step} ({parts}); nothing "
                        f"was saved from this step — lower --lr (now {cfg.lr:g}), set grad_clip=10, "
                        "or check the data with `hybridvision data check`")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                for k, v in losses.items():
                    running[k] = running.get(k, 0.0) + float(v.detach())
                n_running += 1
                last_of_epoch = i == len(loader) - 1 or (cfg.max_steps and step >= cfg.max_steps)
                if is_main_process() and (step % 10 == 0 or last_of_epoch):
                    # the mean over the steps since the previous record (a smooth curve, no resets)
                    rec = {"epoch": epoch + 1, "step": step, "lr": lr,
                           **{k: v / n_running for k, v in running.items()}}
                    _append_jsonl(metrics_path, rec)
                    running, n_running = {}, 0
                progress.update(bar, advance=1, info=f"loss {float(loss.detach()):.3f} lr {lr:.2g}")

            epoch_done = epoch + 1
            do_eval = (cfg.eval_every and epoch_done % cfg.eval_every == 0) or epoch_done == cfg.epochs \
                or (cfg.max_steps and step >= cfg.max_steps)
            if is_main_process():
                if do_eval:
                    last_eval, results = task.evaluate(model, _val_loader(bundle, cfg), device, bundle)
                    flat = last_eval.get("metrics", last_eval)
                    _append_jsonl(metrics_path, {"epoch": epoch_done, "step": step, **flat})
                    score = float(flat[task.primary_metric])
                    if score > best:
                        best = score
                        save_checkpoint(ckpt_dir, "best", model,
                                        extra=_checkpoint_extra(cfg, bundle, task, epoch_done, step, flat))
                    console.print(f"epoch {epoch_done}/{cfg.epochs}: {task.primary_metric} "
                                  f"{score:.4f} (best {best:.4f})")
                extra = _checkpoint_extra(cfg, bundle, task, epoch_done, step)
                extra["best"] = best
                save_checkpoint(ckpt_dir, "last", model, optimizer=optimizer, extra=extra)
            if world > 1:
                dist.barrier()

    seconds = time.time() - t0
    if is_main_process():
        _write_final(out, task, last_eval, results)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {"out": str(out), "evaluation": last_eval, "epochs": cfg.epochs, "steps": step,
            "seconds": seconds, "best": best}


def _write_final(out: Path, task, evaluation: dict[str, Any], results: list[dict]) -> None:
    if evaluation:
        if task.name == "detection":
            from hybridvision.evaluation.coco import write_metrics_json

            write_metrics_json(evaluation, out / "eval" / "coco_metrics.json")
            atomic_write_text(out / "predictions.json", json.dumps(results))
        else:
            atomic_write_text(out / "eval" / "metrics.json", json.dumps(evaluation, indent=1))
    try:
        from hybridvision.plots import plot_loss_curve

        plot_loss_curve(out / "metrics.jsonl", out / "plots" / "loss.png")
    except Exception as e:  # a plot must never lose a finished run
        console.print(f"[yellow]loss plot skipped: {e}")
