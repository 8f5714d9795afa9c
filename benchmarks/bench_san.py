"""SAN aggregation: lean "shift" loop versus the textbook "unfold", peak memory and time.

Two levels, each for pairwise and patchwise SAN and for forward (no autograd) and
forward+backward (gradients of input and parameters):

* ``op``: the aggregation y_i = Σ_j α_ij ⊙ β(x_j) alone (``san_aggregate``), on random values
  ``[B, C/4, H, W]`` and weights ``[B, C/32, k², H, W]``;
* ``block``: a whole SAN bottleneck (``SANBlock``), where the weight network's own tensors
  (inherent to SAN, the same for both paths) dilute the difference.

Same weights and inputs for both paths; only ``aggregation`` changes. Time: median of ``--runs``
calls after ``--warmup``; memory: peak tensor bytes of one extra call
(``hybridvision.evaluation.cost``).

    python benchmarks/bench_san.py --device cpu --batch 4 --channels 256 --size 56 --kernel 7 \\
        --out bench_san.json

The defaults are SAN10's second stage (C = 256 at 56×56, k = 7). Target: shift peak memory
well below unfold's (the unfold tensor is k² = 49 times the values), time not worse.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from hybridvision.evaluation.cost import measure_latency, measure_peak_memory
from hybridvision.layers.san import SANBlock, san_aggregate

MiB = 2**20
console = Console(width=None if sys.stdout.isatty() else 120)
METHODS = ("shift", "unfold")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: a killed run leaves the previous complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def _op_cases(
    value: torch.Tensor, weight: torch.Tensor, k: int, method: str
) -> dict[str, Callable[[], Any]]:
    vg = value.detach().clone().requires_grad_(True)
    wg = weight.detach().clone().requires_grad_(True)

    def forward() -> None:
        with torch.no_grad():
            san_aggregate(value, weight, k, method=method)

    def forward_backward() -> None:
        vg.grad = wg.grad = None
        san_aggregate(vg, wg, k, method=method).sum().backward()

    return {"forward": forward, "forward+backward": forward_backward}


def _block_cases(block: SANBlock, x: torch.Tensor) -> dict[str, Callable[[], Any]]:
    xg = x.detach().clone().requires_grad_(True)

    def forward() -> None:
        with torch.no_grad():
            block(x)

    def forward_backward() -> None:
        block(xg).sum().backward()

    return {"forward": forward, "forward+backward": forward_backward}


def _clear(*objs: Any) -> None:
    # Gradients freed outside the measured call: the CPU profiler cannot see frees of
    # tensors allocated before it started.
    for o in objs:
        if isinstance(o, torch.nn.Module):
            for p in o.parameters():
                p.grad = None
        elif isinstance(o, torch.Tensor):
            o.grad = None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--channels", type=int, default=256, help="SAN block width C")
    ap.add_argument("--size", type=int, default=56, help="feature map height = width")
    ap.add_argument("--kernel", type=int, default=7, help="window side k")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--out", type=Path, default=Path("bench_san.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    b, c, s, k = args.batch, args.channels, args.size, args.kernel
    c_v, c_w = c // 4, c // 32
    value = torch.randn(b, c_v, s, s, device=device)
    weight = torch.randn(b, c_w, k * k, s, s, device=device)
    x = torch.randn(b, c, s, s, device=device)
    result: dict[str, Any] = {
        "command": " ".join(["bench_san.py", *(sys.argv[1:] if argv is None else argv)]),
        "x": [b, c, s, s],
        "kernel": k,
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "unfold_tensor_mib": b * c_v * k * k * s * s * value.element_size() / MiB,
        "warmup": args.warmup,
        "runs": args.runs,
        "results": {},
    }
    console.print(
        f"[bold]SAN aggregation[/] x={tuple(x.shape)} k={k} on {device} "
        f"({result['threads']} threads); the unfolded values alone are "
        f"{result['unfold_tensor_mib']:.0f} MiB"
    )

    levels: list[tuple[str, Callable[[str], dict[str, Callable[[], Any]]], list[Any]]] = [
        ("op", lambda m: _op_cases(value, weight, k, m), []),
    ]
    blocks = {}
    for sa_type in ("pairwise", "patchwise"):
        torch.manual_seed(0)
        blk = SANBlock(c, sa_type, k).to(device).train()
        blocks[sa_type] = blk

        def make(m: str, blk: SANBlock = blk) -> dict[str, Callable[[], Any]]:
            blk.sam.aggregation = m
            return _block_cases(blk, x)

        levels.append((f"{sa_type} block", make, [blk]))

    for level, make_cases, owners in levels:
        for method in METHODS:
            for case, fn in make_cases(method).items():
                key = f"{level}/{method}/{case}"
                console.print(f"  {key} ...")
                try:
                    _clear(*owners)
                    peak = measure_peak_memory(fn, device)
                    _clear(*owners)
                    lat = measure_latency(fn, warmup=args.warmup, runs=args.runs, device=device)
                except (RuntimeError, MemoryError) as e:  # an OOM is a result too
                    result["results"][key] = {"error": str(e).splitlines()[0]}
                    continue
                result["results"][key] = {
                    "peak_bytes": peak,
                    "peak_mib": peak / MiB,
                    "median_ms": lat["median_ms"],
                    "runs_ms": lat["runs_ms"],
                }
                _write_json(args.out, result)

    table = Table(title=f"SAN aggregation shift vs unfold, x={tuple(x.shape)}, k={k}, {device}")
    cols = ("level", "pass", "shift ms", "unfold ms", "time s/u")
    for col in (*cols, "shift MiB", "unfold MiB", "mem s/u"):
        table.add_column(col, justify="right", no_wrap=True)
    res, ratios = result["results"], {}
    for level, _, _ in levels:
        for case in ("forward", "forward+backward"):
            sh, un = res.get(f"{level}/shift/{case}", {}), res.get(f"{level}/unfold/{case}", {})
            row = [level, case]
            row += [f"{sh['median_ms']:.1f}" if "median_ms" in sh else sh.get("error", "-")[:20]]
            row += [f"{un['median_ms']:.1f}" if "median_ms" in un else un.get("error", "-")[:20]]
            if "median_ms" in sh and "median_ms" in un:
                tr = sh["median_ms"] / un["median_ms"]
                mr = sh["peak_bytes"] / max(un["peak_bytes"], 1)
                ratios[f"{level}/{case}"] = {"time_ratio": tr, "memory_ratio": mr}
                row += [f"{tr:.2f}"]
            else:
                row += ["-"]
            row += [f"{sh['peak_mib']:.1f}" if "peak_mib" in sh else "-"]
            row += [f"{un['peak_mib']:.1f}" if "peak_mib" in un else "-"]
            r = ratios.get(f"{level}/{case}")
            row += [f"{r['memory_ratio']:.3f}" if r else "-"]
            table.add_row(*row)
    result["ratios"] = ratios
    console.print(table)
    _write_json(args.out, result)
    console.print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
