"""The training loop: one for every task, on one device or many (``torchrun``).

:func:`train` runs named steps: :func:`_prepare` (checks, data, model, optimizer, the run
folder), then for each epoch :func:`_train_one_epoch` (each optimizer step in
:func:`_train_step`) and :func:`_end_of_epoch` (evaluation, checkpoints), and :func:`_finish`;
it returns a :class:`TrainResult`. The task (:class:`~hybridvision.engine.tasks.protocol.Task`)
gives the data, the loss of a batch and the evaluation; the loop owns everything else.

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
and ``best (epoch M)``. ``train``'s :class:`TrainResult` holds the last weights' evaluation as
``evaluation`` (studies report it: the final model, not one picked on the val split) and best's as
``best_evaluation``.
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
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from rich.progress import Progress
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from hybridvision.config import TrainConfig, save_config
from hybridvision.engine.checkpoint import (load_checkpoint_state, load_weights, read_sidecar,
                                            recover_checkpoint, save_checkpoint)
from hybridvision.engine.loggers import TENSORBOARD_DIR, NullLogger, TensorBoardLogger, check_logger, make_logger
from hybridvision.engine.progress import console, is_main_process, make_progress
from hybridvision.engine.tasks import DataBundle, Task, make_task
from hybridvision.errors import UserInputError
from hybridvision.fileio import OWNER_MARKER, atomic_write_text, make_output_dir, write_error
from hybridvision.plots import plot_loss_curve, plot_results
from hybridvision.factory import create_model
from hybridvision.registry import check_model_kwargs

__all__ = ["train", "TrainResult", "NonFiniteLossError", "resolve_device", "lr_factor", "check_run_folder",
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


# ------------------------------------------------------------------------------ the result
@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``evaluation`` is the last weights' and ``best_evaluation`` the best's (see "Last versus
    best" in the module docstring); both are empty until the run has finished. ``seconds`` and
    ``loop_seconds`` add up every call of a resumed run, each up to its last checkpoint (which
    ``last.json`` keeps as ``train_seconds`` and ``train_loop_seconds``).
    """

    out: Path                         # the run folder
    evaluation: dict[str, Any]        # the last weights' evaluation ({} until the run has finished)
    last_epoch: int                   # epochs completed
    best_evaluation: dict[str, Any]   # the best weights' evaluation ({} until the run has finished)
    best_epoch: int                   # the epoch of checkpoints/best (0: none evaluated yet)
    best: float                       # its primary metric (-inf: none evaluated yet)
    epochs: int                       # the schedule's length, ``cfg.epochs``
    steps: int                        # optimizer steps taken, every call of the run together
    seconds: float                    # wall time of the run
    loop_seconds: float               # of which inside training steps (data, compute, logging)
    finished: bool                    # the schedule is done (every epoch, or ``max_steps``)
    shared_init: tuple[int, int] | None  # (tensors copied, tensors in the model) with ``init_like``


# ----------------------------------------------------------------------- what the loop holds
_Logger = NullLogger | TensorBoardLogger  # mirrors metrics.jsonl (engine/loggers.py)


@dataclass
class _Run:
    """What preparation sets up; the loop reads it (and trains ``model``'s weights)."""

    cfg: TrainConfig
    out: Path
    rank: int
    world: int
    main: bool                        # rank 0: prints and writes
    device: torch.device
    task: Task
    bundle: DataBundle
    model: nn.Module                  # the model itself: checkpoints and evaluation
    train_model: nn.Module            # what a step calls: ``model`` or its DistributedDataParallel
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager]
    steps_per_epoch: int
    total_steps: int
    plain_log: bool                   # no live bar (a file, a pipe, progress=false): log lines instead
    shared_init: tuple[int, int] | None

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    def steps_done(self, step: int) -> bool:
        """``max_steps`` (when set) reached."""
        return bool(self.cfg.max_steps and step >= self.cfg.max_steps)


