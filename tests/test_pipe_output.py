"""Output read by scripts comes whole through a pipe: model names, paths, help, as valid UTF-8,
whatever ``$COLUMNS`` says (unset, as in CI, or narrow). Each command runs as a real process
with its stdout a pipe, not a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hybridvision.factory import list_models

COLUMNS = [None, "40"]  # unset (CI) and narrower than any name or path


def _run(*args: str, columns: str | None, cwd=None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TERMINAL_WIDTH")}
    env["OMP_NUM_THREADS"] = "1"
    if columns is not None:
        env["COLUMNS"] = columns
    proc = subprocess.run([sys.executable, "-m", "hybridvision", *args], capture_output=True, env=env,
                          cwd=cwd, timeout=300)
    # every byte valid UTF-8 (a cropped line once ended in half a character)
    return proc.returncode, proc.stdout.decode("utf-8", errors="strict"), proc.stderr.decode("utf-8", errors="strict")


@pytest.mark.parametrize("columns", COLUMNS)
def test_models_lists_every_name_whole_in_a_pipe(columns):
    names = list_models()
    code, out, err = _run("models", columns=columns)
    assert code == 0, err
    first_words = {line.split()[0] for line in out.splitlines() if line.strip() and line.split()}
    assert set(names) <= first_words, sorted(set(names) - first_words)
    assert "…" not in out  # nothing cropped
    code, out, err = _run("models", "--names", columns=columns)
    assert code == 0, err
    assert out.splitlines() == names


@pytest.mark.parametrize("columns", COLUMNS)
def test_a_converter_prints_its_long_path_whole(tmp_path, columns):
    # a path longer than any terminal, holding what rich markup would eat or choke on
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "[red]x[/red] [/x]"
    deep.mkdir(parents=True)
    src = deep / "modanet.json"
    cats = [{"id": 1, "name": "bag", "supercategory": "fashion"}]
    src.write_text(json.dumps({
        "images": [{"file_name": "1.jpg", "id": 1, "width": 100, "height": 80}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400,
                         "iscrowd": 0, "segmentation": [[10, 10, 30, 10, 30, 30]]}],
        "categories": cats}))
    out = deep / "coco.json"
    code, stdout, err = _run("data", "convert", "modanet", str(src), "--out", str(out), columns=columns)
    assert code == 0, err
    assert str(out) in stdout, stdout
    assert len(stdout.strip().splitlines()) == 1  # one summary line, not wrapped


@pytest.mark.parametrize("columns", COLUMNS)
def test_demo_help_is_whole_in_a_pipe(columns):
    code, out, err = _run("demo", "--help", columns=columns)
    assert code == 0, err
    assert "runs/demo" in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) > 40  # not wrapped at $COLUMNS


def test_a_table_in_a_pipe_keeps_its_natural_width(monkeypatch):
    """The console itself: no wrap, no crop when its stream is not a terminal, even with COLUMNS=40."""
    import io

    from rich.table import Table

    from hybridvision.console import ScriptSafeConsole

    monkeypatch.setenv("COLUMNS", "40")
    buf = io.StringIO()
    con = ScriptSafeConsole(file=buf)
    table = Table("model", "description")
    table.add_row("centernet_small_hourglass_with_a_long_name", "x " * 60)
    con.print(table)
    con.print("p" * 300 + " [bold]kept[/bold]")
    text = buf.getvalue()
    assert "centernet_small_hourglass_with_a_long_name" in text and "x " * 59 in text
    assert ("p" * 300 + " [bold]kept[/bold]") in text.splitlines()


def test_only_rank_zero_writes_to_stdout(monkeypatch, capsys):
    from hybridvision.console import ScriptSafeConsole
    from hybridvision.engine.progress import format_per_class

    monkeypatch.setenv("RANK", "1")
    ScriptSafeConsole().print("run folder: x")
    ScriptSafeConsole(stderr=True).print("error: y")
    # rendering into a string (a table for a report) still works on every rank
    assert "[cls]" in format_per_class({"per_class": {"[cls]": 0.5}})
    out = capsys.readouterr()
    assert out.out == "" and "error: y" in out.err
    monkeypatch.setenv("RANK", "0")
    ScriptSafeConsole().print("run folder: x")
    assert capsys.readouterr().out == "run folder: x\n"


def test_help_names_every_study_and_every_task(cli):
    from hybridvision.registry import registered_tasks
    from hybridvision.studies.runner import STUDIES

    code, out, _ = cli("study", "--help")
    assert code == 0 and all(name in out for name in STUDIES), out  # sbir was missing
    code, out, _ = cli("models", "--help")
    assert code == 0 and all(task in out for task in registered_tasks()), out
