"""README "A new study": the toy study is added exactly as the README writes it (its code block,
run as written), then planned with ``--dry-run`` and run for real for one seed on tiny data
through the command line; and the shared study pieces live in ``studies/common.py``."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
from readme_blocks import readme_block

from hybridvision.studies.spec import STUDIES, Study, StudyRow, register_study

ROOT = Path(__file__).resolve().parents[1]


def readme_study_code() -> str:
    return readme_block("extending-study")


@pytest.fixture
def toy_study():
    """The README's study registered as the README writes it; unregistered afterwards, so no other
    test sees it."""
    before = dict(STUDIES)
    namespace: dict = {"__name__": "hybridvision.studies.fpn_width"}
    exec(compile(readme_study_code(), "README.md (A new study)", "exec"), namespace)
    added = sorted(set(STUDIES) - set(before))
    yield STUDIES[added[0]] if len(added) == 1 else None, namespace
    STUDIES.clear()
    STUDIES.update(before)


def test_readme_study_registers_one_study_with_every_preset(toy_study):
    study, namespace = toy_study
    assert study is not None and study.name == "fpn-width" and namespace["STUDY"] is study
    assert set(study.rows) == set(study.presets) == {"smoke", "cpu", "paper"}
    assert study.question and study.primary in study.columns and study.cost in study.columns


def test_readme_study_dry_run_then_one_seed_writes_the_report(toy_study, cli, tiny_amounts, tmp_path):
    """As README step 3: ``--dry-run`` lists the runs and trains nothing; then the smoke preset for
    one seed on the tiny built-in amounts writes the report with the study's rows and metrics."""
    out = tmp_path / "fpn-width"
    args = ["study", "fpn-width", "--preset", "smoke", "--seeds", "1", "--out", out, "--device", "cpu",
            f"data_root={tiny_amounts}", "data_kwargs.n_train=32", "data_kwargs.n_val=8",
            "data_kwargs.image_size=64"]  # the fixture's tiny amounts, used as they are
    code, stdout, err = cli(*args, "--dry-run")
    assert code == 0, err
    assert "FCOS, 32-ch FPN" in stdout and "2 runs" in stdout
    assert not (out / "report.md").exists()

    code, stdout, err = cli(*args)
    assert code == 0, err
    report = (out / "report.md").read_text()
    assert report.startswith("# FPN width in FCOS") and "FCOS, 32-ch FPN" in report
    assert "Does a narrower FPN cost FCOS accuracy" in report
    for name in ("report.html", "results.csv", "results.json"):
        assert (out / name).is_file(), name
    runs = {r["row"]: r["metrics"] for r in json.loads((out / "results.json").read_text())["runs"]}
    assert set(runs) == {"FCOS", "FCOS, 32-ch FPN"}
    for metrics in runs.values():  # the evaluation's metrics and the study's own `measure`
        assert {"AP", "AP50", "infer_ms", "params_m"} <= set(metrics)
    assert runs["FCOS, 32-ch FPN"]["params_m"] < runs["FCOS"]["params_m"]


def _study(**changes) -> Study:
    rows = [StudyRow("A", "fcos_small"), StudyRow("B", "fcos_small", reference="A")]
    base = Study(name="check-registration", title="t", intro="i", rows={"smoke": rows, "cpu": rows},
                 presets={"smoke": {}, "cpu": {}}, default_data="builtin:amounts", columns=["AP"],
                 tables=[("t", ["AP"])])
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("changes, message", [
    ({"rows": {"smoke": [StudyRow("A", "fcos_small")]}}, r"presets \['cpu'\] have rows or settings but not both"),
    ({"rows": {"smoke": [StudyRow("A", "fcos_small")], "cpu": []}}, r"presets \['cpu'\] have no rows"),
    ({"rows": {"smoke": [StudyRow("B", "fcos_small", reference="A")], "cpu": [StudyRow("A", "fcos_small")]}},
     r"row 'B' is compared with \['A'\], which is not another row"),
])
def test_register_study_refuses_an_inconsistent_study(changes, message):
    before = dict(STUDIES)
    with pytest.raises(ValueError, match=message):
        register_study(_study(**changes))
    assert STUDIES == before
    register_study(_study())  # the consistent variant is accepted
    assert STUDIES.pop("check-registration").name == "check-registration"


def test_studies_import_shared_pieces_from_common_not_from_each_other():
    """A study module imports no sibling study: what they share is in ``studies/common.py``."""
    folder = ROOT / "src" / "hybridvision" / "studies"
    study_modules = {"fcos_nonlocal", "centernet", "cornernet", "hybrid_classification", "sbir"}
    for name in sorted(study_modules):
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        modules = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
        modules += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        imported = {m.rsplit(".", 1)[-1] for m in modules if m.startswith("hybridvision.studies.")}
        assert not imported & study_modules, f"studies/{name}.py imports the study {imported & study_modules}"
    assert not (folder / "base.py").exists(), "the runner is studies/runner.py"
