"""NL-CornerNet's memory problem: one training step's peak memory and time of NL-CornerNet against
CornerNet at the seed's resolution (128² feature maps = 512² inputs), batch 4.

The seed could train NL-CornerNet only at batch 1–4 on a 24 GB GPU (the naive non-local block
builds an N×N = 16,384² attention matrix per image). Here the block runs fused (O(N) memory).
Peak memory of forward + loss + backward (``hybridvision.evaluation.cost.measure_peak_memory``:
CUDA's allocator statistics, or the profiler's allocator events on CPU), median step time of
``--runs``, the models measured alternately.

    python benchmarks/bench_cornernet_memory.py --size 512 --batch 4 [--small] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hybridvision.evaluation.cost import measure_peak_memory
from hybridvision.factory import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--runs", type=int, default=2, help="timed steps per model (0: memory only)")
    ap.add_argument("--small", action="store_true", help="the CPU presets instead of Hourglass-104")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    names = (["cornernet_small", "nl_cornernet_small", "cornernet_small_64", "nl_cornernet_small_64"] if args.small
             else ["cornernet_hg104", "nl_cornernet_hg104", "cornernet_64", "nl_cornernet_64"])
    device = torch.device(args.device)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    box = torch.tensor([[0.2, 0.2, 0.6, 0.7]], device=device) * args.size
    targets = [{"boxes": box, "labels": torch.zeros(1, dtype=torch.long, device=device)}] * args.batch

    def step(model):
        model.zero_grad(set_to_none=True)
        model.loss(model(x), targets)["loss"].backward()

    peak = {}
    for n in names:  # one model alive at a time: Hourglass-104 and its gradients take ~1.5 GB
        model = create_model(n, num_classes=80).to(device).train()
        peak[n] = measure_peak_memory(lambda m=model: step(m), device) / 2**20
        print(f"  {n:22s} peak {peak[n]:9.0f} MiB", flush=True)
        del model
    times: dict[str, list[float]] = {n: [] for n in names}
    if args.runs:
        models = {n: create_model(n, num_classes=80).to(device).train() for n in names}
        for _ in range(args.runs):
            for n, m in models.items():
                t = time.perf_counter()
                step(m)
                times[n].append(time.perf_counter() - t)
    base = names[0]
    print(f"{args.size}² input, batch {args.batch}, {device}, torch {torch.__version__}")
    for n in names:
        timing = ""
        if times[n]:
            med = statistics.median(times[n])
            timing = f"   step {med:7.2f} s (×{med / statistics.median(times[base]):.2f})"
        print(f"  {n:22s} peak {peak[n]:9.0f} MiB (×{peak[n] / peak[base]:.2f}){timing}")


if __name__ == "__main__":
    main()
