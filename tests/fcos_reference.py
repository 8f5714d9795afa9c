"""The tiny FCOS reference: outputs and decoded detections of every FCOS preset for fixed weights.

Made once before the dense-detector core was refactored (``python tests/fcos_reference.py``
writes ``tests/data/fcos_reference.safetensors``); ``tests/test_fcos_reference.py`` checks every
preset still gives the same outputs and detections. Weights do not come from a seeded init (which
depends on module creation order) but from each parameter's *name*: every tensor of the state dict
is drawn from a generator seeded by the CRC32 of its key, so the reference also pins the names and
shapes old checkpoints were saved with.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import torch

REFERENCE = Path(__file__).parent / "data" / "fcos_reference.safetensors"
NUM_CLASSES = 3
SIZE = (64, 96)  # H, W: not square, so a transposed location grid would show
IMAGE_SIZES = [(64, 96), (50, 70)]  # the second image is padded


def fcos_presets() -> list[str]:
    from hybridvision.factory import list_models

    return [n for n in list_models(task="detection") if "fcos" in n]


@torch.no_grad()
def named_weights(model: torch.nn.Module) -> None:
    """Overwrite every parameter and buffer from a generator seeded by its name."""
    for key, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        r = torch.randn(t.shape, generator=g, dtype=torch.float64)
        if key.endswith("running_var"):
            v = 1.0 + 0.1 * r.abs()
        elif key.endswith("running_mean"):
            v = 0.05 * r
        elif key.endswith("pixel_mean") or key.endswith("pixel_std"):
            continue
        elif t.ndim >= 2:
            fan_in = t[0].numel()
            v = 0.5 * r / fan_in ** 0.5  # half of unit gain: SAN products stay finite
        elif key.endswith(".weight"):  # norm scales
            v = 1.0 + 0.1 * r
        else:  # biases, learnable scales
            v = 0.1 * r if not key.endswith(".scale") else 1.0 + 0.1 * r
        t.copy_(v.to(t.dtype))


def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(len(IMAGE_SIZES), 3, *SIZE, generator=g)
    for b, (h, w) in enumerate(IMAGE_SIZES):
        x[b, :, h:, :] = 0
        x[b, :, :, w:] = 0
    return x


@torch.no_grad()
def run_preset(name: str) -> dict[str, torch.Tensor]:
    """Flat tensors: ``out.<key>.<level>``, ``det.<image>.<boxes|scores|labels>``."""
    from hybridvision.factory import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES)
    named_weights(model)
    model.eval()
    model.score_thresh = 0.0  # decode every location's best classes, not an empty list
    outputs = model(images(), IMAGE_SIZES)
    flat: dict[str, torch.Tensor] = {}
    for key, maps in outputs.items():
        for lvl, m in enumerate(maps):
            flat[f"out.{key}.{lvl}"] = m.contiguous()
    for i, det in enumerate(model.decode(outputs, IMAGE_SIZES)):
        for k, v in det.items():
            flat[f"det.{i}.{k}"] = v.contiguous()
    return flat


def state_digest(name: str) -> str:
    """SHA-256 of the state dict's ``key shape`` lines: what an old checkpoint must still fit."""
    import hashlib

    from hybridvision.factory import create_model

    model = create_model(name, num_classes=NUM_CLASSES)
    lines = "\n".join(f"{k} {tuple(v.shape)}" for k, v in sorted(model.state_dict().items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def main() -> None:
    import json

    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    digests: dict[str, str] = {}
    for name in fcos_presets():
        for k, v in run_preset(name).items():
            tensors[f"{name}/{k}"] = v
        digests[name] = state_digest(name)
        print(name, file=sys.stderr)
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(REFERENCE), metadata={"torch": torch.__version__,
                                                 "state_digests": json.dumps(digests, sort_keys=True)})


if __name__ == "__main__":
    main()
