"""``error_dir`` with ``journal=``: a resumed run rewrites the error reports so that they
match the journal: a task that now succeeded (ran again, or cached ok) has no report, a
journaled failure kept (``rerun_failed=False``) has one, and ``index.json`` lists exactly
the journal's failures. Real workers; marker files say which tasks ran."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import corral


def fail_while_marked(directory: str, x: int) -> int:
    d = Path(directory)
    (d / f"ran-{x}-{len(list(d.glob(f'ran-{x}-*')))}").write_text("")
    if (d / f"fail-{x}").exists():
        raise ValueError(f"task {x} is marked to fail")
    return x


def _star(item: tuple[str, int]) -> int:
    return fail_while_marked(*item)


def index_keys(folder: Path) -> set[str]:
    index = json.loads((folder / "index.json").read_text())
    assert index["run"]["complete"] is True
    for entry in index["reports"]:
        assert (folder / entry["json"]).is_file() and (folder / entry["markdown"]).is_file()
    return {e["key"] for e in index["reports"]}


def journal_failures(journal: Path) -> set[str]:
    return {repr(o.key) for o in corral.open_journal(journal).failures}


def report_files(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("task-*")}


def test_a_resume_removes_the_reports_of_tasks_that_succeeded_and_matches_the_journal(
    tmp_path: Path,
) -> None:
    journal, folder = tmp_path / "run.corral", tmp_path / "errors"
    for x in (1, 4, 6):
        (tmp_path / f"fail-{x}").write_text("")
    items = [(str(tmp_path), x) for x in range(8)]
    options: dict[str, Any] = {"workers": 2, "journal": journal, "error_dir": folder}
    corral.map(_star, items, errors="return", **options)
    assert index_keys(folder) == journal_failures(journal) == {"1", "4", "6"}

    # 1 would succeed now; with rerun_failed=False the journaled failures are kept, cached
    (tmp_path / "fail-1").unlink()
    corral.map(_star, items, errors="return", rerun_failed=False, **options)
    assert index_keys(folder) == journal_failures(journal) == {"1", "4", "6"}  # all kept
    assert len(list(tmp_path.glob("ran-1-*"))) == 1  # (nothing ran)
    docs = {k: json.loads((folder / f"task-{k}.json").read_text()) for k in ("1", "4", "6")}
    assert {d["status"] for d in docs.values()} == {"cached"}

    corral.map(_star, items, errors="return", **options)  # the failures run again
    assert len(list(tmp_path.glob("ran-1-*"))) == 2 and len(list(tmp_path.glob("ran-0-*"))) == 1
    assert index_keys(folder) == journal_failures(journal) == {"4", "6"}
    assert report_files(folder) == {"task-4.md", "task-4.json", "task-6.md", "task-6.json"}
    assert json.loads((folder / "task-4.json").read_text())["status"] == "failed"

    (tmp_path / "fail-4").unlink()
    (tmp_path / "fail-6").unlink()
    assert corral.map(_star, items, **options) == list(range(8))
    assert index_keys(folder) == journal_failures(journal) == set()
    assert report_files(folder) == set()


def test_a_resumed_run_of_tasks_reports_what_the_journal_holds(tmp_path: Path) -> None:
    journal, folder = tmp_path / "run.corral", tmp_path / "errors"
    (tmp_path / "fail-2").write_text("")
    tasks = [corral.Task(fail_while_marked, (str(tmp_path), x), key=f"job/{x}") for x in range(5)]
    first = corral.run(tasks, workers=2, errors="return", journal=journal, error_dir=folder)
    assert [o.key for o in first.outcomes if not o.ok] == ["job/2"]
    assert index_keys(folder) == journal_failures(journal) == {"'job/2'"}
    (tmp_path / "fail-2").unlink()
    second = corral.run(tasks, workers=2, journal=journal, error_dir=folder)
    assert second.ok and second.journal is not None and second.journal.cached == 4
    assert index_keys(folder) == journal_failures(journal) == set()
    assert report_files(folder) == set()
