"""A study's ``report.html``: one self-contained page a person reads.

Everything is inside the file: the pictures are PNG data URIs drawn with matplotlib on its Agg
canvas (no pyplot state, no window), the style is one inline ``<style>``; no script, no external
CSS, font or image, so the page opens offline, attached to a mail or in a CI artefact. All text
passes through :func:`html.escape`.

Sections, in order: title; the answer paragraph; the study's introduction; the tables (mean ±
std over seeds); the paired comparisons; learning curves (primary metric against epoch, training
loss against step; mean over seeds with a ±std band); primary metric against cost; the caller's
extra tables and figures; "Reproduce" (command, versions, device, threads, date).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.metadata
import io
import json
import math
import platform
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hybridvision.fileio import atomic_write_text
from hybridvision.studies.spec import StudyRow
from hybridvision.studies.stats import mean_std

__all__ = ["HtmlContext", "write_html_report", "markdown_to_html", "png_data_uri", "figure_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A figure the caller hands over: PNG bytes, or a callable returning PNG bytes or a matplotlib Figure.
FigureSource = bytes | Callable[[], Any]


@dataclass
class HtmlContext:
    """What ``report.html`` needs beyond ``report.md``.

    Attributes:
        primary: the primary metric (a key of each run's metrics), drawn against epoch and cost.
        cost: the cost metric of the accuracy-versus-cost plot.
        command: the exact command that made the study (for "Reproduce").
        device: the device the runs trained on (default: the report's ``meta["device"]``).
        threads: CPU threads (default: ``torch.get_num_threads()`` now).
        date: when the report was written (default: now, UTC).
        run_dirs: row label -> its seed folders holding ``metrics.jsonl`` (default:
            ``OUT/<row slug>/seed<k>`` for every record).
        labels: metric -> display name (a study's ``labels``).
        formats: metric -> (scale, digits, show_std) (a study's ``formats``; default percent).
        extra_tables: (title, Markdown text) sections, e.g. per-class AP or accuracy.
        extra_figures: (title, PNG bytes or a callable returning PNG bytes or a matplotlib
            Figure) sections, e.g. precision–recall curves or a grid of predictions. A callable
            that raises leaves a note in its section instead of the picture.
    """

    primary: str = "AP"
    cost: str = "infer_ms"
    command: str = ""
    device: str = ""
    threads: int | None = None
    date: str = ""
    run_dirs: dict[str, list[Path]] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    formats: dict[str, tuple[float, int, bool]] = field(default_factory=dict)
    extra_tables: list[tuple[str, str]] = field(default_factory=list)
    extra_figures: list[tuple[str, FigureSource]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Markdown (the pipe tables and paragraphs the reports hold) -> HTML
# ---------------------------------------------------------------------------------------------
_NUMERIC = re.compile(r"^[+\-−±]?\.?\d")
_SEPARATOR = re.compile(r"^:?-{1,}:?$")


def _inline(text: str) -> str:
    """Escaped text with `code` and **bold** spans."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    head = _cells(lines[0])
    body = lines[1:]
    aligns: list[str | None] = [None] * len(head)
    if body and all(_SEPARATOR.match(c) for c in _cells(body[0]) if c):
        for i, c in enumerate(_cells(body[0])[: len(head)]):
            aligns[i] = ("center" if c.startswith(":") and c.endswith(":") else
                         "right" if c.endswith(":") else "left" if c.startswith(":") else None)
        body = body[1:]
    out = ['<div class="scroll"><table>', "<thead><tr>"]
    out += [f"<th>{_inline(c)}</th>" for c in head]
    out.append("</tr></thead><tbody>")
    for line in body:
        cells = _cells(line)
        out.append("<tr>")
        for i, c in enumerate(cells):
            align = aligns[i] if i < len(aligns) else None
            classes = []
            if align == "right" or (align is None and i > 0 and (_NUMERIC.match(c) or c in ("-", "n/a"))):
                classes.append("num")
            elif align == "center":
                classes.append("center")
            if c in ("better", "worse"):
                classes.append(c)
            cls = f' class="{" ".join(classes)}"' if classes else ""
            out.append(f"<td{cls}>{_inline(c)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def markdown_to_html(text: str) -> str:
    """The Markdown of the reports as HTML: pipe tables and paragraphs with `code` and **bold**.

    A block of lines starting with ``|`` is a table (first line the header, an optional
    ``|---|`` line; a cell of a column without explicit alignment that starts with a number, a
    sign or ``±`` is right-aligned); other lines group into paragraphs at blank lines. Everything
    else is shown as text, escaped.
    """
    out: list[str] = []
    para: list[str] = []
    table: list[str] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if table:
            out.append(_table(table))
            table.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("|"):
            if para:
                flush()
            table.append(line)
        elif not line:
            flush()
        else:
            if table:
                flush()
            para.append(line)
    flush()
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def _new_figure(figsize: tuple[float, float]):
    """A figure on its own Agg canvas (no pyplot: nothing global, no backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=110)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Any) -> bytes:
    """A matplotlib Figure as PNG bytes (drawn on an Agg canvas if it has none)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,…`` of PNG bytes (refused if they are not a PNG)."""
    if not isinstance(png, (bytes, bytearray)) or not bytes(png[:8]) == PNG_SIGNATURE:
        raise ValueError("expected PNG bytes (they start with the PNG signature)")
    return "data:image/png;base64," + base64.b64encode(bytes(png)).decode("ascii")


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn line (a run killed mid-write) is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _series(run_dirs: Sequence[Path], x_key: str, y_key: str, keep: Callable[[dict[str, Any]], bool]
            ) -> tuple[list[float], list[float], list[float]]:
    """x, mean and std over seeds of ``y_key`` against ``x_key`` (last record per x in a seed,
    as a resumed run repeats steps); std is 0 where one seed has the point."""
    per_x: dict[float, list[float]] = {}
    for d in run_dirs:
        seen: dict[float, float] = {}
        for rec in _read_jsonl(Path(d) / "metrics.jsonl"):
            if keep(rec) and _num(rec.get(x_key)) and _num(rec.get(y_key)) and rec[y_key] != -1:
                seen[float(rec[x_key])] = float(rec[y_key])
        for x, y in seen.items():
            per_x.setdefault(x, []).append(y)
    xs = sorted(per_x)
    stats = [mean_std(per_x[x]) for x in xs]
    return xs, [m for m, _ in stats], [s for _, s in stats]


def _curve_png(run_dirs: Mapping[str, Sequence[Path]], x_key: str, y_key: str, scale: float,
               keep: Callable[[dict[str, Any]], bool], *, xlabel: str, ylabel: str, title: str) -> bytes | None:
    """One line per row (mean over seeds) with a shaded ±std band; None when no row has a point."""
    fig = _new_figure((5.2, 3.7))
    ax = fig.subplots()
    drawn = 0
    positive = []
    for colour, (row, dirs) in zip(_colours(len(run_dirs)), run_dirs.items()):
        xs, ms, ss = _series(dirs, x_key, y_key, keep)
        if not xs:
            continue
        drawn += 1
        m = [v * scale for v in ms]
        s = [v * scale for v in ss]
        ax.plot(xs, m, color=colour, lw=1.6, label=row, marker="o" if len(xs) < 12 else None, ms=3)
        ax.fill_between(xs, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                        color=colour, alpha=0.18, lw=0)
        positive += [v for v in m if v > 0]
    if not drawn:
        return None
    # Losses that span decades (early training) read better on a log axis.
    if y_key == "loss" and positive and max(positive) / min(positive) > 30:
        ax.set_yscale("log")
    if x_key == "epoch":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=1 if drawn <= 6 else 2)
    fig.tight_layout()
    return figure_png(fig)


def _label_offsets(points_pt: Sequence[tuple[float, float]], labels: Sequence[str],
                   left_of: Sequence[bool] | None = None) -> list[tuple[float, float]]:
    """Text offsets (points) that keep point labels from printing over each other and over the
    points: each label sits beside its point (right of it, or left where ``left_of``), 5 pt up,
    and steps down 11 pt at a time past any label already placed or any point it would cover."""
    left_of = left_of or [False] * len(labels)
    placed: list[tuple[float, float, float]] = []  # x0, x1, y of placed labels (points)

    def clashes(k: int, x0: float, x1: float, y: float) -> bool:
        """Would label ``k``, spanning x0–x1 at height y, print over a placed label or a point?"""
        over_label = any(x0 < px1 and px0 < x1 and abs(y - py) < 11 for px0, px1, py in placed)
        over_point = any(m != k and x0 - 4 < qx < x1 + 4 and -4 < qy - y < 12 for m, (qx, qy) in enumerate(points_pt))
        return over_label or over_point

    out = []
    for k, ((x, y), label, left) in enumerate(zip(points_pt, labels, left_of)):
        width = 5.2 * len(label)  # "small" text: ~5 pt per character
        x0, x1 = (x - 6 - width, x - 6) if left else (x + 6, x + 6 + width)
        dy = 5.0
        while clashes(k, x0, x1, y + dy) and dy > -200:
            dy -= 11
        placed.append((x0, x1, y + dy))
        out.append((6.0, dy))
    return out


def _scatter_png(records: Sequence[Mapping[str, Any]], rows: Sequence[str], primary: str, cost: str,
                 p_scale: float, c_scale: float, *, xlabel: str, ylabel: str) -> bytes | None:
    """Primary metric mean against cost mean per row, error bars = std over seeds both ways."""
    fig = _new_figure((7.0, 4.6))
    ax = fig.subplots()
    points = []  # (row, colour, x, y)
    for colour, row in zip(_colours(len(rows)), rows):
        recs = [r["metrics"] for r in records if r["row"] == row]
        pm, ps = mean_std(r.get(primary) for r in recs if _num(r.get(primary)))
        cm, cs = mean_std(r.get(cost) for r in recs if _num(r.get(cost)))
        if not (_num(pm) and _num(cm)) or pm == -1 or cm == -1:
            continue
        ax.errorbar([cm * c_scale], [pm * p_scale], xerr=[cs * c_scale], yerr=[ps * p_scale], fmt="o",
                    color=colour, ms=6, capsize=3, lw=1.2)
        points.append((row, colour, cm * c_scale, pm * p_scale))
    if not points:
        return None
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} against {xlabel} (mean ± std over seeds)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    fig.tight_layout()
    # Label positions are known only once the axes have their final limits and place.
    to_pt = 72.0 / fig.dpi
    pix = ax.transData.transform([(x, y) for _, _, x, y in points])
    # a point in the right 30 % of the axes takes its label on its left, inside the figure
    right = ax.get_window_extent().x0 + 0.7 * ax.get_window_extent().width
    on_left = [px > right for px, _ in pix]
    offsets = _label_offsets([(px * to_pt, py * to_pt) for px, py in pix], [p[0] for p in points], on_left)
    for (row, colour, x, y), off, left in zip(points, offsets, on_left):
        ha = "right" if left else "left"
        xy_off = (-abs(off[0]), off[1]) if left else off
        # a label stepped away from its point gets a thin leader line back to it
        leader = dict(arrowstyle="-", color=colour, lw=0.6, shrinkA=0, shrinkB=4) if off[1] < 0 else None
        ax.annotate(row, (x, y), xytext=xy_off, textcoords="offset points", fontsize="small", color=colour, ha=ha,
                    arrowprops=leader)
    return figure_png(fig)


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------
STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1f2328; background: #fff; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.6em; margin: 0.3em 0 0.6em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #d8dee4; padding-bottom: 4px; margin-top: 2em; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.4em; }
p.answer { background: #f2f6fb; border-left: 4px solid #3a6ea5; padding: 12px 16px; font-size: 1.05em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; vertical-align: top; }
th { background: #f3f4f6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.center { text-align: center; }
td.better { color: #1a7f37; font-weight: 600; }
td.worse { color: #b42318; font-weight: 600; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em; }
code { background: #f3f4f6; padding: 0 3px; border-radius: 3px; }
pre { background: #f6f8fa; padding: 10px 12px; white-space: pre-wrap; word-break: break-all; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 14px; }
figure { margin: 8px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { font-size: 13px; color: #57606a; }
.note { color: #57606a; font-style: italic; }
"""


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _figure(png: bytes, caption: str) -> str:
    return (f'<figure><img src="{png_data_uri(png)}" alt="{_esc(caption)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _extra_figure(title: str, source: FigureSource) -> str:
    if callable(source):
        try:
            made = source()
            png = made if isinstance(made, (bytes, bytearray)) else figure_png(made)
        except Exception as e:  # one optional picture must not cost the report of a whole study
            return f'<p class="note">{_esc(title)}: not drawn ({_esc(type(e).__name__)}: {_esc(e)})</p>'
    else:
        png = source
    return _figure(bytes(png), title)


def _versions() -> list[tuple[str, str]]:
    def version(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return [("python", platform.python_version()), ("torch", torch.__version__),
            ("CUDA (torch build)", torch.version.cuda or "none")] + [
        (pkg, version(pkg)) for pkg in ("torchvision", "hybridvision", "scipy", "matplotlib")]


def _default_run_dirs(out: Path, records: Sequence[Mapping[str, Any]]) -> dict[str, list[Path]]:
    dirs: dict[str, list[Path]] = {}
    for r in records:
        slug = StudyRow(r["row"], r.get("model", "")).slug
        dirs.setdefault(r["row"], []).append(out / slug / f"seed{r['seed']}")
    return dirs


def write_html_report(out: str | Path, *, title: str, answer: str = "", intro: str = "",
                      tables: Sequence[tuple[str, str]] = (), comparisons_table: str = "",
                      records: Sequence[Mapping[str, Any]] = (), context: HtmlContext | None = None,
                      meta: Mapping[str, Any] | None = None) -> Path:
    """Write ``out/report.html`` (atomically) and return its path.

    Args:
        out: the study folder.
        title: the page title.
        answer: the answer paragraph (plain text), shown first.
        intro: the study's introduction (Markdown paragraphs).
        tables: (title, Markdown table) of the mean ± std tables.
        comparisons_table: the paired comparisons as a Markdown table.
        records: the runs, ``{"row", "seed", "model", "metrics"}`` (scatter and run folders).
        context: primary and cost metric, command, run folders, extra sections; see
            :class:`HtmlContext`.
        meta: the report's meta (``device`` fills a missing ``context.device``).
    """
    out = Path(out)
    ctx = context or HtmlContext()
    meta = meta or {}
    rows = list(dict.fromkeys(r["row"] for r in records))
    run_dirs = ctx.run_dirs if ctx.run_dirs is not None else _default_run_dirs(out, records)
    p_scale = ctx.formats.get(ctx.primary, (100.0, 1, True))[0]
    c_scale = ctx.formats.get(ctx.cost, (1.0, 1, True))[0]  # costs are plain units
    p_name = ctx.labels.get(ctx.primary, ctx.primary) + (" (%)" if p_scale == 100 else "")
    c_name = ctx.labels.get(ctx.cost, ctx.cost)

    parts = [f"<h1>{_esc(title)}</h1>"]
    if answer:
        parts.append(f'<p class="answer">{_esc(answer)}</p>')
    if intro:
        parts.append(markdown_to_html(intro))
    if tables:
        parts.append("<h2>Results (mean ± std over seeds)</h2>")
        parts += [f"<h3>{_esc(name)}</h3>\n{markdown_to_html(text)}" for name, text in tables]
    if comparisons_table:
        parts.append("<h2>Paired comparisons (row − reference, seed by seed)</h2>")
        parts.append(markdown_to_html(comparisons_table))

    parts.append("<h2>Learning curves</h2>")
    curves = [
        _curve_png(run_dirs, "epoch", ctx.primary, p_scale, lambda r: "loss" not in r, xlabel="epoch",
                   ylabel=p_name, title=f"validation {p_name} (mean ± std over seeds)"),
        _curve_png(run_dirs, "step", "loss", 1.0, lambda r: ctx.primary not in r, xlabel="step",
                   ylabel="training loss", title="training loss (mean ± std over seeds)"),
    ]
    captions = [f"validation {p_name} against epoch", "training loss against step"]
    if any(c is not None for c in curves):
        parts.append('<div class="grid">' + "".join(
            _figure(png, cap) for png, cap in zip(curves, captions) if png is not None) + "</div>")
    if any(c is None for c in curves):
        missing = " and ".join(cap for png, cap in zip(curves, captions) if png is None)
        parts.append(f'<p class="note">No {_esc(missing)}: no such records in the runs\' metrics.jsonl.</p>')

    parts.append(f"<h2>{_esc(p_name)} against {_esc(c_name)}</h2>")
    scatter = _scatter_png(records, rows, ctx.primary, ctx.cost, p_scale, c_scale, xlabel=c_name, ylabel=p_name)
    if scatter is not None:
        parts.append(_figure(scatter, f"{p_name} against {c_name} per row; error bars: std over seeds"))
    else:
        parts.append(f'<p class="note">No row has both {_esc(ctx.primary)} and {_esc(ctx.cost)}.</p>')

    for name, text in ctx.extra_tables:
        parts.append(f"<h2>{_esc(name)}</h2>\n{markdown_to_html(text)}")
    for name, source in ctx.extra_figures:
        parts.append(f"<h2>{_esc(name)}</h2>\n{_extra_figure(name, source)}")

    threads = ctx.threads if ctx.threads is not None else torch.get_num_threads()
    date = ctx.date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts = [("device", ctx.device or str(meta.get("device", "not recorded"))), ("threads", str(threads)),
             ("date", date)] + _versions()
    parts.append("<h2>Reproduce</h2>")
    parts.append(f"<pre>{_esc(ctx.command or 'command not recorded')}</pre>")
    parts.append("<table><tbody>" + "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in facts) + "</tbody></table>")

    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(parts) + "\n</main>\n</body>\n</html>\n")
    return atomic_write_text(out / "report.html", page)
