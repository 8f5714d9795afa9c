"""Fused versus naive non-local attention: peak memory and time, in one process.

The block is ``nonlocal_thesis_a`` (Wang et al. 2018 embedded gaussian, θ/φ/g to C/2, softmax,
W 1×1 conv, no sub-sampling) — the form whose HW×HW matrix limited thesis A to batch 1–4.
Both paths share the same weights and input; only ``block.fused`` changes. For each path it
measures the forward pass (no autograd) and forward+backward (gradients of input and
parameters): the peak tensor memory of one call, then the median wall time of ``--runs`` calls
after ``--warmup`` calls, fused and naive runs alternating so that load changes on a shared
machine hit both paths alike (``hybridvision.evaluation.cost``).

    python benchmarks/bench_nonlocal.py --device cpu --batch 4 --size 128 --channels 256 \\
        --out bench_nonlocal.json

Targets: fused peak memory ≤ 1/10 of naive, fused time ≤ naive.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from hybridvision.evaluation.cost import (
    count_flops,
    count_params,
    measure_latency,
    measure_peak_memory,
)
from hybridvision.layers import create_attn

GiB = 1024**3
console = Console(width=None if sys.stdout.isatty() else 110)


def _mem_available() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: a killed run leaves the previous complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def _cases(
    block: torch.nn.Module, x: torch.Tensor, xg: torch.Tensor
) -> dict[str, Callable[[], Any]]:

    def forward() -> None:
        with torch.no_grad():
            block(x)

    def forward_backward() -> None:
        block(xg).sum().backward()

    return {"forward": forward, "forward+backward": forward_backward}


def _clear_grads(block: torch.nn.Module, xg: torch.Tensor) -> None:
    # Freed outside the measured call: the CPU profiler cannot see frees of older blocks.
    for p in block.parameters():
        p.grad = None
    xg.grad = None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=128, help="feature map height = width")
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--block", default="nonlocal_thesis_a", help="registered attention block")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--skip-naive", action="store_true", help="fused path only")
    ap.add_argument("--force", action="store_true", help="run naive even if RAM looks short")
    ap.add_argument("--out", type=Path, default=Path("bench_nonlocal.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    block = create_attn(args.block, args.channels).to(device).train()
    x = torch.randn(args.batch, args.channels, args.size, args.size, device=device)
    n = args.size * args.size
    matrix_bytes = args.batch * n * n * x.element_size()  # one [B, HW, HW] float matrix

    block.fused = True
    result: dict[str, Any] = {
        "command": " ".join(["bench_nonlocal.py", *(sys.argv[1:] if argv is None else argv)]),
        "block": args.block,
        "shape": [args.batch, args.channels, args.size, args.size],
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "params": count_params(block),
        "gflops_forward": count_flops(block.eval(), x) / 1e9,  # same maths for both paths
        "attention_matrix_gib": matrix_bytes / GiB,
        "warmup": args.warmup,
        "runs": args.runs,
        "results": {},
    }
    block.train()
    console.print(
        f"[bold]{args.block}[/] x={tuple(x.shape)} on {device} ({result['threads']} threads); "
        f"one HW×HW matrix = {matrix_bytes / GiB:.2f} GiB"
    )

    paths = ["fused", "naive"]
    if not args.skip_naive and device.type == "cpu" and not args.force:
        avail = _mem_available()
        need = 4 * matrix_bytes  # backward holds A, dA and dlogits plus a transient
        if avail is not None and need > 0.9 * avail:
            console.print(
                f"[yellow]skipping naive: needs ~{need / GiB:.1f} GiB, "
                f"{avail / GiB:.1f} GiB available (--force to try)[/]"
            )
            paths = ["fused"]
            result["naive_skipped"] = f"needs ~{need / GiB:.1f} GiB of {avail / GiB:.1f} available"
    if args.skip_naive:
        paths = ["fused"]

    xg = x.detach().clone().requires_grad_(True)
    cases = _cases(block, x, xg)
    for case, fn in cases.items():
        # Peak memory: one call per path.
        for path in list(paths):
            block.fused = path == "fused"
            console.print(f"  {path:5s} {case}: peak memory, warm-up ...")
            _clear_grads(block, xg)
            try:
                peak = measure_peak_memory(fn, device)
                for _ in range(args.warmup):
                    fn()
            except (RuntimeError, MemoryError) as e:  # an OOM on the naive path is a result
                result["results"][f"{path}/{case}"] = {"error": str(e).splitlines()[0]}
                continue
            result["results"][f"{path}/{case}"] = {
                "peak_bytes": peak, "peak_gib": peak / GiB, "runs_ms": []
            }
        # Time: the paths alternate run by run, so a shared machine's load drifts affect both.
        ok = [p for p in paths if "error" not in result["results"][f"{p}/{case}"]]
        for r in range(args.runs):
            for path in ok:
                block.fused = path == "fused"
                ms = measure_latency(fn, warmup=0, runs=1, device=device)["runs_ms"][0]
                entry = result["results"][f"{path}/{case}"]
                entry["runs_ms"].append(ms)
                entry["median_ms"] = statistics.median(entry["runs_ms"])
                console.print(f"  {path:5s} {case}: run {r + 1}/{args.runs} {ms:.0f} ms")
            _write_json(args.out, result)

    table = Table(title=f"{args.block} fused vs naive, x={tuple(x.shape)}, {device}")
    for col in ("pass", "fused ms", "naive ms", "time f/n", "fused MiB", "naive MiB", "mem f/n"):
        table.add_column(col, justify="right", no_wrap=True)
    res = result["results"]
    ratios = {}
    for case in ("forward", "forward+backward"):
        f, nv = res.get(f"fused/{case}", {}), res.get(f"naive/{case}", {})
        row = [case]
        row += [f"{f['median_ms']:.0f}" if "median_ms" in f else "-"]
        row += [f"{nv['median_ms']:.0f}" if "median_ms" in nv else nv.get("error", "-")[:20]]
        if "median_ms" in f and "median_ms" in nv:
            tr, mr = f["median_ms"] / nv["median_ms"], f["peak_bytes"] / nv["peak_bytes"]
            ratios[case] = {"time_ratio": tr, "memory_ratio": mr,
                            "time_ok": tr <= 1.0, "memory_ok": mr <= 0.1}
            row += [f"{tr:.2f}"]
        else:
            row += ["-"]
        row += [f"{f['peak_bytes'] / 2**20:.1f}" if "peak_bytes" in f else "-"]
        row += [f"{nv['peak_bytes'] / 2**20:.1f}" if "peak_bytes" in nv else "-"]
        row += [f"{ratios[case]['memory_ratio']:.4f}" if case in ratios else "-"]
        table.add_row(*row)
    result["ratios"] = ratios
    console.print(table)
    console.print("targets: memory ratio ≤ 0.10, time ratio ≤ 1.00")
    _write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
