"""Running a study: every row × seed trained, evaluated and costed, then one report.

A study is data (:class:`~hybridvision.studies.spec.Study`): its rows (a label and a registered
model), presets (training settings), and the tables of its report. :func:`run_study` trains each
(row, seed) into ``OUT/<row>/seed<k>/`` and writes ``result.json`` there when done, so a killed
study resumes: finished runs are read back, the run in flight continues from its last checkpoint.

Each study module registers its studies when imported; the imports below are the list of studies
that ``hybridvision study`` knows (a new study module adds its line there, README "A new study").
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

import hybridvision.studies.centernet  # noqa: F401  registers the study
import hybridvision.studies.cornernet  # noqa: F401  registers thesis A's corner-detector studies
import hybridvision.studies.fcos_nonlocal  # noqa: F401  registers the study
import hybridvision.studies.hybrid_classification  # noqa: F401  registers the study
import hybridvision.studies.sbir  # noqa: F401  registers the study
from hybridvision.api import load_trained
from hybridvision.config import TrainConfig, apply_overrides, load_config
from hybridvision.data.sbir import PACKAGED_SPLITS
from hybridvision.engine.progress import console
from hybridvision.engine.tasks import make_task
from hybridvision.engine.trainer import resolve_device, train
from hybridvision.errors import UserInputError
from hybridvision.factory import create_model, model_task
from hybridvision.registry import check_model_kwargs
from hybridvision.fileio import atomic_write_text, check_output_path, make_output_dir
from hybridvision.studies.report import HtmlContext, aggregate, markdown_table, write_report
from hybridvision.studies.spec import PRESET_ALIASES, PRESET_PURPOSES, STUDIES, Study, StudyRow, register_study
from hybridvision.studies.stats import answer_paragraph, compare_rows

__all__ = ["StudyRow", "Study", "run_study", "plan", "get_study", "check_data_spec", "STUDIES",
           "register_study", "canonical_preset"]


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
        if spec in ("builtin:amounts", "builtin:mnist-amounts"):
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
    if task == "sbir":
        if spec == "builtin:bimodal":
            return
        parts = [p for p in rest.split(",") if p]
        if kind != "folders" or len(parts) not in (2, 3):
            raise UserInputError(f"--data {spec}: not retrieval data; use builtin:bimodal or "
                                 "folders:SKETCH_DIR,PHOTO_DIR[,UNSEEN.txt]")
        for i, p in enumerate(parts):
            path = Path(p).expanduser()
            if i == 2 and p in PACKAGED_SPLITS:
                continue
            if not (path.is_dir() if i < 2 else path.is_file()):
                what = ("sketch folder", "photo folder", "zero-shot class list")[i]
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
    option, a model option the model does not take or a value it refuses (each distinct model
    and options is built on the meta device, as the trainer does) — raises
    :class:`UserInputError` here, before any run starts."""
    preset = canonical_preset(study, preset)
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
    # Each distinct (model, options) is built as the trainer builds it before any work: on the meta
    # device (nothing allocated), so an option's value the model refuses (width=-1) stops a dry
    # run with the very error the real run would stop with.
    for r in {json.dumps([r["cfg"].model, r["cfg"].model_kwargs], sort_keys=True): r for r in runs}.values():
        check_model_kwargs(r["cfg"].model, r["cfg"].model_kwargs)
        with torch.device("meta"):
            create_model(r["cfg"].model, **{"num_classes": 1, **r["cfg"].model_kwargs})
    return runs


def canonical_preset(study: Study, preset: str) -> str:
    """``preset`` with its alias resolved (``quick`` → ``cpu``); an unknown one is refused."""
    name = PRESET_ALIASES.get(preset, preset)
    if name not in study.presets:
        purposes = "; ".join(f"{k}: {PRESET_PURPOSES[k]}" for k in study.presets if k in PRESET_PURPOSES)
        raise UserInputError(f"--preset {preset}: use one of {', '.join(study.presets)} ({purposes})")
    return name


