"""CPU latency of hybridvision's ``fcos_r50_fpn`` (forward + decode) against torchvision's
``fcos_resnet50_fpn`` (its whole eval call: transform, forward, post-processing), side by side.

Both models are built with random weights (nothing is downloaded), run in eval mode under
``torch.inference_mode`` on the same ``[1, 3, S, S]`` image, in one process. Runs are interleaved
(A B, then B A, ...) so load from other processes on a shared machine hits both alike; the median
of ``--runs`` timings after ``--warmup`` calls is reported.

Usage::

    python benchmarks/bench_fcos_latency.py --out bench_fcos_latency.json

Prints both medians, the ratio ours / torchvision (target <= 1.0) and both parameter counts, and
writes them as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torchvision

from hybridvision.factory import create_model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)  # atomic: a killed run never leaves half a file


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="square input size S")
    parser.add_argument("--runs", type=int, default=9, help="timed runs per model (>= 7)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per model first")
    parser.add_argument("--num-classes", type=int, default=91)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    ours = create_model("fcos_r50_fpn", num_classes=args.num_classes).eval()
    ref = torchvision.models.detection.fcos_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=args.num_classes,
        min_size=args.size,
        max_size=args.size,
    ).eval()
    image = torch.rand(1, 3, args.size, args.size)
    sizes = [(args.size, args.size)]

    def run_ours() -> object:
        return ours.decode(ours(image), sizes)

    def run_ref() -> object:
        return ref(list(image))

    times: dict[str, list[float]] = {"hybridvision": [], "torchvision": []}
    fns = {"hybridvision": run_ours, "torchvision": run_ref}
    with torch.inference_mode():
        for _ in range(args.warmup):
            run_ours()
            run_ref()
        for i in range(args.runs):
            order = ("hybridvision", "torchvision") if i % 2 == 0 else ("torchvision", "hybridvision")
            for name in order:
                times[name].append(_time(fns[name]))

    med_ours = statistics.median(times["hybridvision"])
    med_ref = statistics.median(times["torchvision"])
    # Load on a shared machine drifts over a run; the ratio within each back-to-back pair
    # cancels most of that drift, so report its median too.
    paired = statistics.median(a / b for a, b in zip(times["hybridvision"], times["torchvision"]))
    result = {
        "benchmark": "fcos_r50_fpn forward+decode vs torchvision fcos_resnet50_fpn eval, CPU",
        "input": [1, 3, args.size, args.size],
        "runs": args.runs,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "machine": platform.processor() or platform.machine(),
        "median_ms_hybridvision": round(med_ours, 2),
        "median_ms_torchvision": round(med_ref, 2),
        "ratio_ours_over_torchvision": round(med_ours / med_ref, 3),
        "ratio_paired_median": round(paired, 3),
        "params_hybridvision": n_params(ours),
        "params_torchvision": n_params(ref),
        "times_ms": {k: [round(t, 2) for t in v] for k, v in times.items()},
    }
    print(f"hybridvision fcos_r50_fpn : median {med_ours:8.1f} ms   params {result['params_hybridvision']:,}")
    print(f"torchvision fcos_resnet50: median {med_ref:8.1f} ms   params {result['params_torchvision']:,}")
    print(
        f"ratio ours / torchvision : {result['ratio_ours_over_torchvision']:.3f} of medians, "
        f"{paired:.3f} median of paired runs (target <= 1.0)"
    )
    if args.out is not None:
        _write_json(args.out, result)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
