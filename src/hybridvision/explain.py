"""Where does a non-local block look? The attention map of one query pixel, over the image.

``hybridvision explain --weights W --image IMG --point X,Y`` runs the model once, records the
input of every attention block that can report its weights (``attention_map``), maps the query
pixel (image coordinates) to the block's feature grid, and saves the map of the chosen block and
call (a head block shared by all pyramid levels is called once per level) overlaid on the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hybridvision.errors import UserInputError
from hybridvision.api import load_trained, prepare_image
from hybridvision.fileio import check_output_path
from hybridvision.imageio import load_image
from hybridvision.drawing import plot_attention_overlay
from hybridvision.factory import model_task

__all__ = ["attention_maps", "explain", "parse_point"]


@torch.inference_mode()
def parse_point(point: str) -> tuple[float, float]:
    """``--point X,Y`` → the query pixel (x, y) in image pixels."""
    try:
        x, y = (float(v) for v in point.split(","))
    except ValueError:
        raise UserInputError(f"--point {point}: expected X,Y in pixels, e.g. --point 64,40") from None
    return x, y


def attention_maps(model: torch.nn.Module, batch: torch.Tensor, point_xy: tuple[float, float],
                   image_sizes: list[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
    """One entry per (attention block, call): ``dict(name, call, map [h, w], feature_hw)``.

    ``point_xy`` is in the pixels of ``batch`` (``[1, 3, H, W]``); ``image_sizes`` (a detector's
    ``(h, w)`` before padding) is passed to the model so padding is normalised as in training.
    """
    blocks = [(n, m) for n, m in model.named_modules() if callable(getattr(m, "attention_map", None))]
    if not blocks:
        raise UserInputError(f"{getattr(model, 'model_name', type(model).__name__)} has no attention "
                             "block to explain; use a non-local model (e.g. nl_fcos_small)")
    captured: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: captured.append((n, args[0])))
             for n, m in blocks]
    try:
        model(batch) if image_sizes is None else model(batch, image_sizes)
    finally:
        for h in hooks:
            h.remove()
    modules = dict(blocks)
    H, W = batch.shape[-2:]
    x, y = point_xy
    results, calls = [], {}
    for name, feats in captured:
        fh, fw = feats.shape[-2:]
        qy = min(fh - 1, int(y * fh / H))
        qx = min(fw - 1, int(x * fw / W))
        amap = modules[name].attention_map(feats, (qy, qx))[0]  # [h', w']
        calls[name] = calls.get(name, -1) + 1
        results.append({"name": name, "call": calls[name], "map": amap.float().cpu(),
                        "feature_hw": (fh, fw)})
    return results


def _device(name: str) -> torch.device:
    """``--device`` checked before anything is loaded: one line when it does not exist here."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"--device {name}: not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(f"--device {name}: CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserInputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA "
                                 "device(s); pick one of them or use --device cpu")
    elif dev.type != "cpu":
        raise UserInputError(f"--device {name}: use cpu or cuda")
    return dev


def explain(weights: str | Path, image: str | Path, point: tuple[float, float], *,
            out: str | Path | None = None, block: str | None = None, call: int = 0,
            device: str = "cpu", exist_ok: bool = False) -> Path:
    """Save the attention map of ``block`` (default: the first) for the query ``point`` (x, y).

    ``out`` (default ``runs/explain/<image stem>_attn.png``) must not be the image or the
    checkpoint, and an existing ``out`` (the default one too) is replaced only when ``exist_ok``;
    a classifier checkpoint, an unknown device or an image that cannot be read each give one
    :class:`UserInputError` line before anything is written.
    """

    weights, image = Path(weights), Path(image)
    default = out is None
    out = Path(out or Path("runs/explain") / f"{image.stem}_attn.png")
    if out.suffix.lower() != ".png":
        raise UserInputError(f"--out {out}: explain writes a PNG; give the file a .png name")
    check_output_path(out, inputs=(image, weights, weights.with_suffix(".json")), kind="file",
                      exist_ok=exist_ok, default=default)
    dev = _device(device)
    model, info = load_trained(weights, dev)
    task = info.get("task") or model_task(getattr(model, "model_name", info.get("model", "")))
    if task != "detection":
        raise UserInputError(f"{weights}: a {task} model ({info.get('model', '?')}); explain shows the "
                             "attention of a detector's non-local block over an image — pass a "
                             "detector checkpoint (e.g. of nl_fcos_small)")
    img = load_image(image)
    h0, w0 = img.shape[-2:]
    x, y = point
    if not (0 <= x < w0 and 0 <= y < h0):
        raise UserInputError(f"--point {x:g},{y:g} lies outside {image} ({w0}×{h0}); pass X,Y in pixels")
    size = int(info.get("image_size") or max(h0, w0))
    scale = size / max(h0, w0)
    batch, (h, w) = prepare_image(img, size, model.size_divisible)
    ph, pw = batch.shape[-2:]
    maps = attention_maps(model, batch.to(dev), (x * scale, y * scale), [(h, w)])
    names = sorted({m["name"] for m in maps})
    chosen = [m for m in maps if (block is None or m["name"] == block) and m["call"] == call]
    if not chosen:
        raise UserInputError(f"--block {block} --call {call}: not found; blocks: {', '.join(names)}")
    entry = chosen[0]
    amap = entry["map"]
    # The map covers the padded canvas; keep the part over the image, in image proportions.
    mh, mw = amap.shape
    amap = amap[: max(1, round(mh * h / ph)), : max(1, round(mw * w / pw))]
    plot_attention_overlay(img, amap, (x, y), out)
    return out
