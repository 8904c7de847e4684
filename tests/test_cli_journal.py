"""``corral status``, ``corral report`` and ``corral retry`` against real journals, and
``corral run --journal`` resuming after the CLI process was SIGKILLed. The real console
script in subprocesses (``python -m corral``), real workers; marker files per task and run
say what ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import corral_cli, kill_script, wait_until

import corral
from corral._cli import main

JOBS = """
import os
import time
from pathlib import Path

HERE = Path(__file__).parent


def work(name):
    markers = HERE / "markers"
    runs = len(list(markers.glob(f"ran-{name}-*")))
    (markers / f"ran-{name}-{runs}").write_text("")
    (markers / f"worker-{os.getpid()}").write_text("")
    if name.startswith("slow"):  # waits for the test's release file (bounded)
        deadline = time.monotonic() + 60
        while not (HERE / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    if (HERE / f"fail-{name}").exists():
        raise ValueError(f"{name} is marked to fail")
    return name.upper()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "jobs.py").write_text(JOBS)
    (tmp_path / "markers").mkdir()
    return tmp_path


def runs_of(project: Path, name: str) -> int:
    return len(list((project / "markers").glob(f"ran-{name}-*")))


def start_cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """The console script, started (not waited for), in a session of its own."""
    src = str(Path(__file__).resolve().parent.parent / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env["CORRAL_CHUNKSIZE"] = "1"  # one task per Call: each journaled on its own
    return subprocess.Popen(
        [sys.executable, "-m", "corral", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


def ok_count(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        return corral.open_journal(journal).counts.get("ok", 0)
    except corral.JournalError:  # not created yet
        return 0


# -- status and report, in process, on a journal of a real run --------------------------------


def _picky(x: int) -> int:
    if x == 2:
        raise ValueError("two is bad")
    return x


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "run.corral"
    tasks = [corral.Task(_picky, (x,), key=f"case-{x}") for x in (1, 2, 3)]
    corral.run(tasks, errors="return", backend="serial", journal=path)  # (fast: real workers below)
    return path


def test_status_counts_and_failed_keys(journal: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(journal)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{journal}: 3 tasks: 1 failed, 2 ok"
    assert "case-2  failed  ValueError: two is bad" in out
    assert "unfinished" not in out


def test_report_writes_results_html_trace_and_error_reports(
    journal: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out, html, trace, errors = (tmp_path / n for n in ("r.jsonl", "r.html", "t.json", "errs"))
    args = ["report", str(journal), "--out", str(out), "--html", str(html), "--trace", str(trace)]
    assert main([*args, "--errors", str(errors)]) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["key"], r["status"]) for r in rows] == [
        ("case-1", "ok"), ("case-2", "failed"), ("case-3", "ok"),
    ]  # fmt: skip
    assert "two is bad" in capsys.readouterr().err
    assert "<html" in html.read_text().lower() and "case-2" in html.read_text()
    events = json.loads(trace.read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    assert any("case-1" in json.dumps(e) for e in events)
    index = json.loads((errors / "index.json").read_text())
    assert [e["key"] for e in index["reports"]] == ["'case-2'"]
    report = json.loads((errors / index["reports"][0]["json"]).read_text())
    assert report["error"]["type"] == "ValueError" and "two is bad" in report["error"]["line"]


def test_a_missing_journal_and_one_without_a_command_are_usage_errors(
    journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", str(tmp_path / "nope.corral")]) == 2
    assert "no such journal" in capsys.readouterr().err
    assert main(["retry", str(journal)]) == 2  # written through the API: nothing recorded
    assert "no corral command is recorded" in capsys.readouterr().err


# -- the console script: status while a run writes, retry, resume after SIGKILL -------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_status_while_a_run_writes_the_journal(project: Path) -> None:
    names = [f"q{i}" for i in range(4)] + ["slow0", "slow1"]
    proc = start_cli("run", "jobs:work", *names, "--journal", "j.corral", "--workers", "2",
                     cwd=project)  # fmt: skip
    journal = project / "j.corral"
    try:
        wait_until(
            lambda: ok_count(journal) >= 4 and corral.open_journal(journal).unfinished,
            "the quick tasks journaled and a slow one started", timeout=90, proc=proc,
        )  # fmt: skip
        status = corral_cli("status", "j.corral", cwd=project)
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].startswith("j.corral: ") and "4 ok" in lines[0], status.stdout
        assert "running or stopped" in status.stdout  # the run has not ended
        unfinished = lines[lines.index("unfinished (running now, or stopped with their run):") :]
        assert {line.strip() for line in unfinished[1:]} <= {"slow0", "slow1"}
        (project / "release").write_text("")
        assert proc.wait(timeout=90) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        kill_script(proc, project / "markers")
    status = corral_cli("status", "j.corral", cwd=project)
    assert status.returncode == 0 and "6 ok" in status.stdout.splitlines()[0]
    assert "unfinished" not in status.stdout


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_retry_runs_the_failed_tasks_again_with_the_recorded_settings(project: Path) -> None:
    names = [f"t{i}" for i in range(6)]
    for name in ("t2", "t4"):
        (project / f"fail-{name}").write_text("")
    first = corral_cli("run", "jobs:work", *names, "--journal", "j.corral", "--workers", "2",
                       "--retries", "0", cwd=project)  # fmt: skip
    assert first.returncode == 1, first.stderr
    for name in ("t2", "t4"):
        (project / f"fail-{name}").unlink()
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    out = project / "retried.jsonl"
    again = corral_cli("retry", str(project / "j.corral"), "--out", str(out), cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    assert "2 failed and 0 unfinished" in again.stderr
    assert [runs_of(project, n) for n in names] == [1, 1, 2, 1, 2, 1]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["key"], r["status"]) for r in rows] == [
        (n, "ok" if n in ("t2", "t4") else "cached") for n in names
    ]
    status = corral_cli("status", "j.corral", cwd=project)
    assert status.returncode == 0 and "6 ok" in status.stdout.splitlines()[0]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_run_resumes_after_the_cli_process_is_sigkilled(project: Path) -> None:
    names = [f"t{i:02}" for i in range(12)] + [f"slow{i}" for i in range(6)]
    args = ("run", "jobs:work", *names, "--journal", "j.corral", "--workers", "2")
    journal = project / "j.corral"
    proc = start_cli(*args, cwd=project)
    try:
        wait_until(lambda: ok_count(journal) >= 6, "6 tasks journaled", timeout=90, proc=proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        done = {o.key for o in corral.open_journal(journal).outcomes if o.ok}
        assert len(done) >= 6
        (project / "release").write_text("")  # the orphaned workers' slow tasks may end
        again = start_cli(*args, cwd=project)
        _, stderr = again.communicate(timeout=150)
        assert again.returncode == 0, stderr
    finally:
        kill_script(proc, project / "markers")
    for name in names:
        assert runs_of(project, name) >= 1, name
        if name in done:  # journaled before the kill: never run again
            assert runs_of(project, name) == 1, name
    final = corral.open_journal(journal)
    assert final.counts.get("ok") == len(names) and not final.failures
    assert {o.key for o in final.outcomes} == set(names)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_exec_resumes_from_its_journal_and_retry_reruns_only_the_failed_program(
    tmp_path: Path,
) -> None:
    template = "echo {} >> runs.log; test ! -e fail-{}"
    (tmp_path / "fail-b").write_text("")
    args = ("exec", template, "a", "b", "c", "--journal", "x.corral", "--workers", "2")
    assert corral_cli(*args, cwd=tmp_path).returncode == 1
    (tmp_path / "fail-b").unlink()
    again = corral_cli("retry", "x.corral", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted((tmp_path / "runs.log").read_text().split()) == ["a", "b", "b", "c"]
    assert corral_cli(*args, cwd=tmp_path).returncode == 0  # all cached: nothing runs
    assert sorted((tmp_path / "runs.log").read_text().split()) == ["a", "b", "b", "c"]
