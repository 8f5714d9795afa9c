"""Soft-NMS cost: :func:`hybridvision.ops.soft_nms` (vectorised over classes) against a plain
Python loop of the same algorithm and against torchvision's hard ``batched_nms``.

Random boxes in clusters (as a detector's candidates are: many boxes around each object), K
classes. The three are timed in interleaved rounds (median per call), so machine drift hits all
alike; prints ms per call and the ratios to ``batched_nms``.

    python benchmarks/bench_soft_nms.py --boxes 1000 --classes 10 --rounds 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torchvision.ops import batched_nms, box_iou

from hybridvision.ops import soft_nms


def clustered_boxes(n: int, num_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    objects = max(1, n // 20)
    centres = torch.rand(objects, 2, generator=g) * 400
    sizes = torch.rand(objects, 2, generator=g) * 80 + 10
    pick = torch.randint(0, objects, (n,), generator=g)
    jitter = torch.randn(n, 4, generator=g) * 4
    c, s = centres[pick], sizes[pick]
    boxes = torch.cat([c - s / 2, c + s / 2], 1) + jitter
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    labels = torch.randint(0, num_classes, (objects,), generator=g)[pick]
    return boxes, torch.rand(n, generator=g), labels


def soft_nms_python(boxes, scores, labels, sigma=0.5, thresh=0.001):
    """Gaussian Soft-NMS, one class at a time, one box at a time (Bodla et al., Algorithm 1)."""
    iou = box_iou(boxes, boxes).tolist()
    kept = []
    for c in set(labels.tolist()):
        score = {i: float(scores[i]) for i in range(len(boxes)) if int(labels[i]) == c}
        remaining = [i for i in score if score[i] >= thresh]
        while remaining:
            m = max(remaining, key=lambda i: score[i])
            kept.append(m)
            remaining.remove(m)
            for i in remaining:
                score[i] *= math.exp(-iou[m][i] ** 2 / sigma)
            remaining = [i for i in remaining if score[i] >= thresh]
    return kept


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    boxes, scores, labels = clustered_boxes(args.boxes, args.classes)
    times: dict[str, list[float]] = {"batched_nms": [], "soft_nms": [], "python loop": []}
    for _ in range(args.rounds):
        times["batched_nms"].append(timed(batched_nms, boxes, scores, labels, 0.5))
        times["soft_nms"].append(timed(soft_nms, boxes, scores, labels))
        times["python loop"].append(timed(soft_nms_python, boxes, scores, labels))
    base = statistics.median(times["batched_nms"])
    print(f"{args.boxes} boxes, {args.classes} classes, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:12s} {med:10.2f} ms   ×{med / base:8.1f} batched_nms")
    print(f"  soft_nms is {statistics.median(times['python loop']) / statistics.median(times['soft_nms']):.1f}× "
          "faster than the loop")


if __name__ == "__main__":
    main()
