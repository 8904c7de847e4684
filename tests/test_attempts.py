"""``Outcome.attempts`` and ``Outcome.history`` against what really ran.

Every run of a task here appends one line to its own marker file (outside corral), so the test
knows how many times each task really started. corral must agree, task by task, in the paths
where a Call of several tasks (a chunk) ends without its Result: a task crashes the worker, a
task times out, a worker holding a prefetched Call is killed from outside. The tasks of the
Call that had finished before (their results died with the worker) ran: their run is an
attempt, recorded in the history, but not charged to ``retries`` (``docs/failures.md``,
"Attempts"); the tasks that never started are not attempts at all.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from _procs import wait_until

import corral
from corral import Status

pytestmark = pytest.mark.timeout(120)


def runs(marker_dir: Path, x: int) -> int:
    path = marker_dir / f"runs-{x}"
    return len(path.read_text().splitlines()) if path.exists() else 0


def faulty(x: int, marker_dir: str, faults: dict[int, str]) -> int:
    """Record this run; on a task's first run only, do its fault."""
    path = Path(marker_dir) / f"runs-{x}"
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    first = len(path.read_text().splitlines()) == 1
    fault = faults.get(x) if first else None
    if fault == "exception":
        raise RuntimeError(f"injected into {x}")
    if fault == "exit":
        os._exit(7)
    if fault == "hang":
        time.sleep(120)
    if fault == "wait":  # until the test kills this worker from outside
        (Path(marker_dir) / f"waiting-{os.getpid()}").touch()
        time.sleep(120)
    return x * x


def tasks(n: int, marker_dir: Path, faults: dict[int, str]) -> list[corral.Task]:
    return [corral.Task(faulty, (x, str(marker_dir), faults)) for x in range(n)]


def assert_attempts_are_runs(report: corral.Report, marker_dir: Path) -> None:
    for x, outcome in enumerate(report.outcomes):
        assert outcome.attempts == runs(marker_dir, x), (x, outcome.attempts, outcome.history)
        assert len(outcome.history) == outcome.attempts, (x, outcome.history)


def test_a_crash_in_a_chunk_counts_the_runs_whose_results_it_lost(tmp_path: Path) -> None:
    # One Call of 6: task 1 raises (its failure is in the Result that never comes back),
    # task 3 kills the worker; 0-2 ran, 4-5 never started.
    faults = {1: "exception", 3: "exit"}
    report = corral.run(
        tasks(6, tmp_path, faults), workers=2, chunksize=6, retries=1, backoff=0.0,
        errors="return",
    )  # fmt: skip
    assert report.results == [x * x for x in range(6)]
    assert [runs(tmp_path, x) for x in range(6)] == [2, 2, 2, 2, 1, 1]
    assert_attempts_are_runs(report, tmp_path)
    outcomes = report.outcomes
    for x in (0, 1, 2):  # lost with the worker: recorded, crashed, not the task's fault
        lost = outcomes[x].history[0]
        assert lost.status == Status.CRASHED and lost.pid == outcomes[3].history[0].pid
        assert "result was lost" in (lost.error or ""), lost.error
        assert lost.exitcode == 7
    crashed = outcomes[3].history[0]
    assert crashed.status == Status.CRASHED and crashed.exitcode == 7
    assert "result was lost" not in (crashed.error or "")


def test_runs_lost_with_a_worker_are_not_charged_to_retries(tmp_path: Path) -> None:
    # retries=0: the crash fails task 3; the tasks that ran before it in its Call run again
    # (free) and succeed, with their two attempts on record.
    report = corral.run(
        tasks(5, tmp_path, {3: "exit"}), workers=2, chunksize=5, retries=0, errors="return"
    )
    assert [o.status for o in report.outcomes] == ["ok", "ok", "ok", "crashed", "ok"]
    assert [o.attempts for o in report.outcomes] == [2, 2, 2, 1, 1]
    assert_attempts_are_runs(report, tmp_path)


def test_a_timeout_in_a_chunk_counts_the_runs_whose_results_it_lost(tmp_path: Path) -> None:
    report = corral.run(
        tasks(4, tmp_path, {2: "hang"}), workers=2, chunksize=4, timeout=1.0, retries=1,
        backoff=0.0, kill_grace=0.2, errors="return",
    )  # fmt: skip
    assert report.results == [x * x for x in range(4)]
    assert [runs(tmp_path, x) for x in range(4)] == [2, 2, 2, 1]
    assert_attempts_are_runs(report, tmp_path)
    outcomes = report.outcomes
    for x in (0, 1):  # the worker was stopped by corral: their runs were cut, not crashed
        lost = outcomes[x].history[0]
        assert lost.status == Status.CANCELLED, lost
        assert "result was lost" in (lost.error or "") and "timed out" in (lost.error or "")
    assert outcomes[2].history[0].status == Status.TIMEOUT


def test_a_worker_killed_holding_a_prefetched_call(tmp_path: Path) -> None:
    # One worker, Calls of 2, no timeout. Once the first Call (0, 1) has answered, the batch
    # knows its tasks are short, so the worker is sent (2, 3) and, queued behind it in its
    # pipe, (4, 5). Task 3 waits; a SIGKILL from outside: task 2 ran (its result is lost),
    # task 3 was running (its attempt failed: charged), 4-5 never started.
    started: list[corral.CallStarted] = []
    reports: list[corral.Report] = []
    with corral.Pool(workers=1, kill_grace=0.2) as pool:
        pool._events.subscribe_calls(started.append)
        batch = tasks(6, tmp_path, {3: "wait"})
        thread = threading.Thread(
            target=lambda: reports.append(pool.run(batch, chunksize=2, retries=1, backoff=0.0))
        )
        thread.start()
        try:
            wait_until(lambda: list(tmp_path.glob("waiting-*")), "task 3 waiting")
            wait_until(lambda: len(started) >= 3, "the third Call sent (prefetched)")
            (marker,) = tmp_path.glob("waiting-*")
            os.kill(int(marker.name.split("-")[1]), signal.SIGKILL)
        finally:
            thread.join(60)
    (report,) = reports
    assert report.results == [x * x for x in range(6)]
    assert [list(call.positions) for call in started[:3]] == [[0, 1], [2, 3], [4, 5]]
    assert [runs(tmp_path, x) for x in range(6)] == [1, 1, 2, 2, 1, 1]
    assert_attempts_are_runs(report, tmp_path)
    lost, killed = report.outcomes[2].history[0], report.outcomes[3].history[0]
    assert (lost.status, killed.status) == (Status.CRASHED, Status.CRASHED)
    assert lost.signal == killed.signal == signal.SIGKILL
