"""Where a training step's time goes: the whole step in training against its compute alone.

For a training config (the demo's by default), times ``--steps`` steps of the trainer's loop —
the epoch loader (decoding from the cache, augmentation, collation), the task's loss, backward,
gradient clipping, the optimizer step and the per-step bookkeeping — and then the same number of
compute-only steps (loss, backward, clip, optimizer) on batches fetched beforehand. Both phases
are interleaved in rounds, so drifting machine load hits both alike. Prints per-step medians and
the ratio (training ÷ compute-only) and the data pipeline's share, ``1 − 1/ratio``.

    python benchmarks/bench_train_step.py --steps 20 --rounds 3 [--model fcos_demo] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from hybridvision.demo import DEMO_CONFIG
from hybridvision.engine.tasks import make_task
from hybridvision.engine.trainer import build_optimizer, epoch_loader
from hybridvision.factory import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default=DEMO_CONFIG.model)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--data-root", default=None, help="where the built-in data is (default: a temp folder)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.data_root or tempfile.mkdtemp(prefix="bench_train_step_")
    cfg = DEMO_CONFIG.updated({"model": args.model, "data_root": root}, source="bench")
    task = make_task(cfg)
    bundle = task.build_data(cfg)
    torch.manual_seed(0)
    model = create_model(cfg.model, num_classes=bundle.num_classes, **cfg.model_kwargs)
    optimizer = build_optimizer(model, cfg)
    device = torch.device("cpu")
    model.train()

    def compute(batch) -> dict[str, torch.Tensor]:
        losses = task.batch_loss(model, batch, device)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        return losses

    def training_steps(epoch: int) -> float:
        """``args.steps`` steps as the trainer runs them; seconds per step."""
        loader = epoch_loader(bundle, cfg, epoch, 1, 0)
        running: dict[str, float] = {}
        t0 = time.perf_counter()
        for i, batch in enumerate(loader):
            if i == args.steps:
                break
            losses = compute(batch)
            finite = torch.isfinite(losses["loss"].detach()).float()
            assert finite.item() == 1
            for k, v in losses.items():  # the trainer's running means
                running[k] = running.get(k, 0.0) + float(v.detach())
        return (time.perf_counter() - t0) / args.steps

    def compute_only(epoch: int) -> float:
        loader = iter(epoch_loader(bundle, cfg, epoch, 1, 0))
        batches = [next(loader) for _ in range(args.steps)]
        t0 = time.perf_counter()
        for batch in batches:
            compute(batch)
        return (time.perf_counter() - t0) / args.steps

    compute(next(iter(epoch_loader(bundle, cfg, 99, 1, 0))))  # warm-up
    train_s, comp_s = [], []
    for r in range(args.rounds):
        train_s.append(training_steps(2 * r))
        comp_s.append(compute_only(2 * r + 1))
    t, c = statistics.median(train_s), statistics.median(comp_s)
    print(f"model {cfg.model}, batch {cfg.batch_size} at {cfg.image_size}px, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds × {args.steps} steps")
    print(f"training step {t * 1000:.1f} ms · compute-only {c * 1000:.1f} ms · ratio {t / c:.3f} · "
          f"data and bookkeeping {100 * (1 - c / t):.1f} % of a step")


if __name__ == "__main__":
    main()
