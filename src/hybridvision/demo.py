"""``hybridvision demo``: a real detector trained and evaluated on a laptop in about ten minutes.

Generates the built-in ``amounts`` dataset (handwritten digits 0–9 composed into images), trains
the small FCOS preset ``fcos_demo`` from scratch on the CPU, evaluates it with the 12 COCO
numbers and writes, under ``runs/demo``: ``eval/coco_metrics.json``, ``plots/loss.png`` and
``plots/val_predictions.png`` (validation images, ground truth beside predictions).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.text import Text

from hybridvision.api import load_trained, prepare_image
from hybridvision.config import TrainConfig, load_config
from hybridvision.engine.progress import console, format_train_evaluations
from hybridvision.engine.tasks import make_task
from hybridvision.engine.trainer import RUN_FOLDER_NAMES, TrainResult, check_run_folder, train
from hybridvision.errors import UserInputError
from hybridvision.factory import model_task
from hybridvision.drawing import save_gt_pred_grid

__all__ = ["DEMO_CONFIG", "run_demo"]

# Tuned for 2 CPU cores and a 10-minute budget (training + evaluation); see BENCHMARKS.md.
DEMO_CONFIG = TrainConfig(
    model="fcos_demo",
    data="builtin:amounts",
    image_size=128,
    epochs=28,
    batch_size=16,
    optimizer="adamw",
    lr=2e-3,
    weight_decay=1e-4,
    schedule="cosine",
    warmup_steps=100,
    grad_clip=10.0,
    eval_every=0,
    workers=0,  # on 2 cores a loader process oversubscribes the CPU: 0.21 vs 0.14 s/step
    cache_images=True,  # decode the PNGs once (as costly as the model's compute per step)
    out="runs/demo",
)


DEMO_DATA = ("builtin:amounts", "builtin:mnist-amounts")


def run_demo(out: str | Path = "runs/demo", data_root: str | Path = "data", epochs: int | None = None,
             device: str = "auto", model: str | None = None, data: str = "builtin:amounts") -> TrainResult:
    """The demo: built-in data (``builtin:amounts``, or ``builtin:mnist-amounts``: real MNIST
    handwriting, the optional ``mnist`` extra), train ``model`` (default ``fcos_demo``; any
    detector, e.g. the CPU presets ``centernet_small`` or ``retinanet_small``) with the demo's
    settings, evaluate."""
    if data not in DEMO_DATA:
        raise UserInputError(f"--data {data}: the demo trains on built-in data; use one of {', '.join(DEMO_DATA)} "
                             "(for your own data: hybridvision train)")
    cfg = TrainConfig.from_dict({**DEMO_CONFIG.to_dict(), "out": str(out), "data_root": str(data_root),
                                 "device": device, "data": data})
    if model is not None:
        if model_task(model) != "detection":  # an unknown name gets the registry's suggestions
            raise UserInputError(f"--model {model}: the demo trains a detector; {model} is a "
                                 f"{model_task(model)} model (see `hybridvision models --task detection`)")
        cfg = cfg.updated({"model": model}, source="--model")
    if epochs is not None:
        cfg = cfg.updated({"epochs": epochs}, source="--epochs")
    out_p, data_p = Path(out).resolve(), Path(data_root).resolve()
    if out_p == data_p or out_p.is_relative_to(data_p) or data_p.is_relative_to(out_p):
        raise UserInputError(f"--out {out} and --data-root {data_root} overlap; the run folder and the "
                             "generated data need separate folders")
    exist_ok = _check_demo_out(Path(out))
    threads = torch.get_num_threads()
    console.print(Text.assemble(("hybridvision demo", "bold"), f": {cfg.model} on {cfg.data}, {cfg.epochs} epochs "
                                f"at {cfg.image_size}px, {threads} CPU threads → {out}"))
    t0 = time.time()
    # A rerun replaces an earlier demo run in --out, and nothing else (another run, a user's folder).
    summary = train(cfg, exist_ok=exist_ok)
    _save_val_grid(cfg, Path(out))
    console.print(format_train_evaluations(summary.evaluation, summary.best_evaluation, summary.last_epoch,
                                           summary.best_epoch), markup=False, highlight=False)
    console.print(f"total {time.time() - t0:.0f} s · metrics {out}/eval/coco_metrics.json · plots "
                  f"{out}/plots/loss.png, {out}/plots/val_predictions.png")
    return summary


def _check_demo_out(out: Path) -> bool:
    """Refuse, before any work, an ``--out`` the demo must not write into, in the demo's own
    words (``train``'s refusals suggest ``--resume``/``--exist-ok``, which ``demo`` has not).

    The demo writes into a new or empty folder, or replaces an earlier demo run there; it
    refuses another run with checkpoints and a folder holding other files, as ``train`` does
    without ``--exist-ok``. Returns whether ``out`` holds an earlier demo run (to replace).
    """
    check_run_folder(out, exist_ok=True)  # a file, a name too long, a folder not writable
    if not out.is_dir() or _is_demo_run(out):
        return out.is_dir()
    fix = f"the demo replaces only an earlier demo run: pass another --out, or delete or move {out} first"
    if (out / "checkpoints" / "last.json").is_file():
        raise UserInputError(f"--out {out}: run folder already has checkpoints of a run that is not the "
                             f"demo's; {fix}")
    entries = sorted(e.name for e in out.iterdir() if not (e.name.startswith(".") and e.name.endswith(".tmp")))
    is_run = (out / "config.yaml").is_file() and all(n in RUN_FOLDER_NAMES for n in entries)
    if entries and not is_run:
        shown = ", ".join(entries[:3]) + (", …" if len(entries) > 3 else "")
        raise UserInputError(f"--out {out}: folder exists and holds other files ({shown}), not a "
                             f"hybridvision run folder; {fix}")
    return False


def _is_demo_run(out: Path) -> bool:
    """True when ``out`` holds a run of the demo (its config.yaml is the demo's but for the
    settings ``run_demo`` takes), so a rerun may replace it."""
    try:
        old = load_config(out / "config.yaml").to_dict()
    except UserInputError:
        return False
    free = {"out", "data_root", "device", "epochs", "model"}
    return all(old.get(k) == v for k, v in DEMO_CONFIG.to_dict().items() if k not in free)


@torch.inference_mode()
def _save_val_grid(cfg: TrainConfig, out: Path, n: int = 8) -> None:
    """Validation images with ground truth beside the trained model's predictions."""
    model, info = load_trained(out / "checkpoints" / "best.safetensors")
    bundle = make_task(cfg).build_data(cfg)
    items = [bundle.val[i] for i in range(min(n, len(bundle.val)))]
    images = [img for img, _ in items]
    gts = [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in items]
    preds = []
    for img in images:
        batch, hw = prepare_image(img)  # val images are already at the model's size
        d = model.decode(model(batch, [hw]), [hw])[0]
        keep = d["scores"] >= 0.3
        preds.append({k: v[keep] for k, v in d.items()})
    save_gt_pred_grid(images, gts, preds, info["class_names"], out / "plots" / "val_predictions.png")
