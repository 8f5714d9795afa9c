"""Paired statistics of a study: is a row better than its reference, seed for seed?

Every row of a study trains with the same seeds as the row it is compared with
(:attr:`StudyRow.reference`), so seed ``k`` of both sees the same data order and initial draw of
the shared parts: the per-seed *differences* carry less noise than the two rows' spreads. For
``n`` paired seeds with differences ``d_1 … d_n`` (row − reference)::

    mean ± t_{(1+c)/2, n-1} · s / √n        (s: sample std of d, ddof=1)

is the confidence interval of the mean difference (Student's paired t, the interval of
``scipy.stats.ttest_rel``). A verdict says "better" or "worse" only when that interval excludes 0;
otherwise the honest answer is that the study's budget (seeds, schedule) did not resolve one.

Values keep their units: fractions (AP, top-1) stay fractions here; the words scale them
(``unit_scale=100``: percentage points).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats as _scipy_stats

from hybridvision.studies.spec import Study, StudyRow

__all__ = ["PairedResult", "paired_difference", "verdict", "compare_rows", "answer_paragraph",
           "mean_std", "metric_unit", "format_number", "format_signed", "BETTER", "WORSE", "UNRESOLVED",
           "IDENTICAL", "UNITS"]

BETTER = "better"
WORSE = "worse"
UNRESOLVED = "no difference resolved"  # the prefix of every verdict that is neither
IDENTICAL = "identical"  # every seed's difference is exactly 0 (e.g. a parameter count)

# (scale, unit) of a difference in words; a metric not named here reads by its suffix (``_ms``,
# ``_s``, ``_mb``: :data:`UNIT_SUFFIXES`) or else is a fraction (percentage points).
UNITS: dict[str, tuple[float, str]] = {
    "infer_ms": (1.0, "ms"), "train_ms": (1.0, "ms"), "train_s": (1.0, "s"), "train_loop_s": (1.0, "s"),
    "infer_mem_mb": (1.0, "MiB"), "train_mem_mb": (1.0, "MiB"), "params_m": (1.0, "M params"),
    "gflops": (1.0, "GFLOPs"), "gmacs": (1.0, "GMACs"),
}
UNIT_SUFFIXES: dict[str, tuple[float, str]] = {"_ms": (1.0, "ms"), "_s": (1.0, "s"), "_mb": (1.0, "MiB")}

# How a cost reads in the answer: (words when the row costs more, when it costs less, the noun).
_COST_WORDS = {
    "infer_ms": ("slower per image", "faster per image", "speed"),
    "train_ms": ("slower per training step", "faster per training step", "training speed"),
    "train_s": ("slower to train", "faster to train", "training time"),
    "query_ms": ("slower per query", "faster per query", "speed"),
}


@dataclass(frozen=True)
class PairedResult:
    """The mean of paired differences (row − reference) and its confidence interval.

    ``ci_low``, ``ci_high``, ``half_width`` and ``std_diff`` are NaN for a single pair (no interval).
    """

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    half_width: float
    std_diff: float
    confidence: float = 0.95

    @property
    def resolved(self) -> bool:
        """True when the interval excludes 0 (a difference of known sign)."""
        return self.n >= 2 and (self.ci_low > 0 or self.ci_high < 0)


def paired_difference(values: Sequence[float], reference_values: Sequence[float], *,
                      confidence: float = 0.95) -> PairedResult:
    """Mean difference ``values − reference_values`` over paired seeds, with its t interval.

    Args:
        values: the row's per-seed values.
        reference_values: the reference's values for the same seeds, in the same order.
        confidence: the interval's confidence level, in (0, 1).

    Raises:
        ValueError: on different lengths, no pairs, a non-finite value or a bad confidence.
    """
    if len(values) != len(reference_values):
        raise ValueError(f"paired values need the same seeds: {len(values)} values against "
                         f"{len(reference_values)} reference values")
    if not values:
        raise ValueError("paired_difference needs at least one pair of values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diffs = [float(a) - float(b) for a, b in zip(values, reference_values)]
    if not all(math.isfinite(d) for d in diffs):
        raise ValueError(f"paired values must be finite, got differences {diffs}")
    n = len(diffs)
    mean = sum(diffs) / n
    if n == 1:
        nan = float("nan")
        return PairedResult(1, mean, nan, nan, nan, nan, confidence)
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(_scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return PairedResult(n, mean, mean - half, mean + half, half, std, confidence)


def format_number(x: float) -> str:
    """A magnitude with sensible precision: 123, 12.3, 1.3, 0.43, 0.043."""
    ax = abs(x)
    if ax != ax:
        return "n/a"
    if ax < 5e-4:  # float noise of a zero difference; no metric here means anything this small
        return "0"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 1:
        return f"{x:.1f}"
    if ax >= 0.1:
        return f"{x:.2f}"
    return f"{x:.2g}"


def verdict(result: PairedResult, *, lower_is_better: bool = False, unit_scale: float = 100,
            unit: str = "points") -> str:
    """The difference in words: ``"better"``, ``"worse"`` or ``"no difference resolved …"``.

    "better"/"worse" only when the interval excludes 0 (a higher value is worse when
    ``lower_is_better``; a difference that is the same in every seed, such as a parameter count,
    has a zero-width interval and is resolved); ``"identical"`` when every seed's difference is
    exactly 0; otherwise ``"no difference resolved at this budget (CI ±1.3 points)"``,
    the half width times ``unit_scale``; with one seed ``"no difference resolved (one seed: no
    interval)"``.
    """
    if result.n < 2 or result.half_width != result.half_width:
        return f"{UNRESOLVED} (one seed: no interval)"
    if result.std_diff == 0 and result.mean_diff == 0:  # e.g. parameters: equal in every seed
        return IDENTICAL
    if result.resolved:
        higher = result.ci_low > 0
        return WORSE if higher == lower_is_better else BETTER
    return f"{UNRESOLVED} at this budget (CI ±{format_number(result.half_width * unit_scale)} {unit})"


def metric_unit(metric: str, units: Mapping[str, tuple[float, str]] | None = None) -> tuple[float, str]:
    """``(scale, unit)`` of a metric's differences in words (fractions: ``(100, "points")``)."""
    if units and metric in units:
        return units[metric]
    if metric in UNITS:
        return UNITS[metric]
    return next((u for suffix, u in UNIT_SUFFIXES.items() if metric.endswith(suffix)), (100.0, "points"))


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for one value) of the values that are not None.

    NaN for no value; ``(-1, 0)`` when any value is -1 (COCO's empty size bucket in some seed).
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return float("nan"), float("nan")
    if any(v == -1 for v in vals):
        return -1.0, 0.0
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def _usable(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and v != -1)  # -1: an empty COCO size bucket, not a value


def compare_rows(records: Sequence[Mapping[str, Any]], rows: Sequence[StudyRow], metrics: Sequence[str],
                 lower_is_better: Iterable[str] = (), *, confidence: float = 0.95,
                 units: Mapping[str, tuple[float, str]] | None = None) -> list[dict[str, Any]]:
    """Every row that has a reference, against it (then against each of its
    ``also_compared_with`` rows), metric by metric, over the seeds both ran.

    Records are ``{"row", "seed", "metrics": {...}}`` (a later record of the same row and seed
    replaces an earlier one). A seed whose value is missing, non-finite or -1 (empty COCO bucket)
    in either row drops out of that metric's pairs; a metric with no pair left is skipped.

    Returns one JSON-friendly dict per (row, metric), in the order of ``rows`` then ``metrics``:
    ``row``, ``reference``, ``metric``, ``n``, ``seeds``, ``mean_diff``, ``ci_low``, ``ci_high``,
    ``half_width``, ``std_diff``, ``confidence`` (raw units), ``row_mean``, ``reference_mean``,
    ``verdict`` (:func:`verdict`), ``lower_is_better``, ``scale`` and ``unit`` (of the words).
    """
    lower = set(lower_is_better)
    by_row: dict[str, dict[int, Mapping[str, Any]]] = {}
    for rec in records:
        by_row.setdefault(rec["row"], {})[int(rec["seed"])] = rec.get("metrics", {})
    out = []
    pairs_of_rows = [(row.label, other) for row in rows for other in row.compared_with]
    for label, other in pairs_of_rows:
        if label not in by_row or other not in by_row:
            continue
        mine, ref = by_row[label], by_row[other]
        seeds = sorted(set(mine) & set(ref))
        for metric in metrics:
            pairs = [(s, mine[s].get(metric), ref[s].get(metric)) for s in seeds]
            pairs = [(s, a, b) for s, a, b in pairs if _usable(a) and _usable(b)]
            if not pairs:
                continue
            a = [p[1] for p in pairs]
            b = [p[2] for p in pairs]
            res = paired_difference(a, b, confidence=confidence)
            scale, unit = metric_unit(metric, units)
            is_lower = metric in lower
            out.append({
                "row": label, "reference": other, "metric": metric, "n": res.n,
                "seeds": [p[0] for p in pairs], "mean_diff": res.mean_diff, "ci_low": res.ci_low,
                "ci_high": res.ci_high, "half_width": res.half_width, "std_diff": res.std_diff,
                "confidence": confidence, "row_mean": sum(a) / len(a), "reference_mean": sum(b) / len(b),
                "verdict": verdict(res, lower_is_better=is_lower, unit_scale=scale, unit=unit),
                "lower_is_better": is_lower, "scale": scale, "unit": unit,
            })
    return out


# ---------------------------------------------------------------------------------------------
# the answer in words
# ---------------------------------------------------------------------------------------------
def _seeds(c: Mapping[str, Any]) -> str:
    return "one seed" if c["n"] == 1 else f"{c['n']} seeds"


def _ci_words(c: Mapping[str, Any], *, magnitude: bool) -> str:
    """``95 % CI 0.8–3.4`` (of |difference| when ``magnitude``), scaled to the words' unit."""
    lo, hi = c["ci_low"] * c["scale"], c["ci_high"] * c["scale"]
    if magnitude and hi < 0:
        lo, hi = -hi, -lo
    pct = f"{c['confidence'] * 100:g} %"
    if lo >= 0:
        return f"{pct} CI {format_number(lo)}–{format_number(hi)}"
    return f"{pct} CI {format_signed(lo)} to {format_signed(hi)}"


def format_signed(x: float) -> str:
    """``+1.3`` or ``-0.43``: a difference with its sign, see :func:`format_number`."""
    return ("+" if x >= 0 else "-") + format_number(abs(x))


def _primary_words(c: Mapping[str, Any], name: str) -> str:
    diff = c["mean_diff"] * c["scale"]
    unit, ref = c["unit"], c["reference"]
    if c["n"] < 2:
        return f"{name} {format_signed(diff)} {unit} against {ref} (one seed: no interval)"
    if c["verdict"] in (BETTER, WORSE):
        return (f"{name} {c['verdict']} than {ref} by {format_number(abs(diff))} {unit} "
                f"({_ci_words(c, magnitude=True)}, {_seeds(c)})")
    return (f"no {name} difference from {ref} resolved ({format_signed(diff)} {unit}, "
            f"{_ci_words(c, magnitude=False)}, {_seeds(c)})")


def _cost_words(c: Mapping[str, Any], name: str) -> str:
    more, less, name = _COST_WORDS.get(c["metric"], (f"more {name}", f"less {name}", name))
    diff = c["mean_diff"] * c["scale"]
    detail = f"{format_signed(diff)} {c['unit']}"
    if c["n"] >= 2:
        detail += f", {_ci_words(c, magnitude=False)}"
    r, q = c["row_mean"], c["reference_mean"]
    if c["verdict"] in (BETTER, WORSE):
        # Higher cost is "worse" whenever the study lists the cost as lower-is-better.
        costs_more = (c["verdict"] == WORSE) == c["lower_is_better"]
        if r > 0 and q > 0:
            ratio = r / q if costs_more else q / r
            return f"{_ratio(ratio)}× {more if costs_more else less} ({detail})"
        return f"{more if costs_more else less} ({detail})"
    if c["verdict"] == IDENTICAL:
        return f"the same {name}"
    if c["n"] < 2:
        return f"{name} {detail} (one seed: no interval)"
    return f"no {name} difference resolved ({detail})"


def _ratio(x: float) -> str:
    """1.04, 1.4, 14: enough digits to tell a ratio near 1 from 1."""
    return f"{x:.2f}" if x < 1.1 else f"{x:.1f}" if x < 10 else f"{x:.0f}"


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def answer_paragraph(study: Study, comparisons: Sequence[Mapping[str, Any]]) -> str:
    """The report's first paragraph: the study's question answered from the verdicts.

    One sentence per compared row (its primary metric and its cost against its reference, from
    :func:`compare_rows`), then one overall sentence. Nothing is assumed about the outcome.
    """
    primary, cost = study.primary, study.cost
    pname, cname = study.labels.get(primary, primary), study.labels.get(cost, cost)
    found: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}  # (row, reference) → metric → comparison
    for c in comparisons:
        if c["metric"] in (primary, cost):
            found.setdefault((c["row"], c["reference"]), {})[c["metric"]] = c
    per_row = Counter(row for row, _ in found)
    lead = f"{study.question} " if study.question else ""
    if not any(primary in f for f in found.values()):
        return (lead + f"No row has a finished reference run with the same seeds and a {pname}, "
                "so this report cannot answer it yet.")
    sentences = []
    groups: dict[str, list[str]] = {BETTER: [], WORSE: [], UNRESOLVED: []}
    for (row, ref), f in found.items():
        parts = []
        if primary in f:
            parts.append(_primary_words(f[primary], pname))
            v = f[primary]["verdict"]
            name = row if per_row[row] == 1 else f"{row} against {ref}"
            groups[v if v in (BETTER, WORSE) else UNRESOLVED].append(name)
        if cost in f:
            parts.append(_cost_words(f[cost], cname))
        sentences.append(f"{row}: " + " and ".join(parts) + ".")
    overall = []
    if groups[BETTER]:
        overall.append(f"{pname} improves for {_join(groups[BETTER])}")
    if groups[WORSE]:
        overall.append(f"{pname} gets worse for {_join(groups[WORSE])}")
    if groups[UNRESOLVED]:
        what = "no difference is resolved" if overall else f"no {pname} difference is resolved"
        overall.append(f"{what} for {_join(groups[UNRESOLVED])}")
    if groups[BETTER] or groups[WORSE]:
        answer = "Overall, at this preset's schedule: " + "; ".join(overall) + "."
    else:
        answer = ("Overall: not at this budget — " + overall[0]
                  + "; more seeds or a longer schedule could tell.")
    n_rows = sum(primary in f for f in found.values())
    caveat = (f" Each interval is a 95 % paired-t interval of its own comparison, not corrected for "
              f"the {n_rows} comparisons of {pname}; a row that learns more slowly than its reference "
              "is judged at the reference's converged schedule (its learning curve is below).")
    return lead + " ".join(sentences) + " " + answer + (caveat if n_rows > 1 else "")
