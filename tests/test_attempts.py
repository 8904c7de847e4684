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

import multiprocessing
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


def faulty_between(x: int, marker_dir: str, bomb: int) -> int:
    """Task ``bomb``, on its first run, makes the worker die right after it returns: in
    corral's own code between two items of the Call (the next ``time.time()`` the item loop
    calls exits), as a kill from outside may land there."""
    value = faulty(x, marker_dir, {})
    if x == bomb and runs(Path(marker_dir), x) == 1:

        def exit_now() -> float:
            os._exit(9)

        time.time = exit_now
    return value


def test_a_death_between_two_tasks_of_a_chunk_counts_those_that_ran(tmp_path: Path) -> None:
    # Calls of 4; the worker dies after task 1 returned, before task 2 began. Tasks 0-1 ran
    # (results lost: attempts on record, free, so retries=0 is enough), 2-3 never started.
    report = corral.run(
        [corral.Task(faulty_between, (x, str(tmp_path), 1)) for x in range(4)],
        workers=2, chunksize=4, retries=0, errors="return",
    )  # fmt: skip
    assert report.results == [x * x for x in range(4)]
    assert [runs(tmp_path, x) for x in range(4)] == [2, 2, 1, 1]
    assert_attempts_are_runs(report, tmp_path)
    for x in (0, 1):
        lost = report.outcomes[x].history[0]
        assert lost.status == Status.CRASHED and lost.exitcode == 9
        assert "between two tasks" in (lost.error or ""), lost.error


@pytest.mark.parametrize("timeouts", [None, [None, None, None]])
def test_the_stamp_counts_the_items_begun(timeouts: list[float | None] | None) -> None:
    # The fast loop (no timeouts) and the item-by-item one both leave, after the Call, the
    # count of items begun, which a death in no item (index -1) reports (Died.begun).
    from corral._messages import BETWEEN, STAMP_SIZE, Call
    from corral._worker.execute import execute
    from corral._worker.loop import Stamp

    shared = multiprocessing.RawArray("d", STAMP_SIZE)
    stamp = Stamp(shared)
    call = Call(7, {}, 0, [1, 2, 3], False, [], timeouts)
    result = execute(call, lambda fn_id: abs, stamp)
    assert result.values == [1, 2, 3]
    assert (shared[0], shared[2], shared[3]) == (BETWEEN, 7, 3)
    stamp.start(8)  # the next Call: nothing begun yet
    assert (shared[0], shared[2], shared[3]) == (BETWEEN, 8, 0)


def test_positions_record_lost_runs_as_free_attempts() -> None:
    # The state machine's side (pure): requeue_lost records the attempts and leaves them out
    # of what retries are charged; validate checks the free count against the records.
    from corral._outcome import Attempt
    from corral._positions import WAITING, InvalidState, Positions

    positions = Positions(3)
    positions.strict = True
    chunk = positions.take(3)
    lost = [Attempt(0, 1, None, None, Status.CRASHED, "the result was lost: ...")] * 2
    positions.requeue_lost(chunk[:2], lost)
    positions.requeue(chunk[2:])
    assert [positions.state[p] for p in range(3)] == [WAITING] * 3
    positions.validate([])
    assert [positions.attempts(p) for p in range(3)] == [2, 2, 1]
    assert [positions.charged(p) for p in range(3)] == [1, 1, 1]  # nothing charged yet
    assert positions.history(0) == (lost[0],)
    again = positions.take(3)
    failed = Attempt(0, 2, 1.0, 2.0, Status.FAILED, "ValueError: boom")
    positions.back_off(again[0], failed)
    assert (positions.attempts(0), positions.charged(0)) == (3, 2)
    positions.free[1] = 2  # more free attempts than recorded ones: a bug
    with pytest.raises(InvalidState, match="free attempts"):
        positions.validate([again[1:]])