def exit_with_parent(parent: int, poll_s: float = 1.0) -> threading.Thread:
    """End this worker process (``os._exit``) within ``poll_s`` of the process ``parent`` ending.

    A study killed outright (SIGTERM, SIGKILL, a closed terminal) cannot shut its worker pool
    down; orphaned workers would train on, unseen, into the run folders a restarted study resumes
    and writes too. The worker notices that it has been re-parented and stops; its run resumes
    from its last checkpoint when the study is started again."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(3)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def _train_run(cfg_dict: dict[str, Any], init_like: tuple[str, dict[str, Any]] | None, threads: int,
               parent: int | None = None, custom: tuple[Any, str] | None = None) -> None:
    """Train one (row, seed) run to the end and write its ``trained.json`` (a separate process
    with ``--jobs``, which ends with the study process ``parent``). Resumes a run killed
    earlier; a finished run is only evaluated again. ``custom``: ``(study.train_run, preset)``
    trains the run instead of one ``train`` call."""
    if parent is not None:
        exit_with_parent(parent)
    if threads:
        torch.set_num_threads(threads)
    if custom is not None:
        custom[0](cfg_dict, init_like, custom[1])
        return
    cfg = TrainConfig.from_dict(cfg_dict, source="study run")
    run_dir = Path(cfg.out)
    resume = (run_dir / "checkpoints" / "last.json").is_file()
    summary = train(cfg, resume=resume, exist_ok=True, init_like=init_like)
    evaluation = summary.evaluation
    metrics = dict(evaluation.get("metrics", evaluation))
    # wall time of this call: a run resumed after a kill counts only the part since the resume
    metrics["train_s"] = summary.seconds
    metrics["train_loop_s"] = summary.loop_seconds
    atomic_write_text(run_dir / "trained.json", json.dumps(
        {"metrics": metrics, "shared_init": summary.shared_init, "threads": torch.get_num_threads()}, indent=1))


def _init_like(study: Study, preset: str, row_label: str) -> tuple[str, dict[str, Any]] | None:
    """The (model, model_kwargs) a row's initialisation is paired with: its reference row's."""
    rows = {r.label: r for r in study.rows[preset]}
    ref = rows.get(rows[row_label].reference or "")
    if ref is None:
        return None
    return ref.model, dict(ref.model_kwargs)


def run_study(name: str, *, preset: str = "cpu", seeds: int = 3, data: str | None = None,
              out: str | Path | None = None, dry_run: bool = False, device: str = "auto",
              data_root: str | None = None, overrides: list[str] | None = None,
              rows: list[str] | None = None, jobs: int = 1, report_only: bool = False) -> dict[str, Any]:
    """Train, evaluate and cost every (row, seed) of study ``name``; write the report.

    ``overrides`` (``key=value``) change the preset's training settings for every run; ``rows``
    restricts the study to some of its rows (labels as in the report).

    Pairing: runs of different rows with the same seed see the same data in the same order with
    the same augmentation (the trainer seeds both from the run's seed), and a row starts from its
    reference row's initialisation in every tensor they share (``train(init_like=…)``).

    ``jobs`` > 1 trains that many runs at once in separate processes, each on ``threads / jobs``
    threads (on a small CPU, faster in all than one run on every thread). Costs (latency,
    memory) are measured afterwards in this process, one model at a time, so parallel training
    never disturbs a timing. ``report_only`` trains nothing and reports the finished runs.

    Returns ``{"out", "summary", "runs", "report"}`` (``report`` is the Markdown text).
    """
    study = get_study(name)
    preset = canonical_preset(study, preset)
    if jobs < 1:
        raise UserInputError(f"--jobs {jobs}: use 1 or more")
    out = Path(out or f"runs/study-{name}-{preset}")
    runs = plan(study, preset, seeds, data, out, overrides, rows)
    dev = resolve_device(device)
    # A study folder is ours (marked when made) and resumes; a user's non-empty folder is refused.
    check_output_path(out, kind="dir", known_files=REPORT_FILES)
    if dry_run:
        return {"out": str(out), "runs": runs, "summary": [], "report": ""}
    t0 = time.time()
    for run in runs:
        run["cfg"].device = str(dev)
        if data_root:
            run["cfg"].data_root = data_root
    for run in runs:
        check_same_settings(run["cfg"])
    todo = [r for r in runs if not (Path(r["cfg"].out) / "result.json").is_file()]
    untrained = [r for r in todo if not (Path(r["cfg"].out) / "trained.json").is_file()]
    if not report_only:
        prepare_data(untrained)
    make_output_dir(out)
    if report_only:
        todo = [r for r in todo if r not in untrained]
    else:
        _train_all(study, preset, untrained, jobs, len(runs))
    # Costs, one model at a time after all training, seed by seed (each seed's rows in turn), so
    # a drift of the machine's speed over the measurements does not line up with one row.
    for run in sorted(todo, key=lambda r: r["seed"]):
        _measure_run(study, run, dev)
    records = [json.loads((Path(r["cfg"].out) / "result.json").read_text())
               for r in runs if (Path(r["cfg"].out) / "result.json").is_file()]
    if not records:
        raise UserInputError(f"{out}: no finished run to report yet; run the study without --report-only")
    return _write_study_report(study, preset, name, seeds, data, overrides, out, dev, runs, records, t0)


REPORT_FILES = ("report.md", "report.html", "results.csv", "results.json", "table_3_1.json")


def prepare_data(runs: list[dict[str, Any]]) -> None:
    """Build the datasets of each distinct data spec among ``runs`` once, in this process, before
    any run trains: built-in data is generated here alone (runs trained in parallel would race to
    write the same folder), and data that cannot be read stops the study in one line before it
    makes its folder."""
    seen: set[tuple[Any, ...]] = set()
    for run in runs:
        cfg = run["cfg"]
        task = make_task(cfg)
        key = (type(task).__name__, cfg.data, str(cfg.data_root), json.dumps(cfg.data_kwargs, sort_keys=True))
        if key not in seen:
            seen.add(key)
            task.build_data(cfg)

# Settings that may differ between a run's config.yaml and the plan without changing the run.
_FREE_SETTINGS = ("out", "device", "progress", "data_root", "workers")


def check_same_settings(cfg: TrainConfig) -> None:
    """Refuse to reuse a run folder (finished, or to be resumed) whose ``config.yaml`` holds other
    training settings than the plan's: after a preset change or another ``key=value``, its result
    would enter the paired comparisons under settings it never used."""
    saved = Path(cfg.out) / "config.yaml"
    if not saved.is_file():
        return
    old = load_config(saved).to_dict()
    new = cfg.to_dict()
    changed = sorted(k for k in new if k not in _FREE_SETTINGS and old.get(k) != new[k])
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} → {new[k]!r}" for k in changed[:3])
        raise UserInputError(f"{cfg.out}: this run was made with other settings ({shown}); its result "
                             "would be compared under settings it never used — pass another --out, or "
                             "delete that run folder to train it again")


def _train_all(study: Study, preset: str, runs: list[dict[str, Any]], jobs: int, total: int) -> None:
    jobs = min(jobs, max(1, len(runs)))
    threads = max(1, torch.get_num_threads() // jobs) if jobs > 1 else 0
    work = [(r["cfg"].to_dict(), _init_like(study, preset, r["row"]), threads) for r in runs]
    custom = (study.train_run, preset) if study.train_run is not None else None
    t0 = time.time()
    if jobs == 1:
        for k, (run, args) in enumerate(zip(runs, work), 1):
            console.print(f"[{k}/{len(runs)} to train of {total}] {run['row']} ({run['cfg'].model}) seed "
                          f"{run['seed']} · {time.time() - t0:.0f} s elapsed")
            _train_run(*args, None, custom)
        return
    console.print(f"training {len(runs)} of {total} runs, {jobs} at a time on {threads} thread(s) each")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_train_run, *args, os.getpid(), custom): run for run, args in zip(runs, work)}
        for k, fut in enumerate(as_completed(futures), 1):
            run = futures[fut]
            try:
                fut.result()
            except BaseException:  # a failed run stops the study: the queued runs are not started
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            console.print(f"[{k}/{len(runs)} trained] {run['row']} seed {run['seed']} · "
                          f"{time.time() - t0:.0f} s elapsed")


def _measure_run(study: Study, run: dict[str, Any], dev: torch.device) -> None:
    cfg: TrainConfig = run["cfg"]
    run_dir = Path(cfg.out)
    trained = json.loads((run_dir / "trained.json").read_text())
    metrics = dict(trained["metrics"])
    if study.measure is not None:
        model, _ = load_trained(run_dir / "checkpoints" / "last.safetensors", dev)
        metrics.update(study.measure(model, cfg, dev))
    record = {"row": run["row"], "seed": run["seed"], "model": cfg.model, "metrics": metrics,
              "shared_init": trained.get("shared_init")}
    atomic_write_text(run_dir / "result.json", json.dumps(record, indent=1))


def with_max_dets(study: Study, max_dets: int) -> Study:
    """``study`` with its ``AR100`` column named ``AR{max_dets}``: the runs' evaluations (the config's
    ``eval_max_dets``, e.g. the override ``eval_max_dets=300``) report recall under that name."""
    if max_dets == 100:
        return study

    def named(cols: list[str]) -> list[str]:
        return [f"AR{max_dets}" if c == "AR100" else c for c in cols]

    return dataclasses.replace(study, columns=named(study.columns),
                               tables=[(title, named(cols)) for title, cols in study.tables])


def _write_study_report(study, preset, name, seeds, data, overrides, out, dev, runs, records, t0):
    study = with_max_dets(study, runs[0]["cfg"].eval_max_dets)
    row_labels = list(dict.fromkeys(r["row"] for r in runs))
    lines = aggregate(records, row_labels, study.columns)
    tables = [(title, markdown_table(lines, cols, formats=study.formats, labels=study.labels))
              for title, cols in study.tables]
    if study.extra_tables is not None:
        tables = study.extra_tables(study, preset, out, dev, row_labels) + tables
    n_seeds = sorted({r["seed"] for r in records})
    command = (f"hybridvision study {name} --preset {preset} --seeds {seeds}" + (f" --data {data}" if data else "")
               + "".join(f" {o}" for o in overrides or []))
    done = f"{len(records)} of {len(runs)} runs finished. " if len(records) < len(runs) else ""
    intro = (f"{study.intro}\n\nPreset `{preset}` ({PRESET_PURPOSES.get(preset, '')}), data "
             f"`{runs[0]['cfg'].data}`, seeds {n_seeds} (mean ± sample std over seeds), device `{dev}`, "
             f"torch {torch.__version__}. {done}Command: `{command}`.")
    selected = [r for r in study.rows[preset] if r.label in row_labels]
    compared = [study.primary, study.cost, *[c for c in study.verdict_columns if c not in (study.primary, study.cost)]]
    comparisons = compare_rows(records, selected, [c for c in compared if c in study.columns],
                               study.lower_is_better, units=study.units)
    answer = answer_paragraph(study, comparisons)
    figures = study.figures(study, preset, out, dev, runs, records) if study.figures is not None else []
    context = HtmlContext(primary=study.primary, cost=study.cost, command=command, device=str(dev),
                          labels=study.labels, formats=study.formats, extra_figures=figures)
    meta = {"study": name, "preset": preset, "seeds": n_seeds, "data": runs[0]["cfg"].data,
            "device": str(dev), "torch": torch.__version__, "seconds": time.time() - t0,
            "command": command}
    write_report(out, title=study.title, intro=intro, tables=tables, lines=lines,
                 columns=study.columns, records=records, meta=meta, comparisons=comparisons,
                 answer=answer, html_context=context)
    report = (out / "report.md").read_text()
    return {"out": str(out), "summary": lines, "runs": records, "report": report}
