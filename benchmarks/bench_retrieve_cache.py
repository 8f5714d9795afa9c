"""`hybridvision retrieve` with and without its cached gallery index: the same query three times.

A two-branch ``sbir_resnet26`` (width 0.25, random weights, 64 px) ranks the photos of the
built-in bimodal data; the first call embeds the gallery and caches it, the next ones read it.

    python benchmarks/bench_retrieve_cache.py [--out DIR] [--photos 60]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hybridvision.api import retrieve
from hybridvision.data.builtin.bimodal import make_bimodal
from hybridvision.engine.checkpoint import save_checkpoint
from hybridvision.factory import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench-retrieve", help="a new folder for the data, weights and cache")
    ap.add_argument("--photos", type=int, default=60, help="photos per class (36 classes)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    make_bimodal(out / "data", sketches=4, photos=args.photos, size=96)
    kwargs = {"width": 0.25, "hidden": 128, "embed_dim": 64}
    model = create_model("sbir_resnet26", num_classes=27, **kwargs)
    weights = save_checkpoint(out / "weights", "last", model, extra={
        "model": "sbir_resnet26", "num_classes": 27, "task": "sbir", "image_size": 64, "model_kwargs": kwargs})
    query = out / "data" / "sketches" / "fish" / "0000.png"
    for i in range(3):
        t = time.perf_counter()
        res = retrieve(query, weights=weights, gallery=out / "data" / "photos", k=10, cache=out / "cache",
                       out=out / f"grid{i}.png", exist_ok=True)
        print(f"call {i + 1}: index {'read back' if res['cached'] else 'built'} for {res['gallery_size']} photos, "
              f"{time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
