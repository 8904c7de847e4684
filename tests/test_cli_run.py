"""``corral run`` on real files through the console script: globs, input lists, parameter
tables, results files, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from tests._procs import corral_cli

MODULE = textwrap.dedent(
    """\
    def size(path):
        with open(path) as f:
            return len(f.read())

    def picky(path):
        if "bad" in path:
            raise ValueError("cannot read " + path)
        return path.upper()

    def area(width, height=1.0, unit="m"):
        return f"{width * height}{unit}2"
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "sims.py").write_text(MODULE)
    cases = tmp_path / "cases"
    cases.mkdir()
    for name, text in (("c10.sim", "x" * 10), ("c02.sim", "xx"), ("c1.sim", "x")):
        (cases / name).write_text(text)
    (cases / "notes.txt").write_text("not a case")
    return tmp_path


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_glob_expanded_by_corral_sorted_and_results_in_order(project: Path) -> None:
    proc = corral_cli(
        "run", "sims:size", "cases/*.sim", "--out", "out.jsonl", "--workers", "2", cwd=project
    )
    assert proc.returncode == 0, proc.stderr
    rows = _rows(project / "out.jsonl")
    assert [(r["key"], r["value"], r["status"]) for r in rows] == [
        ("cases/c02.sim", 2, "ok"), ("cases/c1.sim", 1, "ok"), ("cases/c10.sim", 10, "ok"),
    ]  # fmt: skip


def test_inputs_file_lines_and_a_failure_exit_1(project: Path) -> None:
    (project / "list.txt").write_text("# the cases\ngood-1\n\nbad-2\ngood-3\n")
    proc = corral_cli("run", "sims:picky", "--inputs", "list.txt", "--out", "out.csv", cwd=project)
    assert proc.returncode == 1
    import csv

    with open(project / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["key"], r["status"]) for r in rows] == [
        ("good-1", "ok"), ("bad-2", "failed"), ("good-3", "ok"),
    ]  # fmt: skip
    assert rows[1]["error"] == "ValueError: cannot read bad-2"
    assert json.loads(rows[0]["value"]) == "GOOD-1"
    assert "cannot read bad-2" in proc.stderr  # the summary names it


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_params_table_rows_as_keyword_arguments(project: Path, suffix: str) -> None:
    rows = [{"width": 2, "height": 3.0}, {"width": 4, "unit": "cm"}]
    table = project / f"sweep.{suffix}"
    if suffix == "csv":
        table.write_text("width,height,unit\n2,3.0,\n4,,cm\n")
    elif suffix == "jsonl":
        table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        columns = {"width": [2, 4], "height": [3.0, None], "unit": [None, "cm"]}
        pq.write_table(pa.table(columns), table)
    proc = corral_cli(
        "run", "sims:area", "--params", table.name, "--out", "out.jsonl", "--backend", "serial",
        cwd=project,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [r["value"] for r in _rows(project / "out.jsonl")] == ["6.0m2", "4.0cm2"]


@pytest.mark.slow
def test_parquet_results(project: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    proc = corral_cli("run", "sims:size", "cases/c1*.sim", "--out", "r.parquet", cwd=project)
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(project / "r.parquet").to_pylist()
    assert [(r["key"], r["status"], r["value"]) for r in table] == [
        ("cases/c1.sim", "ok", "1"), ("cases/c10.sim", "ok", "10"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["sims:size", "cases/*.nothing"], "no file matches 'cases/*.nothing'"),
        (["sims", "x"], "expected MODULE:FUNCTION"),
        (["nosuchmodule:f", "x"], "cannot import 'nosuchmodule'"),
        (["sims:nothing", "x"], "has no 'nothing'"),
        (["sims:size"], "nothing to run"),
        (["sims:size", "x", "--params", "sweep.csv"], "--params cannot go with inputs"),
        (["sims:size", "x", "--uses", "gpu"], "argument --uses: expected NAME=N"),
        (["sims:size", "x", "--memory", "lots"], "memory"),
        (["sims:size", "x", "--out", "r.xlsx"], "--out r.xlsx"),
        (["sims:size", "x", "--workers", "0"], "argument --workers"),
        (["sims:size", "x", "--resource", "gpu=-1"], "argument --resource"),
        (["sims:size", "x", "--no-config", "--config", "c.yaml"], "--no-config cannot go"),
    ],
)
def test_usage_errors_exit_2_in_one_line(
    project: Path,
    args: list[str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In-process through the CLI's main: every one of these stops before any work starts
    # (test_usage_error_from_the_console_script does one through a subprocess).
    from corral._cli import main

    (project / "sweep.csv").write_text("a\n1\n")
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.delitem(sys.modules, "sims", raising=False)
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (project / "r.xlsx").exists()


def test_usage_error_from_the_console_script(project: Path) -> None:
    proc = corral_cli("run", "sims:size", "cases/*.nothing", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr == "corral: error: no file matches 'cases/*.nothing'\n"


def test_debug_shows_the_traceback(project: Path) -> None:
    proc = corral_cli("run", "sims:size", "cases/*.nothing", "--debug", cwd=project)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


def test_help_of_every_command_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    from corral._cli import main

    commands = (["run"], ["exec"], ["config"], ["config", "show"], ["status"], ["report"],
                ["demo"], ["info"])  # fmt: skip
    for command in commands:
        with pytest.raises(SystemExit) as exit:
            main([*command, "--help"])
        assert exit.value.code == 0
        assert "examples:" in capsys.readouterr().out, command
