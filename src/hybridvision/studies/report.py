"""Study reports: mean ± std over seeds, written as Markdown, CSV and JSON.

A study produces one record per (row, seed) — ``{"row": ..., "seed": ..., "metrics": {...}}`` —
and :func:`aggregate` turns them into one line per row with ``mean`` and ``std`` (sample standard
deviation, ``ddof=1``; 0 for a single seed) of every numeric column. ``-1`` (COCO's "empty size
bucket") stays ``-1`` and is shown as ``-``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from hybridvision.fileio import atomic_write_text

__all__ = ["aggregate", "markdown_table", "write_report"]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return float("nan"), float("nan")
    if any(v == -1 for v in vals):  # an empty COCO size bucket in any seed
        return -1.0, 0.0
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def aggregate(records: list[dict[str, Any]], rows: Sequence[str], columns: Sequence[str]
              ) -> list[dict[str, Any]]:
    """``[{"row", "n", col: {"mean", "std"}, ...}]`` in the order of ``rows``."""
    out = []
    for row in rows:
        recs = [r for r in records if r["row"] == row]
        line: dict[str, Any] = {"row": row, "n": len(recs)}
        for col in columns:
            m, s = _mean_std([r["metrics"].get(col) for r in recs if col in r["metrics"]])
            line[col] = {"mean": m, "std": s}
        out.append(line)
    return out


def _fmt(cell: dict[str, float], scale: float, digits: int, show_std: bool) -> str:
    m, s = cell["mean"], cell["std"]
    if m != m:  # NaN
        return "n/a"
    if m == -1:
        return "-"
    if show_std:
        return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"
    return f"{m * scale:.{digits}f}"


def markdown_table(lines: list[dict[str, Any]], columns: Sequence[str], *,
                   formats: dict[str, tuple[float, int, bool]] | None = None,
                   labels: dict[str, str] | None = None, row_title: str = "model") -> str:
    """A Markdown table; ``formats[col] = (scale, digits, show_std)`` (default percent, 1 digit, ±)."""
    formats = formats or {}
    labels = labels or {}
    head = [row_title] + [labels.get(c, c) for c in columns]
    text = "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n"
    for line in lines:
        cells = [line["row"]] + [_fmt(line[c], *formats.get(c, (100.0, 1, True))) for c in columns]
        text += "| " + " | ".join(cells) + " |\n"
    return text


def write_report(out: str | Path, *, title: str, intro: str, tables: list[tuple[str, str]],
                 lines: list[dict[str, Any]], columns: Sequence[str], records: list[dict[str, Any]],
                 meta: dict[str, Any]) -> None:
    """Write ``report.md``, ``results.csv`` (mean and std columns) and ``results.json`` atomically."""
    out = Path(out)
    md = f"# {title}\n\n{intro}\n\n" + "\n".join(f"## {name}\n\n{table}" for name, table in tables)
    atomic_write_text(out / "report.md", md)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "n"] + [f"{c}_{s}" for c in columns for s in ("mean", "std")])
    for line in lines:
        w.writerow([line["row"], line["n"]] + [line[c][s] for c in columns for s in ("mean", "std")])
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "results.json", json.dumps(
        {"meta": meta, "summary": lines, "runs": records}, indent=1))
