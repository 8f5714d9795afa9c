"""Study reports: mean ± std over seeds and paired verdicts, as Markdown, CSV, JSON and HTML.

A study produces one record per (row, seed) — ``{"row": ..., "seed": ..., "metrics": {...}}`` —
and :func:`aggregate` turns them into one line per row with ``mean`` and ``std`` (sample standard
deviation, ``ddof=1``; 0 for a single seed) of every numeric column. ``-1`` (COCO's "empty size
bucket") stays ``-1`` and is shown as ``-``. The paired comparisons of
:func:`hybridvision.studies.stats.compare_rows` become :func:`comparison_table`; with them,
:func:`write_report` puts the answer paragraph first and can write ``report.html``
(:mod:`hybridvision.studies.html`).
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
from hybridvision.studies.html import HtmlContext, write_html_report
from hybridvision.studies.stats import format_signed, mean_std

__all__ = ["aggregate", "markdown_table", "comparison_table", "write_report", "HtmlContext"]


def aggregate(records: list[dict[str, Any]], rows: Sequence[str], columns: Sequence[str]
              ) -> list[dict[str, Any]]:
    """``[{"row", "n", col: {"mean", "std"}, ...}]`` in the order of ``rows``."""
    out = []
    for row in rows:
        recs = [r for r in records if r["row"] == row]
        line: dict[str, Any] = {"row": row, "n": len(recs)}
        for col in columns:
            m, s = mean_std([r["metrics"].get(col) for r in recs if col in r["metrics"]])
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


def _ci_cell(c: dict[str, Any]) -> str:
    if c["n"] < 2 or c["half_width"] != c["half_width"]:
        return "n/a"
    return f"{format_signed(c['ci_low'] * c['scale'])} to {format_signed(c['ci_high'] * c['scale'])}"


def comparison_table(comparisons: Sequence[dict[str, Any]], *, labels: dict[str, str] | None = None,
                     row_title: str = "model") -> str:
    """The paired comparisons (:func:`~hybridvision.studies.stats.compare_rows`) as a Markdown
    table: row, reference, metric, seeds, mean difference and its CI (in the verdict's unit:
    percentage points for fractions), verdict."""
    labels = labels or {}
    pct = f"{comparisons[0]['confidence'] * 100:g} %" if comparisons else "95 %"
    text = (f"| {row_title} | reference | metric | seeds | mean difference | {pct} CI | verdict |\n"
            "|---|---|---|---|---|---|---|\n")
    for c in comparisons:
        diff = f"{format_signed(c['mean_diff'] * c['scale'])} {c['unit']}"
        text += (f"| {c['row']} | {c['reference']} | {labels.get(c['metric'], c['metric'])} | {c['n']} | "
                 f"{diff} | {_ci_cell(c)} | {c['verdict']} |\n")
    return text


def _json_safe(obj: Any) -> Any:
    """NaN (no interval with one seed) as null: results.json stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_report(out: str | Path, *, title: str, intro: str, tables: list[tuple[str, str]],
                 lines: list[dict[str, Any]], columns: Sequence[str], records: list[dict[str, Any]],
                 meta: dict[str, Any], comparisons: list[dict[str, Any]] | None = None,
                 answer: str | None = None, html_context: HtmlContext | None = None) -> None:
    """Write ``report.md``, ``results.csv`` (mean and std columns) and ``results.json`` atomically.

    ``answer`` (:func:`~hybridvision.studies.stats.answer_paragraph`) opens ``report.md``, before
    ``intro``; ``comparisons`` (:func:`~hybridvision.studies.stats.compare_rows`) add a paired
    comparison table after ``tables`` and a ``comparisons`` list to ``results.json``. With
    ``html_context`` (:class:`HtmlContext`; ``HtmlContext()`` for the defaults) the same report
    is also written as a self-contained ``report.html``.
    """
    out = Path(out)
    labels = html_context.labels if html_context is not None else None
    comp_md = comparison_table(comparisons, labels=labels) if comparisons else ""
    md = f"# {title}\n\n" + (f"{answer}\n\n" if answer else "") + f"{intro}\n\n" + "\n".join(
        f"## {name}\n\n{table}" for name, table in tables)
    if comp_md:
        md += "\n## Paired comparisons (row − reference, seed by seed)\n\n" + comp_md
    atomic_write_text(out / "report.md", md)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "n"] + [f"{c}_{s}" for c in columns for s in ("mean", "std")])
    for line in lines:
        w.writerow([line["row"], line["n"]] + [line[c][s] for c in columns for s in ("mean", "std")])
    atomic_write_text(out / "results.csv", buf.getvalue())
    result: dict[str, Any] = {"meta": meta, "summary": lines, "runs": records}
    if comparisons is not None:
        result["comparisons"] = _json_safe(comparisons)
    if answer:
        result["answer"] = answer
    atomic_write_text(out / "results.json", json.dumps(result, indent=1))
    if html_context is not None:
        write_html_report(out, title=title, answer=answer or "", intro=intro, tables=tables,
                          comparisons_table=comp_md, records=records, context=html_context, meta=meta)
