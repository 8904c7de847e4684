"""Timeouts: a task past its timeout has its worker's whole process group killed (SIGTERM,
then SIGKILL after ``kill_grace``), gets ``TaskTimeout`` (status "timeout"), and its worker
is replaced; the other tasks are unaffected.

Tasks that must time out sleep far longer than any test runs; the tests never sleep to
synchronise, they wait for marker files and for pids to disappear.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _procs import alive, live_workers, wait_until

import corral

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

START_METHODS = ["fork", "forkserver", "spawn"]
BAD = 3
TIMEOUT = 0.5


# -- task functions -----------------------------------------------------------------------------
def square(x):
    return x * x


def hang_on_bad(x):
    if x == BAD:
        time.sleep(1000)
    return x * x


def hang(x):
    time.sleep(1000)


def pid_of(x):
    return os.getpid()


def sleep_then_square(x, seconds):
    time.sleep(seconds)
    return x * x


def note_pid_and_hang(marker_dir):
    """Leave ``worker-<pid>`` in marker_dir, then hang."""
    _touch(Path(marker_dir) / f"worker-{os.getpid()}")
    time.sleep(1000)


def hang_with_grandchild(marker_dir):
    """Start a ``sleep 1000`` subprocess (in this worker's process group), note both pids, hang."""
    child = subprocess.Popen(["sleep", "1000"])
    _touch(Path(marker_dir) / f"grandchild-{child.pid}")
    _touch(Path(marker_dir) / f"worker-{os.getpid()}")
    time.sleep(1000)


def hang_with_stubborn_grandchild(marker_dir):
    """Start a subprocess that ignores SIGTERM (the disposition survives exec), then hang."""
    child = subprocess.Popen(["sh", "-c", "trap '' TERM; exec sleep 1000"])
    _touch(Path(marker_dir) / f"grandchild-{child.pid}")
    time.sleep(1000)


def ignore_sigterm_and_hang(marker_dir):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _touch(Path(marker_dir) / f"worker-{os.getpid()}")
    time.sleep(1000)


def _touch(path):
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch()
    os.rename(tmp, path)


# -- helpers ------------------------------------------------------------------------------------
def wait_gone(pids, what, timeout=10.0):
    wait_until(lambda: not any(alive(p) for p in pids), f"{what} {sorted(pids)} to exit", timeout)


def marked_pids(marker_dir, prefix):
    return {
        int(p.name.split("-")[1]) for p in Path(marker_dir).glob(f"{prefix}-*") if "." not in p.name
    }


def only_bad_failed(results, n, bad=(BAD,)):
    for x in range(n):
        if x in bad:
            assert isinstance(results[x], corral.Failure), (x, results[x])
        else:
            assert results[x] == x * x, (x, results[x])


# -- the outcome ----------------------------------------------------------------------------------
@pytest.mark.parametrize("start_method", START_METHODS)
def test_task_past_its_timeout_gets_timeout_status(start_method):
    results = corral.map(
        hang_on_bad,
        range(8),
        workers=2,
        chunksize=1,
        timeout=TIMEOUT,
        errors="return",
        start_method=start_method,
    )
    failure = results[BAD]
    assert failure.status == "timeout"
    assert isinstance(failure.error, corral.TaskTimeout)
    assert isinstance(failure.error, TimeoutError)
    only_bad_failed(results, 8)


def test_task_timeout_error_names_key_timeout_and_worker_pid():
    report = corral.run(
        [corral.Task(hang_on_bad, (x,), key=f"k{x}") for x in range(6)],
        workers=2,
        timeout=TIMEOUT,
        errors="return",
    )
    outcome = report.outcomes[BAD]
    error = outcome.error
    assert outcome.status == "timeout"
    assert error.key == "k3"
    assert error.timeout == TIMEOUT
    assert error.pid == outcome.pid
    assert error.pid is not None
    assert outcome.attempts == 1


def test_timeout_raises_batch_error_with_errors_raise():
    with pytest.raises(corral.BatchError) as info:
        corral.map(hang_on_bad, range(6), workers=2, chunksize=1, timeout=TIMEOUT)
    assert [o.key for o in info.value.report.failures] == [BAD]
    assert "timeout" in str(info.value)


def test_timeout_does_not_wait_for_the_hung_task_to_finish():
    started = time.monotonic()
    corral.map(hang_on_bad, range(4), workers=2, timeout=TIMEOUT, errors="return")
    assert time.monotonic() - started < 30  # the task would sleep 1000 s


def test_timeout_counts_running_time_not_time_spent_queued():
    # Each worker runs three 0.4 s tasks in a row (1.2 s): none of them may time out at 1 s.
    results = corral.run(
        [corral.Task(sleep_then_square, (x, 0.4)) for x in range(6)],
        workers=2,
        chunksize=1,
        timeout=1.0,
    ).results
    assert results == [x * x for x in range(6)]


def test_per_task_timeout_overrides_the_run_timeout():
    tasks = [
        corral.Task(sleep_then_square, (2, 0.6), key="slow but allowed", timeout=30),
        corral.Task(hang, (0,), key="short leash", timeout=0.3),
        corral.Task(sleep_then_square, (3, 0.0), key="no timeout of its own"),
    ]
    report = corral.run(tasks, workers=2, timeout=0.5, errors="return")
    statuses = {o.key: o.status for o in report.outcomes}
    assert statuses == {
        "slow but allowed": "ok",
        "short leash": "timeout",
        "no timeout of its own": "ok",
    }
    assert report.outcomes[1].error.timeout == 0.3


def test_timeout_in_the_middle_of_an_explicit_chunk_fails_only_that_item():
    results = corral.map(
        hang_on_bad, range(15), workers=2, chunksize=5, timeout=TIMEOUT, errors="return"
    )
    assert results[BAD].status == "timeout"
    only_bad_failed(results, 15)


def test_several_timeouts_in_one_batch():
    results = corral.map(hang, range(4), workers=2, chunksize=1, timeout=0.3, errors="return")
    assert [r.status for r in results] == ["timeout"] * 4


# -- what gets killed -----------------------------------------------------------------------------
def test_timed_out_worker_is_killed_and_replaced(tmp_path):
    with corral.Pool(2, timeout=TIMEOUT) as pool:
        report = pool.run([corral.Task(note_pid_and_hang, (str(tmp_path),))], errors="return")
        assert report.outcomes[0].status == "timeout"
        (hung,) = marked_pids(tmp_path, "worker")
        assert report.outcomes[0].error.pid == hung
        wait_gone({hung}, "the timed-out worker")
        wait_until(lambda: len(live_workers()) == 2, "two live workers again")
        pids = set(pool.map(pid_of, range(20), chunksize=1))
        assert hung not in pids
        assert pids <= live_workers()


def test_pool_keeps_working_after_a_timeout():
    with corral.Pool(2, timeout=TIMEOUT) as pool:
        first = pool.map(hang_on_bad, range(6), chunksize=1, errors="return")
        assert first[BAD].status == "timeout"
        assert pool.map(square, range(40)) == [x * x for x in range(40)]
        assert (
            pool.map(hang_on_bad, range(6), chunksize=1, errors="return")[BAD].status == "timeout"
        )


def test_timeout_kills_a_subprocess_the_task_started(tmp_path):
    with corral.Pool(2, timeout=TIMEOUT) as pool:
        report = pool.run([corral.Task(hang_with_grandchild, (str(tmp_path),))], errors="return")
        assert report.outcomes[0].status == "timeout"
        grandchildren = marked_pids(tmp_path, "grandchild")
        assert len(grandchildren) == 1
        wait_gone(grandchildren, "the subprocess of the timed-out task")
        wait_gone(marked_pids(tmp_path, "worker"), "the timed-out worker")


def test_timeout_of_task_ignoring_sigterm_ends_by_sigkill(tmp_path):
    with corral.Pool(2, timeout=TIMEOUT, kill_grace=0.3) as pool:
        report = pool.run([corral.Task(ignore_sigterm_and_hang, (str(tmp_path),))], errors="return")
        assert report.outcomes[0].status == "timeout"
        (stubborn,) = marked_pids(tmp_path, "worker")
        # The pool is idle now: nothing but the grace period's end may make it escalate.
        wait_gone({stubborn}, "the worker that ignores SIGTERM")
        assert pool.map(square, range(10)) == [x * x for x in range(10)]


def test_timeout_kills_a_subprocess_that_ignores_sigterm(tmp_path):
    with corral.Pool(2, timeout=TIMEOUT, kill_grace=0.3) as pool:
        report = pool.run(
            [corral.Task(hang_with_stubborn_grandchild, (str(tmp_path),))], errors="return"
        )
        assert report.outcomes[0].status == "timeout"
        grandchildren = marked_pids(tmp_path, "grandchild")
        assert len(grandchildren) == 1
        wait_gone(grandchildren, "the SIGTERM-ignoring subprocess of the timed-out task")


def test_sigterm_ignoring_task_does_not_delay_the_other_tasks(tmp_path):
    # kill_grace is long: the batch must not wait for the stubborn worker to die.
    tasks = [corral.Task(ignore_sigterm_and_hang, (str(tmp_path),), timeout=TIMEOUT)]
    tasks += [corral.Task(sleep_then_square, (x, 0.0)) for x in range(1, 20)]
    with corral.Pool(2, kill_grace=3.0) as pool:
        started = time.monotonic()
        report = pool.run(tasks, chunksize=1, errors="return")
        elapsed = time.monotonic() - started
        assert report.outcomes[0].status == "timeout"
        assert [o.value for o in report.outcomes[1:]] == [x * x for x in range(1, 20)]
        assert elapsed < 2.5, elapsed
        (stubborn,) = marked_pids(tmp_path, "worker")
    assert not alive(stubborn)  # closing the pool waits out the grace period and kills it


# -- one task: in one worker process -------------------------------------------------------------
def test_timeout_with_a_single_task_runs_in_a_worker_and_times_out():
    report = corral.run([corral.Task(hang, (0,), timeout=TIMEOUT)], errors="return")
    assert report.outcomes[0].status == "timeout"
    assert isinstance(report.outcomes[0].error, corral.TaskTimeout)
    assert report.outcomes[0].pid not in (None, os.getpid())
