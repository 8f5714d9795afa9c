"""Study reports: paired statistics against scipy on hand cases, the verdicts in words, the
answer paragraph, report.md / results.json, and report.html rendered by headless Chromium."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time

import numpy as np
import pytest
import scipy.stats

from hybridvision.studies.html import HtmlContext, markdown_to_html, png_data_uri
from hybridvision.studies.report import aggregate, comparison_table, markdown_table, write_report
from hybridvision.studies.spec import Study, StudyRow, register_study
from hybridvision.studies.stats import (
    BETTER,
    UNRESOLVED,
    WORSE,
    answer_paragraph,
    compare_rows,
    paired_difference,
    verdict,
)

COCO = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
COSTS = ["infer_ms", "train_s"]
LOWER = frozenset({"infer_ms", "train_s"})


# ---------------------------------------------------------------------------------------------
# paired_difference and verdict against scipy and hand values
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("a, b", [
    ([0.42, 0.431, 0.409], [0.40, 0.41, 0.39]),
    ([0.43, 0.37, 0.405], [0.40, 0.40, 0.40]),
    ([12.5, 13.1, 12.9, 14.0, 12.2], [11.0, 11.4, 12.8, 12.0, 11.9]),
    ([1.0, 2.0], [0.5, 0.7]),
])
def test_interval_is_scipys_paired_t_interval(a, b):
    res = paired_difference(a, b)
    ci = scipy.stats.ttest_rel(a, b).confidence_interval(0.95)
    assert res.n == len(a)
    assert res.ci_low == pytest.approx(ci.low, rel=1e-12, abs=1e-15)
    assert res.ci_high == pytest.approx(ci.high, rel=1e-12, abs=1e-15)
    d = np.subtract(a, b)
    assert res.mean_diff == pytest.approx(d.mean())
    assert res.std_diff == pytest.approx(d.std(ddof=1))
    assert res.half_width == pytest.approx((ci.high - ci.low) / 2)
    res90 = paired_difference(a, b, confidence=0.9)
    ci90 = scipy.stats.ttest_rel(a, b).confidence_interval(0.9)
    assert (res90.ci_low, res90.ci_high) == pytest.approx((ci90.low, ci90.high))


def test_consistent_gain_is_better_and_fractions_stay_fractions():
    ref = [0.400, 0.410, 0.390]
    row = [r + d for r, d in zip(ref, [0.020, 0.021, 0.019])]  # +2.0, +2.1, +1.9 points
    res = paired_difference(row, ref)
    assert res.mean_diff == pytest.approx(0.020)  # a fraction, not points
    assert res.ci_low > 0
    assert verdict(res) == BETTER == "better"
    assert verdict(paired_difference(ref, row)) == WORSE == "worse"
    # The same gain on a lower-is-better metric is a loss.
    assert verdict(res, lower_is_better=True) == "worse"


def test_noisy_difference_is_not_resolved_and_says_how_wide():
    ref = [0.40, 0.40, 0.40]
    row = [0.43, 0.37, 0.405]  # +3, -3, +0.5 points
    res = paired_difference(row, ref)
    assert res.ci_low < 0 < res.ci_high
    words = verdict(res)
    assert words.startswith(UNRESOLVED) and UNRESOLVED == "no difference resolved"
    half = scipy.stats.t.ppf(0.975, 2) * np.std([3, -3, 0.5], ddof=1) / math.sqrt(3)
    assert words == f"no difference resolved at this budget (CI ±{half:.1f} points)"


def test_lower_is_better_cost_in_ms():
    ref = [12.0, 12.1, 11.9]
    slower = [15.0, 15.2, 14.9]
    faster = [10.1, 10.0, 9.8]
    assert verdict(paired_difference(slower, ref), lower_is_better=True, unit_scale=1, unit="ms") == "worse"
    assert verdict(paired_difference(faster, ref), lower_is_better=True, unit_scale=1, unit="ms") == "better"
    noisy = verdict(paired_difference([12.0, 14.0, 10.5], ref), lower_is_better=True, unit_scale=1, unit="ms")
    assert noisy.startswith("no difference resolved at this budget (CI ±") and noisy.endswith(" ms)")


def test_one_seed_has_no_interval():
    res = paired_difference([0.45], [0.40])
    assert res.n == 1 and res.mean_diff == pytest.approx(0.05)
    assert all(math.isnan(v) for v in (res.ci_low, res.ci_high, res.half_width, res.std_diff))
    assert verdict(res) == "no difference resolved (one seed: no interval)"


def test_paired_difference_refuses_unpaired_input():
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="at least one"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([float("nan")], [0.1])


# ---------------------------------------------------------------------------------------------
# compare_rows and the answer paragraph
# ---------------------------------------------------------------------------------------------
def _rec(row, seed, **metrics):
    return {"row": row, "seed": seed, "model": "m", "metrics": metrics}


def test_compare_rows_pairs_by_seed_and_skips_empty_buckets():
    rows = [StudyRow("base", "m"), StudyRow("new", "m", reference="base"), StudyRow("lone", "m", reference="gone")]
    records = [
        _rec("base", 0, AP=0.40, APs=-1, infer_ms=10.0), _rec("base", 1, AP=0.50, APs=0.2, infer_ms=10.0),
        _rec("base", 2, AP=0.30, APs=0.1, infer_ms=10.0),
        # out of order, an extra seed 3 the reference lacks, and an empty bucket in seed 0
        _rec("new", 2, AP=0.32, APs=0.12, infer_ms=12.0), _rec("new", 0, AP=0.42, APs=-1, infer_ms=12.1),
        _rec("new", 1, AP=0.52, APs=0.21, infer_ms=11.9), _rec("new", 3, AP=0.99, APs=0.9, infer_ms=1.0),
        _rec("lone", 0, AP=0.1),
    ]
    comps = compare_rows(records, rows, ["AP", "APs", "infer_ms", "top1"], LOWER)
    assert [(c["row"], c["metric"]) for c in comps] == [("new", "AP"), ("new", "APs"), ("new", "infer_ms")]
    ap, aps, ms = comps
    assert ap["seeds"] == [0, 1, 2] and ap["mean_diff"] == pytest.approx(0.02) and ap["verdict"] == "better"
    assert ap["reference"] == "base" and ap["unit"] == "points" and ap["scale"] == 100
    assert aps["seeds"] == [1, 2] and aps["mean_diff"] == pytest.approx(0.015)
    assert ms["verdict"] == "worse" and ms["lower_is_better"] and ms["unit"] == "ms"
    ci = scipy.stats.ttest_rel([12.1, 11.9, 12.0], [10.0, 10.0, 10.0]).confidence_interval()
    assert (ms["ci_low"], ms["ci_high"]) == pytest.approx((ci.low, ci.high))


def test_a_row_is_also_compared_with_a_sibling_seed_by_seed():
    """``also_compared_with`` adds paired comparisons (the initialisation stays paired with
    ``reference``); the answer names both references; a label that is no row is refused."""
    rows = [StudyRow("FCOS", "m"), StudyRow("NL", "m", reference="FCOS"),
            StudyRow("conv", "m", reference="FCOS", also_compared_with=("NL",))]
    assert rows[2].compared_with == ("FCOS", "NL") and rows[0].compared_with == ()
    records = []
    for s, (base, nl, conv) in enumerate([(0.77, 0.383, 0.408), (0.769, 0.387, 0.403), (0.785, 0.394, 0.407)]):
        records += [_rec("FCOS", s, AP=base), _rec("NL", s, AP=nl), _rec("conv", s, AP=conv)]
    comps = compare_rows(records, rows, ["AP"], LOWER)
    assert [(c["row"], c["reference"]) for c in comps] == [("NL", "FCOS"), ("conv", "FCOS"), ("conv", "NL")]
    conv_nl = comps[2]
    ci = scipy.stats.ttest_rel([0.408, 0.403, 0.407], [0.383, 0.387, 0.394]).confidence_interval()
    assert conv_nl["mean_diff"] == pytest.approx(0.018) and (conv_nl["ci_low"], conv_nl["ci_high"]) == pytest.approx(
        (ci.low, ci.high))
    text = answer_paragraph(_study(rows), comps)
    assert "conv: AP worse than FCOS by" in text and "conv: AP better than NL by 1.8 points" in text
    assert "AP improves for conv against NL" in text and "conv against FCOS" in text
    assert "not corrected for the 3 comparisons of AP" in text
    bad = [StudyRow("FCOS", "m"), StudyRow("conv", "m", reference="FCOS", also_compared_with=("NL",))]
    with pytest.raises(ValueError, match="'conv' is compared with \\['NL'\\]"):
        register_study(_study(bad))


def _study(rows, question="Does a non-local block help FCOS?"):
    return Study(name="fake", title="Fake <study> & co", intro="A `fake` study.", rows={"quick": rows},
                 presets={"quick": {}}, default_data="builtin:amounts", columns=COCO + COSTS,
                 tables=[("COCO metrics (percent)", COCO), ("Cost", COSTS)],
                 formats={"infer_ms": (1.0, 1, True), "train_s": (1.0, 0, True)},
                 labels={"infer_ms": "ms/img", "train_s": "train s"}, question=question)


def test_answer_paragraph_follows_the_verdicts():
    rows = [StudyRow("FCOS", "m"), StudyRow("NL-FCOS", "m", reference="FCOS"),
            StudyRow("NL-FCOS-cls", "m", reference="FCOS")]
    records = []
    for s, (base, worse, noisy) in enumerate([(0.40, 0.379, 0.43), (0.41, 0.388, 0.38), (0.39, 0.370, 0.395)]):
        records += [_rec("FCOS", s, AP=base, infer_ms=10.0 + s / 10),
                    _rec("NL-FCOS", s, AP=worse, infer_ms=14.0 + s / 10 + (s == 1) / 20),
                    _rec("NL-FCOS-cls", s, AP=noisy, infer_ms=10.0 + s / 10 + (0.3, -0.3, 0.05)[s])]
    study = _study(rows)
    text = answer_paragraph(study, compare_rows(records, rows, ["AP", "infer_ms"], LOWER))
    assert text.startswith("Does a non-local block help FCOS? ")
    assert "NL-FCOS: AP worse than FCOS by 2.1 points (95 % CI" in text and "3 seeds" in text
    assert "1.4× slower per image" in text
    assert "NL-FCOS-cls: no AP difference from FCOS resolved" in text
    assert "no speed difference resolved" in text
    assert ("Overall, at this preset's schedule: AP gets worse for NL-FCOS; no difference is resolved "
            "for NL-FCOS-cls.") in text
    assert "not corrected for the 2 comparisons of AP" in text

    # The same words turned around: nothing is hard-coded.
    flipped = [dict(r, metrics={"AP": 1 - r["metrics"]["AP"], "infer_ms": 30 - r["metrics"]["infer_ms"]})
               for r in records]
    text = answer_paragraph(study, compare_rows(flipped, rows, ["AP", "infer_ms"], LOWER))
    assert "NL-FCOS: AP better than FCOS by 2.1 points" in text and "faster per image" in text
    assert ("Overall, at this preset's schedule: AP improves for NL-FCOS; no difference is resolved "
            "for NL-FCOS-cls.") in text

    only_noise = [r for r in records if r["row"] != "NL-FCOS"]
    text = answer_paragraph(study, compare_rows(only_noise, rows, ["AP", "infer_ms"], LOWER))
    assert "Overall: not at this budget — no AP difference is resolved for NL-FCOS-cls" in text

    one_seed = [r for r in records if r["seed"] == 0]
    text = answer_paragraph(study, compare_rows(one_seed, rows, ["AP", "infer_ms"], LOWER))
    assert "(one seed: no interval)" in text
    assert "cannot answer" in answer_paragraph(study, [])


# ---------------------------------------------------------------------------------------------
# report.md, results.json and report.html of a fake study folder
# ---------------------------------------------------------------------------------------------
ROWS = [StudyRow("FCOS", "fcos_small"), StudyRow("NL-FCOS", "nl_fcos_small", reference="FCOS"),
        StudyRow("NL-FCOS <PANet>", "nl_fcos_small_panet", reference="FCOS")]


def _fake_study(out):
    """3 rows × 3 seeds of result.json and metrics.jsonl, as run_study leaves them."""
    rng = np.random.default_rng(0)
    records = []
    for i, row in enumerate(ROWS):
        for seed in range(3):
            # NL-FCOS: 2.1 points worse in every seed, give or take; PANet: noise around FCOS.
            shift = (0.0, -0.021 + (0.002, -0.001, -0.001)[seed], 0.03 * (seed - 1))[i]
            final = 0.40 + 0.01 * seed + shift
            metrics = {k: float(np.clip(final + 0.05 * j / 12, 0, 1)) for j, k in enumerate(COCO)}
            metrics["APs"] = -1.0 if i == 2 and seed == 0 else metrics["APs"]
            metrics.update(infer_ms=10.0 + 4.0 * (i == 1) + 0.2 * seed + rng.normal(0, 0.05),
                           train_s=300.0 + 40 * i + rng.normal(0, 5))
            run = out / row.slug / f"seed{seed}"
            run.mkdir(parents=True)
            lines = []
            for epoch in range(4):
                for step in range(epoch * 50 + 10, (epoch + 1) * 50 + 1, 10):
                    loss = 3.0 * math.exp(-step / (80 + 20 * i)) + 0.3 + rng.normal(0, 0.03)
                    lines.append({"epoch": epoch, "step": step, "lr": 1e-3, "loss": loss, "loss_cls": loss / 2})
                ap = final * (1 - math.exp(-(epoch + 1) / 1.5)) + rng.normal(0, 0.005)
                lines.append({"epoch": epoch, "step": (epoch + 1) * 50, "AP": ap, "AP50": ap + 0.2})
            text = "\n".join(json.dumps(x) for x in lines) + "\n{\"epoch\": 4, \"st"  # a torn last line
            (run / "metrics.jsonl").write_text(text)
            rec = {"row": row.label, "seed": seed, "model": row.model, "metrics": metrics}
            (run / "result.json").write_text(json.dumps(rec))
            records.append(rec)
    return records


def _bar_chart() -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 2.5), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.bar(["zero", "one", "two"], [0.61, 0.47, 0.55], color="tab:purple")
    ax.set_title("per-class AP")
    return fig


def _write(out, records, *, html=True):
    study = _study(ROWS)
    lines = aggregate(records, [r.label for r in ROWS], study.columns)
    tables = [(title, markdown_table(lines, cols, formats=study.formats, labels=study.labels))
              for title, cols in study.tables]
    comps = compare_rows(records, ROWS, study.columns, study.lower_is_better)
    answer = answer_paragraph(study, comps)
    ctx = HtmlContext(
        primary="AP", cost="infer_ms", command="hybridvision study fake --preset quick --seeds 3",
        device="cpu", labels=study.labels, formats=study.formats,
        extra_tables=[("Per-class AP", "Per class, `mean` of seeds.\n\n| class | AP |\n|---|---|\n| zero | 61.0 |\n")],
        extra_figures=[("Per-class AP chart", _bar_chart),
                       ("A broken figure", lambda: 1 / 0)]) if html else None
    write_report(out, title=study.title, intro=study.intro, tables=tables, lines=lines, columns=study.columns,
                 records=records, meta={"study": "fake", "device": "cpu"}, comparisons=comps, answer=answer,
                 html_context=ctx)
    return comps, answer


def test_report_md_opens_with_the_answer_and_lists_the_comparisons(tmp_path):
    records = _fake_study(tmp_path)
    comps, answer = _write(tmp_path, records, html=False)
    md = (tmp_path / "report.md").read_text()
    assert md.startswith(f"# Fake <study> & co\n\n{answer}\n\nA `fake` study.")
    assert "NL-FCOS: AP worse than FCOS" in answer
    assert "## Paired comparisons" in md
    assert "| model | reference | metric | seeds | mean difference | 95 % CI | verdict |" in md
    ap = next(c for c in comps if c["row"] == "NL-FCOS" and c["metric"] == "AP")
    row = (f"| NL-FCOS | FCOS | AP | 3 | -2.1 points | {ap['ci_low'] * 100:+.1f} to {ap['ci_high'] * 100:+.1f} "
           "| worse |")
    assert row in md
    assert "| NL-FCOS <PANet> | FCOS | APs | 2 |" in md  # seed 0's empty bucket left out
    assert not (tmp_path / "report.html").exists()  # no html_context: Markdown only, as before
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["answer"] == answer and len(saved["comparisons"]) == len(comps)


def test_write_report_without_the_new_arguments_is_unchanged(tmp_path):
    recs = [_rec("A", s, AP=v) for s, v in enumerate([0.2, 0.4])]
    lines = aggregate(recs, ["A"], ["AP"])
    write_report(tmp_path, title="T", intro="I", tables=[("t", markdown_table(lines, ["AP"]))], lines=lines,
                 columns=["AP"], records=recs, meta={})
    table = "| model | AP |\n|---|---|\n| A | 30.0 ± 14.1 |\n"
    assert (tmp_path / "report.md").read_text() == f"# T\n\nI\n\n## t\n\n{table}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "results.csv", "results.json"]
    assert "comparisons" not in json.loads((tmp_path / "results.json").read_text())


def test_comparison_table_with_one_seed_has_no_interval():
    comps = compare_rows([_rec("a", 0, AP=0.5), _rec("b", 0, AP=0.4)],
                         [StudyRow("a", "m"), StudyRow("b", "m", reference="a")], ["AP"])
    assert "| b | a | AP | 1 | -10.0 points | n/a | no difference resolved (one seed: no interval) |" \
        in comparison_table(comps)


def test_markdown_to_html_tables_paragraphs_and_escaping():
    text = ("A <b>note</b> with `code`\nand more.\n\n"
            "| model | AP | verdict |\n|---|---|---|\n| A&B | 40.0 ± 1.0 | better |\n")
    out = markdown_to_html(text)
    assert "<p>A &lt;b&gt;note&lt;/b&gt; with <code>code</code> and more.</p>" in out
    assert "<th>model</th><th>AP</th><th>verdict</th>" in out
    assert '<td>A&amp;B</td><td class="num">40.0 ± 1.0</td><td class="better">better</td>' in out
    with pytest.raises(ValueError, match="PNG"):
        png_data_uri(b"GIF89a")


def _html(tmp_path):
    records = _fake_study(tmp_path)
    _write(tmp_path, records)
    return tmp_path / "report.html"


def test_report_html_is_self_contained_and_holds_everything(tmp_path):
    page = _html(tmp_path).read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Fake &lt;study&gt; &amp; co</title>" in page
    assert '<p class="answer">Does a non-local block help FCOS? ' in page
    assert "NL-FCOS &lt;PANet&gt;" in page and "<PANet>" not in page  # every text escaped
    for heading in ("COCO metrics (percent)", "Cost", "Paired comparisons (row − reference, seed by seed)",
                    "Learning curves", "Per-class AP", "Per-class AP chart", "Reproduce"):
        assert f"{heading}</h" in page
    assert '<td class="worse">worse</td>' in page
    assert "no difference resolved at this budget (CI ±" in page
    assert page.count('<img src="data:image/png;base64,') >= 4  # 2 curves, scatter, the bar chart
    assert "not drawn (ZeroDivisionError" in page  # a failing figure leaves a note, not a crash
    assert "hybridvision study fake --preset quick --seeds 3" in page
    for fact in ("<th>torch</th>", "<th>CUDA (torch build)</th>", "<th>torchvision</th>", "<th>hybridvision</th>",
                 "<th>python</th>", "<th>device</th><td>cpu</td>", "<th>threads</th>", "<th>date</th>"):
        assert fact in page
    # Self-contained: nothing fetched from anywhere.
    for outside in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert outside not in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (Debian package `chromium`) on PATH")
def test_report_html_renders_in_headless_chromium(tmp_path):
    page = _html(tmp_path)
    shot = tmp_path / "shot.png"
    t0 = time.time()
    done = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,3000",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180)
    assert shot.is_file(), f"no screenshot after {time.time() - t0:.0f} s: {done.stderr[-2000:]}"
    from matplotlib.image import imread

    img = imread(shot)[..., :3]  # [H, W, 3] floats in [0, 1]
    assert img.shape[:2] == (3000, 1200)
    non_white = (img < 0.97).any(axis=-1).mean()
    colours = len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert non_white > 0.05, f"{non_white:.1%} non-white pixels: the page looks blank"
    assert colours > 500, f"{colours} distinct colours: no pictures rendered"


def test_a_difference_equal_in_every_seed():
    """A parameter count: zero spread. Equal everywhere reads "identical"; a constant non-zero
    difference is resolved (a zero-width interval that excludes 0)."""
    same = paired_difference([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert verdict(same, lower_is_better=True, unit_scale=1, unit="M params") == "identical"
    more = paired_difference([1.2, 1.2, 1.2], [1.0, 1.0, 1.0])
    assert verdict(more, lower_is_better=True, unit_scale=1, unit="M params") == "worse"


def test_differences_read_in_the_metrics_own_unit():
    """A cost named by its suffix (a retrieval study's ``query_ms``) reads in ms, not percentage
    points; fractions read in points."""
    from hybridvision.studies.stats import metric_unit

    assert metric_unit("query_ms") == (1.0, "ms") and metric_unit("photo_ms") == (1.0, "ms")
    assert metric_unit("infer_ms") == (1.0, "ms") and metric_unit("peak_mb") == (1.0, "MiB")
    assert metric_unit("mAP") == (100.0, "points") and metric_unit("P@10") == (100.0, "points")
    assert metric_unit("query_ms", {"query_ms": (1000.0, "µs")}) == (1000.0, "µs")


def test_point_labels_step_clear_of_each_other_and_of_the_points():
    from hybridvision.studies.html import _label_offsets

    # three points close together (their labels would print over each other and over the points)
    # and one at the right, whose label goes on its left and meets nothing
    points = [(100.0, 100.0), (110.0, 100.0), (130.0, 108.0), (400.0, 100.0)]
    labels = ["CornerFCOS multi normal", "conv", "x", "far right"]
    left = [False, False, False, True]
    offs = _label_offsets(points, labels, left)
    assert offs[3] == (6.0, 5.0) and any(dy < 5.0 for _, dy in offs[:3])
    boxes = [((x - 6 - 5.2 * len(t), x - 6) if lf else (x + 6, x + 6 + 5.2 * len(t)), y + dy)
             for (x, y), t, lf, (_, dy) in zip(points, labels, left, offs)]
    for i, ((a0, a1), ay) in enumerate(boxes):
        for j, ((b0, b1), by) in enumerate(boxes):
            assert i == j or not (a0 < b1 and b0 < a1 and abs(ay - by) < 11)
        for j, (qx, qy) in enumerate(points):
            assert i == j or not (a0 - 4 < qx < a1 + 4 and -4 < qy - ay < 12)


def test_every_study_compares_fractions_in_points_and_costs_in_their_units():
    """A compared metric reads in points exactly when it is not a cost (lower is better): the
    centernet study's ``AP_ms`` (AP with multi-scale testing) once read as milliseconds."""
    import hybridvision.studies.runner  # noqa: F401  registers every study
    from hybridvision.studies.spec import STUDIES
    from hybridvision.studies.stats import metric_unit

    assert len(STUDIES) >= 8
    for name, study in STUDIES.items():
        for metric in dict.fromkeys([study.primary, study.cost, *study.verdict_columns]):
            scale, unit = metric_unit(metric, study.units)
            is_cost = metric in study.lower_is_better
            assert (unit == "points") != is_cost, (name, metric, unit)
            assert scale == (1.0 if is_cost else 100.0), (name, metric)
