"""examples/postprocess_files: the table equals a serial loop's, bad files are isolated (a
row, an error report, a timeout), the licence caps concurrency, a journaled rerun redoes
nothing, `corral run` gives the same values, a leaking reader's workers are recycled."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests._deps import require_module
from tests._procs import corral_cli

EXAMPLE = Path(__file__).parents[1] / "examples" / "postprocess_files"
sys.path.insert(0, str(EXAMPLE))
require_module("h5py")

import make_results as generate  # noqa: E402
import postprocess  # noqa: E402


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("postprocess")
    generate.generate(root / "results", files=6, samples=generate.SMALL_SAMPLES, faults=True)
    shutil.copy(EXAMPLE / "analysis.yml", root / "analysis.yml")
    return root


def good(root: Path) -> list[Path]:
    return sorted((root / "results").glob("run_0*.h5"))


def config(root: Path) -> tuple[Path, str]:
    return (root / "analysis.yml", "parallel_processing")


def test_parallel_table_equals_serial_and_bad_files_are_isolated(batch: Path) -> None:
    files = sorted((batch / "results").glob("*.h5"))
    # workers=3 > 2 licences: the resource, not the pool size, keeps it to 2 files at once.
    report = postprocess.run_corral(
        files, config=config(batch), workers=3, timeout=5, progress=False
    )
    by_key = {o.key: o for o in report.outcomes}
    assert [o.key for o in report.outcomes] == [f.name for f in files]
    serial = postprocess.run_serial(good(batch))
    assert [by_key[f.name].value for f in good(batch)] == serial
    bad = ("run_corrupt.h5", "run_empty.h5", "run_hang.h5")
    assert [str(by_key[k].status) for k in bad] == ["failed", "failed", "timeout"]
    rows = postprocess.table(report)
    assert [r["file"] for r in rows] == [f.name for f in files]
    assert [r for r in rows if r["status"] == "ok"] == [
        {**s["summary"], "status": "ok", "error": ""} for s in serial
    ]
    reports = {p.name for p in (batch / "errors").iterdir()}  # save_error_reports: true
    for name in ("run_corrupt.h5", "run_empty.h5", "run_hang.h5"):
        assert {f"task-{name}.md", f"task-{name}.json"} <= reports
    hang = json.loads((batch / "errors" / "task-run_hang.h5.json").read_text())
    assert hang["status"] == "timeout"
    spans = sorted((o.started, o.finished) for o in report.outcomes if o.started and o.finished)
    most = max(sum(s <= start < e for s, e in spans) for start, _ in spans)  # at each start
    assert most <= 2  # the orcaflex licences


def test_a_second_run_with_the_journal_redoes_nothing(batch: Path, tmp_path: Path) -> None:
    files = good(batch)
    journal = tmp_path / "postprocess.corral"
    first = postprocess.run_corral(files, config=config(batch), journal=journal, progress=False)
    assert all(o.ok for o in first.outcomes)
    second = postprocess.run_corral(files, config=config(batch), journal=journal, progress=False)
    assert {str(o.status) for o in second.outcomes} == {"cached"}
    assert second.journal.cached == len(files)
    assert [o.value for o in second.outcomes] == [o.value for o in first.outcomes]


def test_corral_run_on_the_command_line_gives_the_same_values(batch: Path) -> None:
    out = batch / "cli.jsonl"
    proc = corral_cli(
        "run", "postprocess:reduce_file", str(batch / "results" / "run_0*.h5"),
        "--config", str(batch / "analysis.yml"), "--section", "parallel_processing",
        "--uses", "orcaflex=1", "--no-progress", "--out", str(out),
        cwd=EXAMPLE,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    serial = postprocess.run_serial(good(batch))
    assert [r["value"] for r in records] == json.loads(json.dumps(serial))


@pytest.mark.slow
def test_a_leaking_reader_gets_its_workers_recycled(batch: Path) -> None:
    files = good(batch)
    serial = postprocess.run_serial(files)
    report = postprocess.run_corral(  # 96 MB kept per file: past 200 MiB after 2 files or so
        files, leak_mb=96, config=config(batch), max_worker_memory="200MiB", progress=False
    )
    assert [o.value for o in report.outcomes] == serial
    assert any(span.how == "recycled" for span in report.worker_spans)
