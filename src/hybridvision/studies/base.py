"""Running a study: every row × seed trained, evaluated and costed, then one report.

A study is data (:class:`Study`): its rows (a label and a registered model), presets (training
settings), and the tables of its report. :func:`run_study` trains each (row, seed) into
``OUT/<row>/seed<k>/`` and writes ``result.json`` there when done, so a killed study resumes:
finished runs are read back, the run in flight continues from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

import hybridvision.studies.fcos_nonlocal  # noqa: F401  registers the study
import hybridvision.studies.hybrid_classification  # noqa: F401  registers the study
from hybridvision.api import load_trained
from hybridvision.config import TrainConfig, apply_overrides
from hybridvision.engine.progress import console
from hybridvision.engine.tasks import make_task
from hybridvision.engine.trainer import resolve_device, train
from hybridvision.errors import UserInputError
from hybridvision.factory import model_task
from hybridvision.registry import check_model_kwargs
from hybridvision.fileio import atomic_write_text, check_output_path, make_output_dir
from hybridvision.studies.report import aggregate, markdown_table, write_report
from hybridvision.studies.spec import STUDIES, Study, StudyRow, register_study

__all__ = ["StudyRow", "Study", "run_study", "plan", "get_study", "check_data_spec", "STUDIES",
           "register_study"]


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise UserInputError(f"unknown study {name!r}; known: {', '.join(sorted(STUDIES))}")
    return STUDIES[name]


def check_data_spec(spec: str, task: str) -> None:
    """Refuse, before any run starts, a data spec that cannot serve ``task``: a wrong kind or
    built-in name, a coco spec without 2 or 4 parts, or a named file or folder that is missing.
    Reads nothing but the file system's listing (built-in data is made by the first run)."""
    kind, _, rest = spec.partition(":")
    if ":" not in spec or not rest:
        raise UserInputError(f"--data {spec}: not a data spec; use KIND:ARGS, e.g. builtin:amounts, "
                             "coco:ANN.json,IMAGES_DIR, builtin:sketches, quickdraw:DIR or tuberlin:DIR")
    if task == "detection":
        if spec == "builtin:amounts":
            return
        if kind != "coco":
            raise UserInputError(f"--data {spec}: not detection data; use builtin:amounts or "
                                 "coco:TRAIN_ANN.json,TRAIN_IMAGES[,VAL_ANN.json,VAL_IMAGES]")
        parts = [p for p in rest.split(",") if p]
        if len(parts) not in (2, 4):
            raise UserInputError(f"--data {spec}: expected coco:TRAIN_ANN.json,TRAIN_IMAGES"
                                 "[,VAL_ANN.json,VAL_IMAGES] (2 or 4 comma-separated paths)")
        for i, p in enumerate(parts):
            path = Path(p).expanduser()
            ok = path.is_file() if i % 2 == 0 else path.is_dir()
            if not ok:
                what = "annotation file" if i % 2 == 0 else "image folder"
                raise UserInputError(f"--data {spec}: {what} {path} not found; fix the path")
        return
    if spec == "builtin:sketches":
        return
    if kind not in ("quickdraw", "tuberlin") or not rest:
        raise UserInputError(f"--data {spec}: not classification data; use builtin:sketches, "
                             "quickdraw:DIR or tuberlin:DIR")
    if not Path(rest).expanduser().is_dir():
        raise UserInputError(f"--data {spec}: folder {rest} not found; fix the path")


def plan(study: Study, preset: str, seeds: int, data: str | None, out: Path,
         overrides: list[str] | None = None, rows: list[str] | None = None) -> list[dict[str, Any]]:
    """Every (row, seed) run with its validated config. Everything a run would reject — a bad
    override, an unknown model, data of the wrong kind or missing files, an unknown ``augment``
    option — raises :class:`UserInputError` here, before any run starts."""
    if preset not in study.presets:
        raise UserInputError(f"--preset {preset}: use one of {', '.join(study.presets)}")
    if seeds < 1:
        raise UserInputError("--seeds must be at least 1")
    fixed = {"out": "--out", "seed": "--seeds", "model": "the study's rows", "progress": None}
    for item in overrides or []:
        key = item.partition("=")[0].strip()
        if key in fixed:
            how = f"; set it with {fixed[key]}" if fixed[key] else ""
            raise UserInputError(f"override {item!r}: a study sets {key} for each of its runs{how}")
    selected = study.rows[preset]
    if data:  # the user's --data first, named as such
        check_data_spec(data, model_task(selected[0].model))
    if rows:
        known = {r.label for r in selected}
        bad = [r for r in rows if r not in known]
        if bad:
            raise UserInputError(f"--rows {','.join(bad)}: not a row of {study.name}; rows: "
                                 f"{', '.join(r.label for r in selected)}")
        selected = [r for r in selected if r.label in rows]
    runs = []
    for row in selected:
        for seed in range(seeds):
            cfg = TrainConfig.from_dict({
                **TrainConfig().to_dict(), **study.presets[preset], "model": row.model,
                "model_kwargs": dict(row.model_kwargs), "data": data or study.default_data,
                "seed": seed, "out": str(out / row.slug / f"seed{seed}"), "progress": False},
                source=f"study {study.name} preset {preset}")
            cfg = apply_overrides(cfg, overrides or [])
            runs.append({"row": row.label, "seed": seed, "cfg": cfg})
    for model, spec, task in dict.fromkeys((r["cfg"].model, r["cfg"].data, r["cfg"].task) for r in runs):
        task = model_task(model) if task == "auto" else task  # an unknown model name stops here
        check_data_spec(spec, task)
    for r in runs[:1]:  # the overrides are the same for every run
        make_task(r["cfg"]).check_augment(r["cfg"].augment)
        check_model_kwargs(r["cfg"].model, r["cfg"].model_kwargs)
    return runs


