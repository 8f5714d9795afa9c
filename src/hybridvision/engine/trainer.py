"""The training loop: one for every task, on one device or many (``torchrun``).

A run folder (``cfg.out``) holds::

    config.yaml                 the full TrainConfig
    metrics.jsonl               one JSON record per logged step and per epoch
    checkpoints/last.*          model + optimizer + epoch state after every epoch (resume point)
    checkpoints/best.*          the best evaluation so far (by the task's primary metric)
    eval/last/coco_metrics.json evaluation of the last weights (+ predictions.json; detection)
    eval/best/coco_metrics.json evaluation of the best weights (+ predictions.json; detection)
    eval/coco_metrics.json      the best weights' evaluation again, as ``eval --run`` writes it
                                (+ predictions.json)
    predictions.json            COCO results of the best weights (detection)
    plots/loss.png              loss curve
    plots/results.png           every loss and every evaluated metric, one small panel each
    tensorboard/                TensorBoard event files (``logger: tensorboard``; engine/loggers.py)

Each detection ``eval/`` folder also holds the evaluation's analysis (evaluation/analysis.py):
``pr_curves.json`` + ``pr_curve.png``, ``confusion_matrix.json`` + ``.png``, ``per_class_ap.csv``.

Classification runs write ``metrics.json`` (top-1/top-5) in place of ``coco_metrics.json``.

Last versus best (one rule): ``last`` is the model as training left it (the weights after the
final epoch); ``best`` is the epoch with the highest primary metric (``AP``, ``top1``) among the
evaluated epochs (every ``eval_every`` epochs and always the final one). When a run finishes, both
are evaluated on the val split and written to ``eval/last/`` and ``eval/best/`` — best at the
end only if it is another epoch than last — and ``train`` prints both, named ``last (epoch N)``
and ``best (epoch M)``. ``train`` returns the last weights' evaluation as ``evaluation`` (studies
report it: the final model, not one picked on the val split) and best's as ``best_evaluation``.
``eval/coco_metrics.json`` and ``predictions.json`` hold best, as ``hybridvision eval --run``
(which evaluates best) writes them.

Determinism and resume: the data order and augmentation of epoch ``e`` depend only on
``(seed, e)`` — each epoch reseeds its own generator — so ``--resume`` after epoch ``e``
continues exactly as an uninterrupted run would (same seed, CPU, ``workers=0``). The AMP gradient
scaler's state travels in ``checkpoints/last.json`` (``scaler``). A run killed while appending to
``metrics.jsonl`` may leave a torn last line; resume drops it.

Under ``torchrun`` only rank 0 (``RANK=0``) prints and writes; rank 0 also builds the data first
(a built-in dataset is generated once) while the other ranks wait.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from hybridvision.config import TrainConfig, save_config
from hybridvision.engine.checkpoint import (load_checkpoint_state, load_weights, read_sidecar,
                                            recover_checkpoint, save_checkpoint)
from hybridvision.engine.loggers import TENSORBOARD_DIR, NullLogger, check_logger, make_logger
from hybridvision.engine.progress import console, is_main_process, make_progress
from hybridvision.engine.tasks import DataBundle, make_task
from hybridvision.errors import UserInputError
from hybridvision.fileio import OWNER_MARKER, atomic_write_text, make_output_dir, write_error
from hybridvision.plots import plot_loss_curve, plot_results
from hybridvision.factory import create_model
from hybridvision.registry import check_model_kwargs

__all__ = ["train", "NonFiniteLossError", "resolve_device", "lr_factor", "check_run_folder",
           "scaler_state", "restore_scaler", "start_summary", "share_initialisation", "build_optimizer", "epoch_loader",
           "RUN_FOLDER_NAMES"]

# What a run folder written by hybridvision holds (train, and a study's result.json).
RUN_FOLDER_NAMES = frozenset({"config.yaml", "metrics.jsonl", "checkpoints", "eval", "plots",
                              "predictions.json", "result.json", TENSORBOARD_DIR, OWNER_MARKER})


class NonFiniteLossError(UserInputError):
    """Training produced NaN/Inf; nothing was saved from the broken step."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"--device {name}: unknown device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UserInputError(f"--device {name}: hybridvision runs on cpu or cuda; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {name}: CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserInputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                             "use cuda:0 … or auto")
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


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
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


# ------------------------------------------------------------------------------- run folder
def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_run_folder(out: str | os.PathLike, *, resume: bool = False, exist_ok: bool = False) -> Path:
    """Refuse, before any work starts, a ``--out`` that cannot be a run folder.

    - a file, or a path under a file: not a folder;
    - not writable (the folder, or the nearest existing folder above a new one);
    - ``resume``: the folder must hold ``checkpoints/last.json``;
    - otherwise a folder with a finished checkpoint needs ``exist_ok`` (overwrite) or ``resume``,
      and a non-empty folder that is not a run folder (one holding ``config.yaml`` and only what
      a run writes, :data:`RUN_FOLDER_NAMES`) needs ``exist_ok``.

    Read-only: nothing is created here. Returns ``out`` as a Path.
    """
    out = Path(out)
    long = [p for p in out.parts if len(p.encode()) > 255]
    if long:
        raise UserInputError(f"--out: the name {long[0][:40]}… is {len(long[0].encode())} bytes long, more "
                             "than a file system allows (255); pass a shorter --out")
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out}: is a file, not a folder; pass a folder path for the run")
    base = _nearest_existing(out)
    if not base.is_dir():
        raise UserInputError(f"--out {out}: {base} is a file, so no folder can be made under it; "
                             "pass another --out")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserInputError(f"--out {out}: {base} is not writable; pass a folder you can write to")
    last = out / "checkpoints" / "last.json"
    if resume:
        if not last.is_file():
            raise UserInputError(f"{last}: nothing to resume; start without --resume")
        return out
    if last.is_file() and not exist_ok:
        raise UserInputError(f"{out}: run folder already has checkpoints; pass --resume to continue "
                             "it, --exist-ok to overwrite, or another --out")
    if out.is_dir() and not exist_ok:
        entries = [e.name for e in out.iterdir() if not (e.name.startswith(".") and e.name.endswith(".tmp"))]
        is_run = (out / "config.yaml").is_file() and all(n in RUN_FOLDER_NAMES for n in entries)
        if entries and not is_run:
            shown = ", ".join(sorted(entries)[:3]) + (", …" if len(entries) > 3 else "")
            raise UserInputError(f"--out {out}: folder exists and holds other files ({shown}), not a "
                                 "hybridvision run folder; pass a new or empty --out, or --exist-ok "
                                 "to write into it")
    return out


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold off SIGINT (Ctrl-C) while the block runs, then deliver it.

    A checkpoint is three files written one after another; an interrupt between them would leave
    weights of one step beside state of another (refused on resume as torn) with the previous good
    checkpoint already replaced. Outside the main thread, where signals cannot be handled, the
    block runs as is.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None)):  # nothing to defer
        yield
        return
    received: list[tuple[int, Any]] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(*received[0])
        elif received:  # SIG_DFL: the process would have stopped
            raise KeyboardInterrupt


