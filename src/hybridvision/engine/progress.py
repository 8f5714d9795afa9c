"""Console output of long work: progress bars (rich), quiet when the output is not a terminal or
on non-zero ranks, and the text of evaluation results (shared by ``train``, ``eval`` and the demo).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Mapping
from typing import Any, TypeVar
from collections.abc import Iterable

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from hybridvision.console import ScriptSafeConsole, console
from hybridvision.evaluation.coco import format_metrics_table

__all__ = ["console", "is_main_process", "make_progress", "track", "format_evaluation",
           "format_per_class", "format_train_evaluations"]

T = TypeVar("T")



def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def make_progress(enabled: bool = True) -> Progress:
    """A progress display with a free-text field ``info`` (losses, lr) after the bar."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not (enabled and is_main_process()),
        transient=not sys.stdout.isatty(),
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    with make_progress() as p:
        task = p.add_task(description, total=total, info="")
        for item in items:
            yield item
            p.advance(task)


def format_evaluation(evaluation: Mapping[str, Any], title: str | None = None) -> str:
    """An evaluation as plain text: the 12 COCO numbers as a table (detection, an
    ``evaluate_coco`` result with ``"metrics"``), else ``name value`` pairs (``top1 0.8123 …``).
    ``""`` for an empty evaluation."""
    if not evaluation:
        return ""
    if isinstance(evaluation.get("metrics"), Mapping):
        return _rendered(format_metrics_table(evaluation["metrics"], title=title or "COCO bbox metrics"))
    pairs = "  ".join(f"{k} {v}" if isinstance(v, int) else f"{k} {v:.4f}"
                      for k, v in evaluation.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    return f"{title}: {pairs}" if title else pairs


def _rendered(table: Any) -> str:
    buf = io.StringIO()
    # At its natural width: a long class name widens the table instead of being wrapped or cut.
    ScriptSafeConsole(file=buf, color_system=None).print(table)  # markup off: a class named [x] stays
    return "\n".join(line.rstrip() for line in buf.getvalue().strip("\n").splitlines())


def format_per_class(evaluation: Mapping[str, Any]) -> str:
    """The per-class AP table of a detection evaluation as plain text: class, AP, AP50, AP75
    and ground-truth boxes (``n_gt``) from its ``analysis``, else class and AP from its
    ``per_class``; in %, "-" for a class without ground truth. ``""`` when there is neither."""
    from rich import box
    from rich.table import Table

    analysis = evaluation.get("analysis")
    rows = getattr(analysis, "per_class", None)
    per_class = evaluation.get("per_class") or {}
    if not rows and not per_class:
        return ""
    table = Table(title="per-class AP (%)", box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("class", no_wrap=True)

    def pct(v: float) -> str:
        return f"{100.0 * v:.1f}" if v >= 0 else "-"

    if rows:
        for col in ("AP", "AP50", "AP75", "n_gt"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(r.name, pct(r.AP), pct(r.AP50), pct(r.AP75), str(r.n_gt))
    else:
        table.add_column("AP", justify="right")
        for name, v in per_class.items():
            table.add_row(str(name), pct(float(v)))
    return _rendered(table)


def format_train_evaluations(last: Mapping[str, Any], best: Mapping[str, Any], n: int, m: int) -> str:
    """The end of ``train``: the last weights' evaluation (of epoch ``n``) and the best's (of
    epoch ``m``), each named with its epoch (``last (epoch N)``, ``best (epoch M)``); one table
    when they are the same epoch. Call it with a ``TrainResult``'s ``evaluation``,
    ``best_evaluation``, ``last_epoch`` and ``best_epoch``."""
    if not last:
        return ""
    if not best or m == n:
        return format_evaluation(last, f"last = best (epoch {n})")
    return format_evaluation(last, f"last (epoch {n})") + "\n" + format_evaluation(best, f"best (epoch {m})")
