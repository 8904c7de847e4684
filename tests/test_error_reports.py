"""``error_dir``: a Markdown report and its JSON twin per failed task, and ``index.json``,
written while the batch runs, whole even when the coordinator is SIGKILLed, and rewritten
consistently by a rerun into the same folder. Real workers, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from _procs import kill_script, marked, run_script, wait_until

import corral
from corral import Outcome, Status
from corral._options import with_run_overrides
from corral._report.error_dir import describe, markdown, safe_name

SCRIPT = Path(__file__).parent / "scripts" / "error_dir_batch.py"

# -- tasks ------------------------------------------------------------------------------------


def fail_how(how: str, payload: Any = None) -> str:
    if how == "raise":
        raise ValueError("the input was bad")
    if how == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "hang":
        time.sleep(60)
    if how == "stack":
        error = RuntimeError("hung")
        error.stack = 'File "task.py", line 3, in spin\n    while True: pass\n'  # type: ignore[attr-defined]
        raise error
    return how


def fail_if_listed(key: str, failing: list[str]) -> str:
    if key in failing:
        raise ValueError(f"{key} failed")
    return key


def index_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "index.json").read_text())  # type: ignore[no-any-return]


def reports_by_key(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        e["key"]: json.loads((folder / e["json"]).read_text()) for e in index_of(folder)["reports"]
    }


# -- what a report says ---------------------------------------------------------------------------


@pytest.mark.slow
def test_each_failed_task_has_a_markdown_and_json_report_and_an_index_entry(tmp_path: Path) -> None:
    folder = tmp_path / "errors"
    long_arg = "x" * 5000
    tasks = [
        corral.Task(fail_how, ("ok",), key="fine"),
        corral.Task(fail_how, ("raise", long_arg), key="bad input", retries=1),
        corral.Task(fail_how, ("crash",), key="crash"),
        corral.Task(fail_how, ("hang",), key="hang", timeout=2),
        corral.Task(fail_how, ("ok",), key="after crash", after=["crash"]),
    ]
    report = corral.run(tasks, workers=2, errors="return", backoff=0, error_dir=folder)
    assert [o.status for o in report.outcomes] == [
        Status.OK, Status.FAILED, Status.CRASHED, Status.TIMEOUT, Status.SKIPPED,
    ]  # fmt: skip
    index = index_of(folder)
    assert index["run"]["complete"] is True and index["failed"] == 4
    assert [e["key"] for e in index["reports"]] == [
        "'bad input'",
        "'crash'",
        "'hang'",
        "'after crash'",
    ]
    assert all(e["this_run"] for e in index["reports"])
    files = {p.name for p in folder.iterdir()}
    expected = {"index.json"} | {e[k] for e in index["reports"] for k in ("markdown", "json")}
    assert files == expected  # nothing else: no temporary file left

    docs = reports_by_key(folder)
    bad = docs["'bad input'"]
    assert bad["error"]["type"] == "ValueError" and bad["error"]["message"] == "the input was bad"
    assert 'raise ValueError("the input was bad")' in bad["error"]["traceback"]
    assert bad["call"].startswith("test_error_reports.fail_how('raise', 'xxx")
    assert len(bad["call"]) < 300  # the 5,000-character argument is cut
    assert [a["status"] for a in bad["attempts"]] == ["failed", "failed"]
    assert all("ValueError: the input was bad" in a["error"] for a in bad["attempts"])
    assert bad["worker"]["pid"] == report.outcomes[1].pid and bad["worker"]["id"] in (0, 1)
    assert bad["timings"]["seconds"] is not None and bad["timings"]["started"]

    crash = docs["'crash'"]
    assert crash["status"] == "crashed"
    assert crash["worker"]["exitcode"] == -signal.SIGKILL and crash["worker"]["signal"] == "SIGKILL"
    assert (
        docs["'hang'"]["worker"]["timeout"] == 2
        and docs["'hang'"]["error"]["type"] == "TaskTimeout"
    )
    assert docs["'after crash'"]["status"] == "skipped"

    md = (folder / index["reports"][0]["markdown"]).read_text()
    assert md.startswith("# Task 'bad input': failed")
    assert "## Traceback (in the worker)" in md and "## Attempts" in md
    assert "fail_how('raise'" in md
    assert "killed by SIGKILL" in (folder / index["reports"][1]["markdown"]).read_text()


def test_a_hung_tasks_stack_and_captured_output_are_in_the_report(tmp_path: Path) -> None:
    folder = tmp_path / "errors"
    corral.map(fail_how, ["stack"], workers=1, errors="return", error_dir=folder)
    [doc] = reports_by_key(folder).values()
    assert "while True: pass" in doc["error"]["stack"]
    assert "## Stack of the hung task" in (folder / "task-0.md").read_text()
    assert doc["call"] == "test_error_reports.fail_how('stack')"

    # Captured output comes from the observability options (Outcome.stdout/stderr) when set:
    # the renderer reads them if the Outcome has them.
    class WithOutput(Outcome):
        pass

    outcome = WithOutput(key="k", status=Status.FAILED, error=ValueError("v"))
    object.__setattr__(outcome, "stdout", "line\n" * 5000)
    object.__setattr__(outcome, "stderr", b"warning: careful\n")
    doc = describe(outcome, None, 0)
    assert doc["output"]["stderr"] == "warning: careful\n"
    assert doc["output"]["stdout"].startswith("...\n") and len(doc["output"]["stdout"]) < 8100
    assert "## Captured stderr (end)" in markdown(doc)


def test_file_names_are_safe_and_do_not_collide(tmp_path: Path) -> None:
    folder = tmp_path / "errors"
    keys = ["../../etc/passwd", "a/b", "a_b", "x" * 300, 1, "1", "spaces and ünïcode"]
    tasks = [corral.Task(fail_how, ("raise",), key=k) for k in keys]
    corral.run(tasks, workers=2, errors="return", error_dir=folder)
    entries = index_of(folder)["reports"]
    names = [e["json"] for e in entries]
    assert len(set(names)) == len(keys)
    for name in names:
        assert "/" not in name and not name.startswith(".") and len(name) < 100
        assert (folder / name).is_file()
    assert not (tmp_path / "etc").exists()
    assert safe_name("plain-key_1.0") == "task-plain-key_1.0"
    assert safe_name("a/b") != safe_name("a_b")


def test_an_error_dir_that_cannot_be_a_folder_fails_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with corral.Pool(1) as pool:
        with pytest.raises(corral.ConfigError, match="error_dir"):
            pool.map(fail_how, ["ok"], error_dir=blocker)
        assert pool.map(fail_how, ["ok"]) == ["ok"]  # the pool is fine
    with pytest.raises(corral.ConfigError, match="error_dir"):
        corral.map(fail_how, ["ok"], workers=1, error_dir=42)


def test_imap_reports_its_failures_with_their_items(tmp_path: Path) -> None:
    folder = tmp_path / "errors"
    list(corral.imap(fail_how, ["ok", "raise", "ok"], workers=2, errors="return", error_dir=folder))
    docs = reports_by_key(folder)
    assert list(docs) == ["1"]
    assert docs["1"]["call"] == "test_error_reports.fail_how('raise')"


# -- a rerun into the same folder ---------------------------------------------------------------


def test_a_rerun_rewrites_the_folder_to_match_its_own_outcomes(tmp_path: Path) -> None:
    folder = tmp_path / "errors"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")  # not corral's: left alone

    def run(failing: list[str]) -> None:
        tasks = [corral.Task(fail_if_listed, (k, failing), key=k) for k in ("a", "b", "c")]
        corral.run(tasks, workers=2, errors="return", error_dir=folder)

    run(["a", "b"])
    assert set(reports_by_key(folder)) == {"'a'", "'b'"}
    run(["b", "c"])  # a now succeeds: its report goes; c's is new
    docs = reports_by_key(folder)
    assert set(docs) == {"'b'", "'c'"}
    assert not (folder / "task-a.md").exists() and not (folder / "task-a.json").exists()
    assert (folder / "notes.txt").read_text() == "mine"
    assert {p.name for p in folder.iterdir()} == {
        "index.json", "notes.txt", "task-b.md", "task-b.json", "task-c.md", "task-c.json",
    }  # fmt: skip


def test_a_resumed_run_reports_its_cached_failures_and_drops_cached_successes(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "errors"
    corral.map(fail_how, ["raise", "raise", "ok"], workers=2, errors="return", error_dir=folder)
    assert set(reports_by_key(folder)) == {"0", "1"}
    given = {
        0: Outcome(key=0, status=Status.OK, value="ok"),  # succeeded since
        1: Outcome(key=1, status=Status.FAILED, error=ValueError("kept"), traceback="tb here\n"),
    }
    with corral.Pool(2) as pool:
        options = with_run_overrides(pool.run_options, {"errors": "return", "error_dir": folder})
        pool._map(fail_how, ["raise", "raise", "ok"], options, None, None, given=given)
    docs = reports_by_key(folder)
    assert set(docs) == {"1"}
    assert docs["1"]["status"] == "cached" and docs["1"]["error"]["message"] == "kept"
    assert docs["1"]["error"]["traceback"] == "tb here\n"


# -- a coordinator killed while it writes -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_sigkilled_coordinator_leaves_only_whole_files_and_the_next_run_cleans_up(
    tmp_path: Path,
) -> None:
    folder, markers = tmp_path / "errors", tmp_path / "markers"
    markers.mkdir()
    proc = run_script(SCRIPT, folder, markers)
    try:
        wait_until(
            lambda: len(list(folder.glob("task-*.json"))) >= 30, "30 reports written", proc=proc
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("the script outlived SIGKILL") from None
    finally:
        kill_script(proc, markers)
    wait_until(lambda: not any(_alive(p) for p in marked(markers, "worker")), "workers to die")
    index = index_of(folder)  # whole: it parses
    assert index["run"]["complete"] is False and index["run"]["finished"] is None
    for entry in index["reports"]:
        assert (folder / entry["json"]).is_file() and (folder / entry["markdown"]).is_file()
    for path in folder.glob("task-*.json"):
        assert json.loads(path.read_text())["error"]["type"] == "ValueError"
    for path in folder.glob("task-*.md"):
        text = path.read_text()
        assert text.startswith("# Task ") and text.endswith("\n")

    # A rerun into the folder: every task succeeds now; nothing is left but the new index.
    keys = [f"job/{x}" for x in range(400)]
    corral.run(
        [corral.Task(fail_if_listed, (k, []), key=k) for k in keys], workers=2, error_dir=folder
    )
    assert [p.name for p in folder.iterdir()] == ["index.json"]
    assert index_of(folder)["reports"] == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