@dataclass
class _State:
    """What the loop changes: the counters ``checkpoints/last.json`` keeps, the time, and the
    evaluations held in memory."""

    epoch: int = 0                    # epochs completed
    step: int = 0                     # optimizer steps taken
    best: float = -math.inf           # the best primary metric so far
    best_epoch: int = 0
    # Time spent by earlier calls of a resumed run, up to its checkpoint (the epoch in flight when
    # it was stopped is trained again, so it counts once).
    earlier_seconds: float = 0.0
    earlier_loop_seconds: float = 0.0
    started: float = 0.0              # time.time() when this call's loop began
    loop_seconds: float = 0.0         # this call's time inside the training steps (no evaluation)
    rate_from: tuple[int, float] = (0, 0.0)  # (step, time) the logged speed is measured from
    last_eval: dict[str, Any] = field(default_factory=dict)
    last_results: list[dict] = field(default_factory=list)
    evaluated_epoch: int = -1         # the epoch whose weights last_eval describes
    best_eval: dict[str, Any] = field(default_factory=dict)
    best_results: list[dict] = field(default_factory=list)


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
          init_like: tuple[str, dict[str, Any]] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; returns a :class:`TrainResult`.

    The steps: :func:`_prepare` (checks, data, model, optimizer, the run folder), then per epoch
    :func:`_train_one_epoch` (each optimizer step in :func:`_train_step`) and
    :func:`_end_of_epoch` (evaluation, ``best`` and ``last`` checkpoints), and :func:`_finish`
    (the last and best evaluations written, plots).

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
    run, state = _prepare(cfg, resume=resume, weights=weights, exist_ok=exist_ok, init_like=init_like)
    # metrics.jsonl is the record; the logger mirrors it (resume: from the step after the checkpoint)
    logger = make_logger(cfg.logger, run.out, purge_step=state.step + 1 if resume else None) if run.main \
        else NullLogger()
    state.rate_from = (state.step, time.time())
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, state.epoch + stop_after)
    with make_progress(cfg.progress) as progress, contextlib.closing(logger):
        for epoch in range(state.epoch, end_epoch):
            if run.steps_done(state.step):
                break
            _train_one_epoch(run, state, epoch, progress, logger)
            _end_of_epoch(run, state, logger)
    return _finish(run, state)