# ---------------------------------------------------------------------------- metrics.jsonl
def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record (a full disk or a lost permission: one-line error naming the file)."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
    except OSError as e:
        err = write_error(e, path)
        if err is None:
            raise
        raise err from None


def _truncate_jsonl_after(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (the epoch in flight when a run was killed).

    A torn last line (a kill in the middle of an append) is dropped; an unreadable line before
    the last one is a :class:`UserInputError` naming the file and line.
    """
    if not path.is_file():
        return
    lines = path.read_text(errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    keep = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            if n == len(lines):  # torn by a kill while appending: the step it held is re-run
                break
            raise UserInputError(f"{path} line {n}: not a JSON record; delete that line (or the file, "
                                 "losing the loss history) and resume again") from None
        if rec.get("step", 0) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in keep))


# ---------------------------------------------------------------------------------- loaders
def augmentation_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch's random augmentation on one process: ``(seed, epoch)`` alone on rank 0
    (one process), and a different stream on each other rank, so that the ranks of a distributed
    run do not draw the same crops and mosaics for the same batch slot."""
    return seed * 1_000_003 + epoch + rank * 104_729


def epoch_loader(bundle: DataBundle, cfg: TrainConfig, epoch: int, world: int, rank: int):
    """The training loader of one epoch; its order depends only on (seed, epoch), its workers'
    augmentation also on the rank (:func:`augmentation_seed`)."""
    g = torch.Generator().manual_seed(augmentation_seed(cfg.seed, epoch, rank))
    if world > 1:
        sampler = DistributedSampler(bundle.train, num_replicas=world, rank=rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(bundle.train, generator=g)
    return DataLoader(bundle.train, batch_size=cfg.batch_size, sampler=sampler,
                      num_workers=cfg.workers, collate_fn=bundle.train_collate or bundle.collate, drop_last=True,
                      generator=g, persistent_workers=False)


def _val_loader(bundle: DataBundle, cfg: TrainConfig):
    return DataLoader(bundle.val, batch_size=max(1, cfg.batch_size), shuffle=False,
                      num_workers=cfg.workers, collate_fn=bundle.collate)


# ----------------------------------------------------------------------------- checkpoints
def _checkpoint_extra(cfg, bundle, task, epoch, step, metrics=None) -> dict[str, Any]:
    return {
        "epoch": epoch, "step": step, "model": cfg.model, "model_kwargs": cfg.model_kwargs,
        "num_classes": bundle.num_classes, "class_names": bundle.class_names,
        "label_to_cat_id": bundle.meta.get("label_to_cat_id"), "image_size": cfg.image_size,
        "task": task.name, "config": cfg.to_dict(), "metrics": metrics or {},
    }


def scaler_state(scaler: torch.amp.GradScaler) -> dict[str, Any] | None:
    """The AMP gradient scaler's state as JSON-able numbers (None when AMP is off)."""
    if not scaler.is_enabled():
        return None
    return {k: (v.item() if torch.is_tensor(v) else v) for k, v in scaler.state_dict().items()}


def restore_scaler(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> bool:
    """Load ``state["scaler"]`` (a checkpoint sidecar) into an enabled scaler; True if loaded."""
    saved = state.get("scaler")
    if not saved or not scaler.is_enabled():
        return False
    scaler.load_state_dict(dict(saved))
    return True


# ------------------------------------------------------------------------------ start info
def start_summary(cfg: TrainConfig, model: nn.Module, bundle: DataBundle, steps_per_epoch: int,
                  total_steps: int, device: torch.device, world: int = 1) -> str:
    """One line: model, parameters, data, input size, steps, device and threads."""
    params = sum(p.numel() for p in model.parameters()) / 1e6
    procs = f" × {world} processes" if world > 1 else ""
    return (f"train {cfg.model}: {params:.2f} M params · {len(bundle.train)} train / {len(bundle.val)} "
            f"val images · {bundle.num_classes} classes · input {cfg.image_size} px · "
            f"{steps_per_epoch} steps/epoch · {total_steps} steps in all · {device}{procs} · "
            f"{torch.get_num_threads()} torch threads")


# ------------------------------------------------------------------------------------- train
def share_initialisation(model: nn.Module, reference: nn.Module) -> tuple[int, int]:
    """Copy into ``model`` every parameter and buffer of ``reference`` with the same name and shape.

    Paired comparisons (a study's rows with one seed): a model with an extra block starts where its
    reference starts in every part they have in common, so the pair differs by the block alone.
    Returns ``(tensors copied, tensors in model)``.
    """
    ref = reference.state_dict()
    own = model.state_dict()
    shared = {k: v for k, v in ref.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    return len(shared), len(own)


def train(cfg: TrainConfig, *, resume: bool = False, weights: str | None = None,
          exist_ok: bool = False, stop_after: int | None = None,
          init_like: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data``.

    Returns ``dict(out, evaluation, last_epoch, best_evaluation, best_epoch, best, epochs,
    steps, seconds, loop_seconds, finished, shared_init)``: ``evaluation`` is the last weights'
    (see "Last versus best" in the module docstring); both evaluations are empty until the run
    has finished. ``loop_seconds`` is the time inside training steps (data, compute, logging;
    no evaluation or checkpointing); both add up every call of a resumed run (each up to its last
    checkpoint, which ``last.json`` keeps as ``train_seconds`` and ``train_loop_seconds``);
    ``shared_init`` is ``(copied, total)`` with ``init_like``.

    Args:
        resume: continue from ``cfg.out/checkpoints/last`` with identical optimizer, schedule
            and epoch state.
        weights: a ``.safetensors`` file to initialise the model from (fine-tuning).
        exist_ok: allow writing into a run folder that already has checkpoints (overwrites them),
            or into a non-empty folder that is not a run folder.
        stop_after: train at most this many epochs in this call and return; the schedule still
            spans ``cfg.epochs``, so a later ``resume=True`` call continues seamlessly (time-sliced
            jobs on shared clusters).

        init_like: ``(model name, model_kwargs)`` of a reference model: built with the same seed,
            its tensors initialise every tensor of this model with the same name and shape
            (:func:`share_initialisation`; studies pair each row with its reference this way).
    """
    main = is_main_process()
    rank, world, device = _setup_distributed(cfg.device)
    out = check_run_folder(cfg.out, resume=resume, exist_ok=exist_ok)  # before any work
    ckpt_dir = out / "checkpoints"
    if resume and main:  # a run killed while saving: the checkpoint before it (the other ranks wait
        for name in ("last", "best"):  # at the data barrier below, so they load the repaired set)
            note = recover_checkpoint(ckpt_dir, name)
            if note:
                console.print(note, style="yellow")
    if weights and not Path(weights).is_file():
        raise UserInputError(f"--weights {weights}: file not found; pass a .safetensors file")
    if weights and Path(weights).resolve().is_relative_to(out.resolve()):
        raise UserInputError(f"--weights {weights} lies inside --out {out}, whose checkpoints this run "
                             "writes; copy the weights elsewhere first")
    check_logger(cfg.logger)  # an optional dependency that is missing: said before any work
    task = make_task(cfg)
    task.check_augment(cfg.augment)
    check_model_kwargs(cfg.model, cfg.model_kwargs)  # before data is generated or read
    with torch.device("meta"):  # the options' values too: a build that allocates nothing
        create_model(cfg.model, **{"num_classes": 1, **cfg.model_kwargs})
    torch.manual_seed(cfg.seed)
    if world > 1 and rank != 0:
        dist.barrier()  # rank 0 builds (and for built-in data, generates) the data first
    bundle = task.build_data(cfg)
    if world > 1 and rank == 0:
        dist.barrier()
    if len(bundle.train) < cfg.batch_size * world:
        raise UserInputError(f"--data {cfg.data}: {len(bundle.train)} training images, fewer than one "
                             f"batch ({cfg.batch_size}×{world}); lower --batch-size")
    torch.manual_seed(cfg.seed)  # model init does not depend on how much data building consumed
    model = create_model(cfg.model, num_classes=bundle.num_classes, **cfg.model_kwargs).to(device)
    shared_init = None
    if init_like is not None and not weights and not resume:
        torch.manual_seed(cfg.seed)
        reference = create_model(init_like[0], num_classes=bundle.num_classes, **init_like[1])
        shared_init = share_initialisation(model, reference.to(device))
        del reference
    if weights:
        load_weights(model, weights)
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = len(bundle.train) // (cfg.batch_size * world)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp else nullcontext

    start_epoch, step, best, best_epoch = 0, 0, -math.inf, 0
    # Time spent by earlier calls of a resumed run, up to its checkpoint (the epoch in flight when
    # it was stopped is trained again, so it counts once).
    earlier_seconds, earlier_loop_seconds = 0.0, 0.0
    metrics_path = out / "metrics.jsonl"
    if resume:
        state = load_checkpoint_state(ckpt_dir, "last", model, optimizer)
        start_epoch, step = int(state["epoch"]), int(state["step"])
        earlier_seconds = float(state.get("train_seconds") or 0.0)
        earlier_loop_seconds = float(state.get("train_loop_seconds") or 0.0)
        best = -math.inf if state.get("best") is None else float(state["best"])
        best_epoch = int(state.get("best_epoch") or read_sidecar(ckpt_dir / "best.safetensors").get("epoch", 0))
        restore_scaler(scaler, state)
        if main:
            _truncate_jsonl_after(metrics_path, step)
            console.print(f"resuming {out} at epoch {start_epoch + 1}/{cfg.epochs} (step {step})")
    elif main:
        make_output_dir(out)  # created and marked as hybridvision's (fileio.OWNER_MARKER)
        metrics_path.unlink(missing_ok=True)
        for stale in [*ckpt_dir.glob("best.*"), *ckpt_dir.glob("last.prev.*")]:  # of an overwritten run
            stale.unlink()
        for stale in (out / TENSORBOARD_DIR).glob("events.out.tfevents.*"):  # its TensorBoard events
            stale.unlink()
    if main:
        save_config(cfg, out / "config.yaml")
        console.print(start_summary(cfg, model, bundle, steps_per_epoch, total_steps, device, world),
                      highlight=False, markup=False)
        for warning in task.start_warnings(model, bundle, cfg):
            console.print(warning, style="yellow")
        report = getattr(model, "backbone_weights_report", None)
        if report is not None and not resume:
            console.print(f"backbone weights {report['file']}: loaded {report['loaded']} tensors; "
                          f"{len(report['missing'])} of the backbone's not in the file"
                          + (f" ({', '.join(report['missing'][:3])}…)" if report["missing"] else "")
                          + f"; {len(report['unexpected'])} of the file's unused"
                          + (f" ({', '.join(report['unexpected'][:3])}…)" if report["unexpected"] else "")
                          + f"; classifier ({len(report['skipped'])} tensors) skipped",
                          highlight=False, markup=False)
        if shared_init is not None:
            console.print(f"initialised {shared_init[0]} of {shared_init[1]} tensors as {init_like[0]} "
                          f"with seed {cfg.seed} (paired with it)", highlight=False, markup=False)

    train_model: nn.Module = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    t0 = time.time()
    loop_seconds = 0.0  # inside the training steps (data + compute + logging), no evaluation
    last_eval: dict[str, Any] = {}
    last_results: list[dict] = []
    evaluated_epoch = -1  # the epoch whose weights last_eval describes
    best_eval: dict[str, Any] = {}
    best_results: list[dict] = []
    epoch_done = start_epoch
    # metrics.jsonl is the record; the logger mirrors it (resume: from the step after the checkpoint)
    logger = make_logger(cfg.logger, out, purge_step=step + 1 if resume else None) if main else NullLogger()
    plain_log = not (cfg.progress and console.is_terminal)  # no live bar: log lines instead
    log_every = max(10, steps_per_epoch // 4)
    log_start = (step, time.time())
    with make_progress(cfg.progress) as progress, contextlib.closing(logger):
        end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
        for epoch in range(start_epoch, end_epoch):
            if cfg.max_steps and step >= cfg.max_steps:
                break
            torch.manual_seed(augmentation_seed(cfg.seed, epoch, rank))  # augmentation RNG of this epoch
            if hasattr(bundle.train, "set_epoch"):  # data drawn per epoch (SBIR pairs, triplets)
                bundle.train.set_epoch(epoch)
            loader = epoch_loader(bundle, cfg, epoch, world, rank)
            bar = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(loader), info="")
            train_model.train()
            running: dict[str, float] = {}
            n_running = 0
            t_loop = time.perf_counter()
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
                if main and (step % 10 == 0 or last_of_epoch):
                    # the mean over the steps since the previous record (a smooth curve, no resets)
                    rec = {"epoch": epoch + 1, "step": step, "lr": lr,
                           **{k: v / n_running for k, v in running.items()}}
                    _append_jsonl(metrics_path, rec)
                    logger.log(rec, step, "train")
                    running, n_running = {}, 0
                progress.update(bar, advance=1, info=f"loss {float(loss.detach()):.3f} lr {lr:.2g}")
                if plain_log and main and (step % log_every == 0 or last_of_epoch):
                    # No live bar (a file, a pipe, progress=false): a line with loss, speed, ETA.
                    rate = (step - log_start[0]) / max(time.time() - log_start[1], 1e-9)
                    eta = (total_steps - step) / max(rate, 1e-9)
                    console.print(f"epoch {epoch + 1}/{cfg.epochs} step {step}/{total_steps} loss "
                                  f"{float(loss.detach()):.4f} lr {lr:.3g} · {rate:.2f} steps/s · ETA "
                                  f"{_clock(eta)}", highlight=False, markup=False)
            loop_seconds += time.perf_counter() - t_loop

            epoch_done = epoch + 1
            do_eval = (cfg.eval_every and epoch_done % cfg.eval_every == 0) or epoch_done == cfg.epochs \
                or (cfg.max_steps and step >= cfg.max_steps)
            if main:
                if do_eval:
                    last_eval, last_results = task.evaluate(model, _val_loader(bundle, cfg), device, bundle)
                    evaluated_epoch = epoch_done
                    flat = last_eval.get("metrics", last_eval)
                    _append_jsonl(metrics_path, {"epoch": epoch_done, "step": step, **flat})
                    logger.log(flat, step, "val")
                    score = float(flat[task.primary_metric])
                    if score > best:
                        best, best_epoch = score, epoch_done
                        best_eval, best_results = last_eval, last_results
                        with interrupts_deferred():
                            save_checkpoint(ckpt_dir, "best", model,
                                            extra=_checkpoint_extra(cfg, bundle, task, epoch_done, step, flat))
                    console.print(f"epoch {epoch_done}/{cfg.epochs}: {task.primary_metric} "
                                  f"{score:.4f} (best {best:.4f}, epoch {best_epoch})")
                extra = _checkpoint_extra(cfg, bundle, task, epoch_done, step)
                extra.update(best=best if math.isfinite(best) else None, best_epoch=best_epoch,
                             train_seconds=earlier_seconds + time.time() - t0,
                             train_loop_seconds=earlier_loop_seconds + loop_seconds)
                saved_scaler = scaler_state(scaler)
                if saved_scaler is not None:
                    extra["scaler"] = saved_scaler
                with interrupts_deferred():  # Ctrl-C lands after the checkpoint, never inside it
                    save_checkpoint(ckpt_dir, "last", model, optimizer=optimizer, extra=extra)
            if world > 1:
                dist.barrier()

    finished = epoch_done >= cfg.epochs or bool(cfg.max_steps and step >= cfg.max_steps)
    seconds = earlier_seconds + time.time() - t0
    loop_seconds += earlier_loop_seconds
    if main and finished:
        if evaluated_epoch != epoch_done:  # e.g. resuming a finished run: evaluate last now
            last_eval, last_results = task.evaluate(model, _val_loader(bundle, cfg), device, bundle)
        if best_epoch in (0, epoch_done) or not (ckpt_dir / "best.safetensors").is_file():
            best_eval, best_results, best_epoch = last_eval, last_results, epoch_done
        elif not best_eval:  # best is an epoch of an earlier call: evaluate its weights
            best_model = create_model(cfg.model, num_classes=bundle.num_classes, **cfg.model_kwargs)
            load_weights(best_model, ckpt_dir / "best.safetensors")
            best_eval, best_results = task.evaluate(best_model.to(device), _val_loader(bundle, cfg),
                                                    device, bundle)
        _write_evaluation(out / "eval" / "last", task, last_eval, last_results)
        _write_evaluation(out / "eval" / "best", task, best_eval, best_results)
        _write_evaluation(out / "eval", task, best_eval, best_results)
        if best_results:  # detection: the COCO results of the best weights at the run's root
            atomic_write_text(out / "predictions.json", json.dumps(best_results))
    if main:
        _plot_loss(out)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if not finished:
        last_eval, best_eval = {}, {}
    return {"out": str(out), "evaluation": last_eval, "last_epoch": epoch_done,
            "best_evaluation": best_eval, "best_epoch": best_epoch, "best": best,
            "epochs": cfg.epochs, "steps": step, "seconds": seconds, "loop_seconds": loop_seconds,
            "finished": finished, "shared_init": shared_init}


def _clock(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss``) of a duration."""
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def _write_evaluation(folder: Path, task, evaluation: dict[str, Any], results: list[dict]) -> None:
    """The task's files of one evaluation in ``folder`` (``coco_metrics.json`` +
    ``predictions.json``, or ``metrics.json``), as ``hybridvision eval`` writes them."""
    if evaluation:
        make_output_dir(folder)
        task.write_evaluation(evaluation, results, folder)


def _plot_loss(out: Path) -> None:
    """``plots/loss.png`` and ``plots/results.png`` from ``metrics.jsonl``; each may fail alone."""
    for name, plot in (("loss", plot_loss_curve), ("results", plot_results)):
        try:
            plot(out / "metrics.jsonl", out / "plots" / f"{name}.png")
        except Exception as e:  # a plot must never lose a finished run
            console.print(f"{name} plot skipped: {e}", style="yellow")
