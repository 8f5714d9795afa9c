"""Top-k accuracy for image / sketch classification (thesis B reports top-1 and top-5).

Symbols: N samples, C classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

__all__ = ["topk_accuracy", "ClassificationMeter"]


def _hard_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Class indices ``[N]`` from ``[N]`` indices or ``[N, C]`` one-hot / soft (mixup, smoothing) targets."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, C], got shape {tuple(logits.shape)}")
    if targets.dim() == 2:
        if targets.shape != logits.shape:
            raise ValueError(f"soft targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
        targets = targets.argmax(dim=1)
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(f"targets must be [N] (N={logits.shape[0]}), got shape {tuple(targets.shape)}")
    return targets.to(device=logits.device, dtype=torch.long)


def _topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> dict[int, int]:
    """Number of samples whose target is among the k highest logits, for each k."""
    targets = _hard_targets(logits, targets)  # [N]
    if logits.shape[0] == 0:
        return {k: 0 for k in ks}
    # k larger than the number of classes counts every sample as correct (timm does the same).
    max_k = min(max(ks), logits.shape[1])
    top = logits.topk(max_k, dim=1).indices  # [N, max_k], best first
    hit = top.eq(targets[:, None])  # [N, max_k]; at most one True per row
    cum = hit.cumsum(dim=1).clamp_(max=1)  # [N, max_k]: 1 from the position of the target onwards
    counts = cum.sum(dim=0)  # [max_k]: correct within the top 1, 2, ..., max_k
    return {k: int(counts[min(k, max_k) - 1]) for k in ks}


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of samples whose target is in the top-k predictions.

    Args:
        logits: ``[N, C]`` scores (any monotone transform, e.g. probabilities, gives the same result).
        targets: ``[N]`` class indices, or ``[N, C]`` soft targets (their argmax is the class).
        ks: the k values; each must be >= 1.

    Returns:
        ``{"top1": float, "top5": float, ...}`` in [0, 1]; 0.0 for an empty batch.
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    n = logits.shape[0]
    correct = _topk_correct(logits.detach(), targets.detach(), ks)
    return {f"top{k}": (correct[k] / n if n else 0.0) for k in ks}


class ClassificationMeter:
    """Accumulates top-k hits (and optionally a loss) over batches; ``compute()`` gives the means.

    Example::

        meter = ClassificationMeter(ks=(1, 5))
        for x, y in loader:
            logits = model(x)
            meter.update(logits, y, loss=criterion(logits, y))
        meter.all_reduce()  # no-op unless torch.distributed is initialised
        print(meter.compute())  # {"top1": ..., "top5": ..., "loss": ..., "count": N}
    """

    def __init__(self, ks: Sequence[int] = (1, 5)):
        self.ks = tuple(int(k) for k in ks)
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive integers, got {self.ks}")
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.correct = {k: 0 for k in self.ks}
        self.loss_sum = 0.0
        self.loss_count = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor | float | None = None) -> None:
        """Add one batch. ``loss`` is the batch *mean* loss; it is weighted by the batch size."""
        n = int(logits.shape[0])
        for k, c in _topk_correct(logits, targets, self.ks).items():
            self.correct[k] += c
        self.count += n
        if loss is not None:
            self.loss_sum += float(loss) * n
            self.loss_count += n

    def all_reduce(self) -> None:
        """Sum the counts over all processes of the default group (DDP evaluation on shards)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        # float64 holds counts exactly and the loss sum; NCCL needs the tensor on this rank's GPU.
        nccl = dist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        t = torch.tensor(
            [self.count, self.loss_sum, self.loss_count, *(self.correct[k] for k in self.ks)],
            dtype=torch.float64,
            device=device,
        )
        dist.all_reduce(t)
        vals = t.tolist()
        self.count, self.loss_sum, self.loss_count = int(vals[0]), vals[1], int(vals[2])
        self.correct = {k: int(v) for k, v in zip(self.ks, vals[3:])}

    def compute(self) -> dict[str, float]:
        """``{"top1": .., "top5": .., "count": N}`` plus ``"loss"`` if losses were given; 0.0 when empty."""
        out: dict[str, float] = {f"top{k}": (self.correct[k] / self.count if self.count else 0.0) for k in self.ks}
        if self.loss_count:
            out["loss"] = self.loss_sum / self.loss_count
        out["count"] = self.count
        return out