def run_study(name: str, *, preset: str = "quick", seeds: int = 3, data: str | None = None,
              out: str | Path | None = None, dry_run: bool = False, device: str = "auto",
              data_root: str | None = None, overrides: list[str] | None = None,
              rows: list[str] | None = None) -> dict[str, Any]:
    """Train, evaluate and cost every (row, seed) of study ``name``; write the report.

    ``overrides`` (``key=value``) change the preset's training settings for every run; ``rows``
    restricts the study to some of its rows (labels as in the report).

    Returns ``{"out", "summary", "runs", "report"}`` (``report`` is the Markdown text).
    """
    study = get_study(name)
    out = Path(out or f"runs/study-{name}-{preset}")
    runs = plan(study, preset, seeds, data, out, overrides, rows)
    dev = resolve_device(device)
    # A study folder is ours (marked when made) and resumes; a user's non-empty folder is refused.
    check_output_path(out, kind="dir", known_files=("report.md", "results.csv", "results.json"))
    if dry_run:
        return {"out": str(out), "runs": runs, "summary": [], "report": ""}
    make_output_dir(out)
    records: list[dict[str, Any]] = []
    t0 = time.time()
    for k, run in enumerate(runs, 1):
        cfg: TrainConfig = run["cfg"]
        cfg.device = str(dev)
        if data_root:
            cfg.data_root = data_root
        run_dir = Path(cfg.out)
        result_file = run_dir / "result.json"
        if result_file.is_file():
            records.append(json.loads(result_file.read_text()))
            console.print(f"[{k}/{len(runs)}] {run['row']} seed {run['seed']}: done earlier")
            continue
        console.print(f"[{k}/{len(runs)}] {run['row']} ({cfg.model}) seed {run['seed']} "
                      f"· {time.time() - t0:.0f} s elapsed")
        resume = (run_dir / "checkpoints" / "last.json").is_file()
        summary = train(cfg, resume=resume, exist_ok=True)
        evaluation = summary["evaluation"] or json.loads(
            (run_dir / "checkpoints" / "last.json").read_text()).get("metrics", {})
        metrics = dict(evaluation.get("metrics", evaluation))
        metrics["train_s"] = summary["seconds"]
        if study.measure is not None:
            weights = run_dir / "checkpoints" / "last.safetensors"
            model, _ = load_trained(weights, dev)
            metrics.update(study.measure(model, cfg, dev))
        record = {"row": run["row"], "seed": run["seed"], "model": cfg.model, "metrics": metrics}
        atomic_write_text(result_file, json.dumps(record, indent=1))
        records.append(record)
    row_labels = list(dict.fromkeys(r["row"] for r in runs))
    lines = aggregate(records, row_labels, study.columns)
    tables = [(title, markdown_table(lines, cols, formats=study.formats, labels=study.labels))
              for title, cols in study.tables]
    if study.extra_tables is not None:
        tables = study.extra_tables(study, preset, out, dev, row_labels) + tables
    n_seeds = sorted({r["seed"] for r in records})
    intro = (f"{study.intro}\n\nPreset `{preset}`, data `{runs[0]['cfg'].data}`, seeds {n_seeds} "
             f"(mean ± sample std over seeds), device `{dev}`, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Command: `hybridvision study {name} --preset {preset} "
             f"--seeds {seeds}" + (f" --data {data}" if data else "")
             + "".join(f" {o}" for o in overrides or []) + "`.")
    meta = {"study": name, "preset": preset, "seeds": n_seeds, "data": runs[0]["cfg"].data,
            "device": str(dev), "torch": torch.__version__, "seconds": time.time() - t0}
    write_report(out, title=study.title, intro=intro, tables=tables, lines=lines,
                 columns=study.columns, records=records, meta=meta)
    report = (out / "report.md").read_text()
    return {"out": str(out), "summary": lines, "runs": records, "report": report}