# ------------------------------------------------------------------------------ preparation
def _prepare(cfg: TrainConfig, *, resume: bool, weights: str | None, exist_ok: bool,
             init_like: tuple[str, dict[str, Any]] | None) -> tuple[_Run, _State]:
    """Everything before the first step, in this order: what can be refused without work (the
    run folder, ``weights``, the logger, the task's and model's options), the data, the model,
    the optimizer, the run folder resumed or started afresh, the start lines."""
    main = is_main_process()
    rank, world, device = _setup_distributed(cfg.device)
    out = check_run_folder(cfg.out, resume=resume, exist_ok=exist_ok)  # before any work
    if resume and main:  # a run killed while saving: the checkpoint before it (the other ranks wait
        _recover_checkpoints(out / "checkpoints")  # at the data barrier, so they load the repaired set)
    _check_weights(weights, out)
    check_logger(cfg.logger)  # an optional dependency that is missing: said before any work
    task = _checked_task(cfg)
    bundle = _build_data(task, cfg, rank, world)
    model, shared_init = _build_model(cfg, bundle, device, weights=weights,
                                      init_like=None if weights or resume else init_like)
    steps_per_epoch = len(bundle.train) // (cfg.batch_size * world)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    use_amp = cfg.amp and device.type == "cuda"
    run = _Run(cfg=cfg, out=out, rank=rank, world=world, main=main, device=device, task=task, bundle=bundle,
               model=model, train_model=model, optimizer=build_optimizer(model, cfg),
               scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
               autocast=(lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp else nullcontext,
               steps_per_epoch=steps_per_epoch, total_steps=total_steps,
               plain_log=not (cfg.progress and console.is_terminal), shared_init=shared_init)
    state = _resume_state(run) if resume else _start_fresh(run)
    if main:
        save_config(cfg, out / "config.yaml")
        _print_start(run, resume=resume, init_like=init_like)
    if world > 1:
        run.train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    state.started = time.time()
    return run, state


def _recover_checkpoints(ckpt_dir: Path) -> None:
    """Repair ``last`` and ``best`` of a run killed while saving them (the previous checkpoint)."""
    for name in ("last", "best"):
        note = recover_checkpoint(ckpt_dir, name)
        if note:
            console.print(note, style="yellow")


def _check_weights(weights: str | None, out: Path) -> None:
    """``--weights``: a file, and not one of the checkpoints this run overwrites."""
    if weights and not Path(weights).is_file():
        raise UserInputError(f"--weights {weights}: file not found; pass a .safetensors file")
    if weights and Path(weights).resolve().is_relative_to(out.resolve()):
        raise UserInputError(f"--weights {weights} lies inside --out {out}, whose checkpoints this run "
                             "writes; copy the weights elsewhere first")


def _checked_task(cfg: TrainConfig) -> Task:
    """The run's task, with the augmentation and model options checked before any data is built."""
    task = make_task(cfg)
    task.check_augment(cfg.augment)
    check_model_kwargs(cfg.model, cfg.model_kwargs)  # before data is generated or read
    with torch.device("meta"):  # the options' values too: a build that allocates nothing
        create_model(cfg.model, **{"num_classes": 1, **cfg.model_kwargs})
    return task


def _build_data(task: Task, cfg: TrainConfig, rank: int, world: int) -> DataBundle:
    """The task's data; rank 0 builds (and for built-in data, generates) it first, the others wait."""
    torch.manual_seed(cfg.seed)
    if world > 1 and rank != 0:
        dist.barrier()
    bundle = task.build_data(cfg)
    if world > 1 and rank == 0:
        dist.barrier()
    if len(bundle.train) < cfg.batch_size * world:
        raise UserInputError(f"--data {cfg.data}: {len(bundle.train)} training images, fewer than one "
                             f"batch ({cfg.batch_size}×{world}); lower --batch-size")
    return bundle


def _build_model(cfg: TrainConfig, bundle: DataBundle, device: torch.device, *, weights: str | None,
                 init_like: tuple[str, dict[str, Any]] | None) -> tuple[nn.Module, tuple[int, int] | None]:
    """The model on ``device``, seeded by ``cfg.seed`` alone; its tensors shared with ``init_like``'s
    (:func:`share_initialisation`), then ``weights`` loaded. Returns ``(model, shared_init)``."""
    torch.manual_seed(cfg.seed)  # model init does not depend on how much data building consumed
    model = create_model(cfg.model, num_classes=bundle.num_classes, **cfg.model_kwargs).to(device)
    shared_init = None
    if init_like is not None:
        torch.manual_seed(cfg.seed)
        reference = create_model(init_like[0], num_classes=bundle.num_classes, **init_like[1])
        shared_init = share_initialisation(model, reference.to(device))
        del reference
    if weights:
        load_weights(model, weights)
    return model, shared_init


def _resume_state(run: _Run) -> _State:
    """Weights, optimizer and scaler from ``checkpoints/last``, and the counters it kept;
    ``metrics.jsonl`` cut back to its step."""
    saved = load_checkpoint_state(run.ckpt_dir, "last", run.model, run.optimizer)
    state = _State(epoch=int(saved["epoch"]), step=int(saved["step"]),
                   earlier_seconds=float(saved.get("train_seconds") or 0.0),
                   earlier_loop_seconds=float(saved.get("train_loop_seconds") or 0.0),
                   best=-math.inf if saved.get("best") is None else float(saved["best"]),
                   best_epoch=int(saved.get("best_epoch")
                                  or read_sidecar(run.ckpt_dir / "best.safetensors").get("epoch", 0)))
    restore_scaler(run.scaler, saved)
    if run.main:
        _truncate_jsonl_after(run.metrics_path, state.step)
        console.print(f"resuming {run.out} at epoch {state.epoch + 1}/{run.cfg.epochs} (step {state.step})")
    return state


def _start_fresh(run: _Run) -> _State:
    """A new run folder, or an overwritten one without what the earlier run left."""
    if run.main:
        make_output_dir(run.out)  # created and marked as hybridvision's (fileio.OWNER_MARKER)
        run.metrics_path.unlink(missing_ok=True)
        for stale in [*run.ckpt_dir.glob("best.*"), *run.ckpt_dir.glob("last.prev.*")]:  # of an overwritten run
            stale.unlink()
        for stale in (run.out / TENSORBOARD_DIR).glob("events.out.tfevents.*"):  # its TensorBoard events
            stale.unlink()
    return _State()


def _print_start(run: _Run, *, resume: bool, init_like: tuple[str, dict[str, Any]] | None) -> None:
    """The start lines: :func:`start_summary`, the task's warnings, the backbone weights loaded,
    the initialisation shared with ``init_like``."""
    cfg = run.cfg
    console.print(start_summary(cfg, run.model, run.bundle, run.steps_per_epoch, run.total_steps, run.device,
                                run.world), highlight=False, markup=False)
    for warning in run.task.start_warnings(run.model, run.bundle, cfg):
        console.print(warning, style="yellow")
    report = getattr(run.model, "backbone_weights_report", None)
    if report is not None and not resume:
        console.print(f"backbone weights {report['file']}: loaded {report['loaded']} tensors; "
                      f"{len(report['missing'])} of the backbone's not in the file"
                      + (f" ({', '.join(report['missing'][:3])}…)" if report["missing"] else "")
                      + f"; {len(report['unexpected'])} of the file's unused"
                      + (f" ({', '.join(report['unexpected'][:3])}…)" if report["unexpected"] else "")
                      + f"; classifier ({len(report['skipped'])} tensors) skipped",
                      highlight=False, markup=False)
    if run.shared_init is not None and init_like is not None:
        console.print(f"initialised {run.shared_init[0]} of {run.shared_init[1]} tensors as {init_like[0]} "
                      f"with seed {cfg.seed} (paired with it)", highlight=False, markup=False)


# -------------------------------------------------------------------------------- one epoch
def _train_one_epoch(run: _Run, state: _State, epoch: int, progress: Progress, logger: _Logger) -> None:
    """Epoch ``epoch`` (0-based): its steps, each loss record (``metrics.jsonl``, the logger, every
    10 steps and at the end) and the progress bar or log lines. Stops early at ``max_steps``."""
    cfg = run.cfg
    torch.manual_seed(augmentation_seed(cfg.seed, epoch, run.rank))  # augmentation RNG of this epoch
    if hasattr(run.bundle.train, "set_epoch"):  # data drawn per epoch (SBIR pairs, triplets)
        run.bundle.train.set_epoch(epoch)
    loader = epoch_loader(run.bundle, cfg, epoch, run.world, run.rank)
    bar = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(loader), info="")
    log_every = max(10, run.steps_per_epoch // 4)
    run.train_model.train()
    running: dict[str, float] = {}  # loss sums since the previous record
    n_running = 0
    t_loop = time.perf_counter()
    for i, batch in enumerate(loader):
        if run.steps_done(state.step):
            break
        lr = cfg.lr * lr_factor(state.step, run.total_steps, cfg)
        losses = _train_step(run, batch, lr, epoch, state.step)
        state.step += 1
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        n_running += 1
        last_of_epoch = i == len(loader) - 1 or run.steps_done(state.step)
        if run.main and (state.step % 10 == 0 or last_of_epoch):
            # the mean over the steps since the previous record (a smooth curve, no resets)
            rec = {"epoch": epoch + 1, "step": state.step, "lr": lr, **{k: v / n_running for k, v in running.items()}}
            _append_jsonl(run.metrics_path, rec)
            logger.log(rec, state.step, "train")
            running, n_running = {}, 0
        loss = float(losses["loss"].detach())
        progress.update(bar, advance=1, info=f"loss {loss:.3f} lr {lr:.2g}")
        if run.plain_log and run.main and (state.step % log_every == 0 or last_of_epoch):
            _print_step_line(run, state, epoch, loss, lr)
    state.loop_seconds += time.perf_counter() - t_loop
    state.epoch = epoch + 1


def _train_step(run: _Run, batch: Any, lr: float, epoch: int, step: int) -> dict[str, torch.Tensor]:
    """One optimizer step at learning rate ``lr``; returns the batch's losses (``"loss"`` the
    total). A non-finite loss on any process is a :class:`NonFiniteLossError` before the update."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    with run.autocast():
        losses = run.task.batch_loss(run.train_model, batch, run.device)
    loss = losses["loss"]
    finite = torch.isfinite(loss.detach()).float()
    if run.world > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if finite.item() < 1:
        parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
        raise NonFiniteLossError(
            f"{run.out}: non-finite loss at epoch {epoch + 1} step {step} ({parts}); nothing "
            f"was saved from this step — lower --lr (now {run.cfg.lr:g}), set grad_clip=10, "
            "or check the data with `hybridvision data check`")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return losses


def _print_step_line(run: _Run, state: _State, epoch: int, loss: float, lr: float) -> None:
    """A log line with loss, speed and ETA (no live bar: a file, a pipe, ``progress=false``)."""
    start_step, start_time = state.rate_from
    rate = (state.step - start_step) / max(time.time() - start_time, 1e-9)
    eta = (run.total_steps - state.step) / max(rate, 1e-9)
    console.print(f"epoch {epoch + 1}/{run.cfg.epochs} step {state.step}/{run.total_steps} loss "
                  f"{loss:.4f} lr {lr:.3g} · {rate:.2f} steps/s · ETA {_clock(eta)}",
                  highlight=False, markup=False)


# ---------------------------------------------------------------------------- end of epoch
def _end_of_epoch(run: _Run, state: _State, logger: _Logger) -> None:
    """After each epoch, on rank 0: evaluate when due (every ``eval_every`` epochs, the last
    epoch, at ``max_steps``), keep ``best`` when it improved, save ``last``; then every rank waits."""
    if run.main:
        cfg = run.cfg
        if (cfg.eval_every and state.epoch % cfg.eval_every == 0) or state.epoch == cfg.epochs \
                or run.steps_done(state.step):
            _evaluate_epoch(run, state, logger)
        _save_last(run, state)
    if run.world > 1:
        dist.barrier()


def _evaluate_epoch(run: _Run, state: _State, logger: _Logger) -> None:
    """Evaluate the weights of the epoch just done; a new best is saved as ``checkpoints/best``."""
    state.last_eval, state.last_results = run.task.evaluate(run.model, _val_loader(run.bundle, run.cfg),
                                                            run.device, run.bundle)
    state.evaluated_epoch = state.epoch
    flat = state.last_eval.get("metrics", state.last_eval)
    _append_jsonl(run.metrics_path, {"epoch": state.epoch, "step": state.step, **flat})
    logger.log(flat, state.step, "val")
    score = float(flat[run.task.primary_metric])
    if score > state.best:
        state.best, state.best_epoch = score, state.epoch
        state.best_eval, state.best_results = state.last_eval, state.last_results
        with interrupts_deferred():
            save_checkpoint(run.ckpt_dir, "best", run.model,
                            extra=_checkpoint_extra(run.cfg, run.bundle, run.task, state.epoch, state.step, flat))
    console.print(f"epoch {state.epoch}/{run.cfg.epochs}: {run.task.primary_metric} "
                  f"{score:.4f} (best {state.best:.4f}, epoch {state.best_epoch})")


def _save_last(run: _Run, state: _State) -> None:
    """``checkpoints/last``: weights, optimizer, counters, time so far and the AMP scaler."""
    extra = _checkpoint_extra(run.cfg, run.bundle, run.task, state.epoch, state.step)
    extra.update(best=state.best if math.isfinite(state.best) else None, best_epoch=state.best_epoch,
                 train_seconds=state.earlier_seconds + time.time() - state.started,
                 train_loop_seconds=state.earlier_loop_seconds + state.loop_seconds)
    saved_scaler = scaler_state(run.scaler)
    if saved_scaler is not None:
        extra["scaler"] = saved_scaler
    with interrupts_deferred():  # Ctrl-C lands after the checkpoint, never inside it
        save_checkpoint(run.ckpt_dir, "last", run.model, optimizer=run.optimizer, extra=extra)


# ---------------------------------------------------------------------------------- finish
def _finish(run: _Run, state: _State) -> TrainResult:
    """After the last epoch of this call: a finished run's last and best evaluations written
    (``eval/last``, ``eval/best``, ``eval/``, ``predictions.json``), the plots, and the result."""
    finished = state.epoch >= run.cfg.epochs or run.steps_done(state.step)
    seconds = state.earlier_seconds + time.time() - state.started
    if run.main and finished:
        _evaluate_last_and_best(run, state)
        _write_evaluations(run, state)
    if run.main:
        _plot_loss(run.out)
    if run.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(out=run.out, evaluation=state.last_eval if finished else {}, last_epoch=state.epoch,
                       best_evaluation=state.best_eval if finished else {}, best_epoch=state.best_epoch,
                       best=state.best, epochs=run.cfg.epochs, steps=state.step, seconds=seconds,
                       loop_seconds=state.earlier_loop_seconds + state.loop_seconds, finished=finished,
                       shared_init=run.shared_init)


def _evaluate_last_and_best(run: _Run, state: _State) -> None:
    """The evaluations of last and best in memory: those the loop made, or made now (a resumed
    run: last when the final epoch was not evaluated in this call, best when it is an epoch of
    an earlier call)."""
    if state.evaluated_epoch != state.epoch:  # e.g. resuming a finished run: evaluate last now
        state.last_eval, state.last_results = run.task.evaluate(run.model, _val_loader(run.bundle, run.cfg),
                                                                run.device, run.bundle)
    if state.best_epoch in (0, state.epoch) or not (run.ckpt_dir / "best.safetensors").is_file():
        state.best_eval, state.best_results, state.best_epoch = state.last_eval, state.last_results, state.epoch
    elif not state.best_eval:  # best is an epoch of an earlier call: evaluate its weights
        best_model = create_model(run.cfg.model, num_classes=run.bundle.num_classes, **run.cfg.model_kwargs)
        load_weights(best_model, run.ckpt_dir / "best.safetensors")
        state.best_eval, state.best_results = run.task.evaluate(best_model.to(run.device),
                                                                _val_loader(run.bundle, run.cfg),
                                                                run.device, run.bundle)


def _write_evaluations(run: _Run, state: _State) -> None:
    """``eval/last``, ``eval/best`` and ``eval/`` (best again, as ``eval --run`` writes it), and
    for detection ``predictions.json`` of the best weights at the run's root."""
    _write_evaluation(run.out / "eval" / "last", run.task, state.last_eval, state.last_results)
    _write_evaluation(run.out / "eval" / "best", run.task, state.best_eval, state.best_results)
    _write_evaluation(run.out / "eval", run.task, state.best_eval, state.best_results)
    if state.best_results:
        atomic_write_text(run.out / "predictions.json", json.dumps(state.best_results))


def _clock(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss``) of a duration."""
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def _write_evaluation(folder: Path, task: Task, evaluation: dict[str, Any], results: list[dict]) -> None:
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
