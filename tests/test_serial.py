"""The serial backend: backend="serial" or CORRAL_WORKERS=1 (a single task, or workers=1, runs
in a worker process: see test_single_task.py).

Tasks run in the calling process, with the same results, ordering, error semantics, timeouts
and retries as on worker processes.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
import traceback
from pathlib import Path

import pytest
from _tasks import WAIT, wait_for_file, write_then_fail_odd

import corral

SERIAL_WAYS = ["backend=serial", "CORRAL_WORKERS=1"]


@pytest.fixture(params=SERIAL_WAYS)
def serial(request, monkeypatch):
    """Options that make a batch run serially (one way per parametrisation)."""
    if request.param == "backend=serial":
        return {"workers": 2, "backend": "serial"}
    monkeypatch.setenv("CORRAL_WORKERS", "1")
    return {}


# -- task functions ----------------------------------------------------------------------------
def getpid(_=None):
    return os.getpid()


def square(x):
    return x * x


class BadItem(ValueError):
    pass


def fail_on_2_and_5(x):
    if x in (2, 5):
        raise BadItem(f"bad {x}")
    return x * 10


def hang_until_file(arg):
    """Waits (bounded) for a file nobody writes: only a timeout ends it early."""
    directory, x = arg
    if x == "hang":
        wait_for_file(os.path.join(directory, "never"))
        return "not interrupted"
    return x


def fail_first_attempts(arg):
    """Fails until it has been called ``failures + 1`` times (counted in files)."""
    directory, failures = arg
    attempt = len(list(Path(directory).iterdir())) + 1
    Path(directory, f"attempt-{attempt}").write_text("")
    if attempt <= failures:
        raise ConnectionError(f"attempt {attempt}")
    return attempt


# -- where tasks run ----------------------------------------------------------------------------
def test_serial_ways_run_every_task_in_the_calling_process(serial):
    assert corral.map(getpid, range(6), **serial) == [os.getpid()] * 6


def test_two_workers_run_in_other_processes():
    assert os.getpid() not in corral.map(getpid, range(6), workers=2)


def test_serial_imap_runs_in_the_calling_process(serial):
    assert list(corral.imap(getpid, range(4), **serial)) == [os.getpid()] * 4


def test_serial_pool_submit_runs_in_the_calling_process(serial):
    with corral.Pool(**serial) as pool:
        assert pool.submit(getpid).result(timeout=WAIT) == os.getpid()


def test_serial_outcome_pid_is_the_calling_process(serial):
    (outcome,) = corral.run([corral.Task(square, (3,))], **serial).outcomes
    assert outcome.status == "ok"
    assert outcome.value == 9
    assert outcome.pid == os.getpid()
    assert outcome.attempts == 1


def test_serial_ok_outcome_worker_is_minus_one(serial):
    # Outcome.worker is documented as -1 for a task run in-process.
    (outcome,) = corral.run([corral.Task(square, (3,))], **serial).outcomes
    assert outcome.worker == -1


def test_serial_failed_outcome_worker_is_minus_one(serial):
    report = corral.run([corral.Task(fail_on_2_and_5, (2,))], errors="return", **serial)
    assert report.outcomes[0].worker == -1


def test_serial_passes_objects_without_pickling():
    lock = __import__("threading").Lock()
    assert corral.map(lambda x: x is lock, [lock, lock], backend="serial") == [True, True]


# -- same results as the process backend ----------------------------------------------------
def test_serial_results_equal_process_results(serial):
    items = list(range(100))
    assert corral.map(square, items, **serial) == corral.map(square, items, workers=2)


@pytest.mark.parametrize("chunksize", ["auto", 1, 7])
def test_serial_map_keeps_input_order(chunksize):
    assert corral.map(square, range(50), backend="serial", chunksize=chunksize) == [
        x * x for x in range(50)
    ]


def test_serial_map_of_empty_list(serial):
    assert corral.map(square, [], **serial) == []


def test_serial_batch_error_message_equals_process_batch_error_message(serial):
    with pytest.raises(corral.BatchError) as in_process:
        corral.map(fail_on_2_and_5, range(8), **serial)
    with pytest.raises(corral.BatchError) as on_workers:
        corral.map(fail_on_2_and_5, range(8), workers=2)
    assert str(in_process.value) == str(on_workers.value)


def test_serial_batch_error_runs_every_task_first(serial, tmp_path):
    items = [(str(tmp_path), x) for x in range(5)]
    with pytest.raises(corral.BatchError) as info:
        corral.map(write_then_fail_odd, items, **serial)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ran-{x}" for x in range(5)]
    assert [o.key for o in info.value.report.failures] == [1, 3]


def test_serial_failures_equal_process_failures(serial):
    here = corral.map(fail_on_2_and_5, range(8), errors="return", **serial)
    there = corral.map(fail_on_2_and_5, range(8), errors="return", workers=2)

    def shape(results):
        return [
            (r.key, r.status, type(r.error), r.error.args, r.reason)
            if isinstance(r, corral.Failure)
            else r
            for r in results
        ]

    assert shape(here) == shape(there)


def test_serial_report_equals_process_report(serial):
    tasks = [corral.Task(fail_on_2_and_5, (x,), key=f"k{x}") for x in range(6)]
    here = corral.run(tasks, errors="return", **serial)
    there = corral.run(tasks, errors="return", workers=2)

    def shape(report):
        return [(o.key, o.status, o.value, type(o.error), o.attempts) for o in report.outcomes]

    assert shape(here) == shape(there)


def test_serial_exception_keeps_its_type():
    results = corral.map(fail_on_2_and_5, [2, 3], backend="serial", errors="return")
    assert type(results[0].error) is BadItem
    assert results[0].error.args == ("bad 2",)


def test_serial_exception_traceback_names_the_task_function():
    results = corral.map(fail_on_2_and_5, [2, 3], backend="serial", errors="return")
    text = "".join(traceback.format_exception(results[0].error))
    assert "fail_on_2_and_5" in text


def test_serial_outcome_traceback_names_the_task_function():
    report = corral.run([corral.Task(fail_on_2_and_5, (2,))], backend="serial", errors="return")
    assert "fail_on_2_and_5" in report.outcomes[0].traceback


def test_serial_imap_raises_the_tasks_own_exception_when_reached():
    got = []
    with pytest.raises(BadItem, match="bad 2"):
        for value in corral.imap(fail_on_2_and_5, range(8), backend="serial"):
            got.append(value)
    assert got == [0, 10]


def test_serial_imap_errors_return_yields_failure_in_place():
    got = list(corral.imap(fail_on_2_and_5, range(4), backend="serial", errors="return"))
    assert got[:2] == [0, 10] and got[3] == 30
    assert isinstance(got[2], corral.Failure) and got[2].key == 2


def test_serial_imap_consumes_an_endless_generator_lazily():
    pulled = []
    stop = []

    def endless_until_stopped():
        for i in itertools.count():
            if stop:
                return
            pulled.append(i)
            yield i

    received = []
    for value in corral.imap(square, endless_until_stopped(), backend="serial"):
        received.append(value)
        if len(received) == 3:
            pulled_after_three = len(pulled)
            stop.append(True)
    assert pulled_after_three < 10_000
    assert received == [x * x for x in range(len(pulled))]


@pytest.mark.timeout(30)
def test_serial_imap_break_stops_early():
    pulled = []

    def source():
        for i in itertools.count():
            pulled.append(i)
            yield i

    for i, _ in enumerate(corral.imap(square, source(), backend="serial")):
        if i == 2:
            break
    assert len(pulled) < 10_000


def test_serial_pool_submit_failure_sets_the_exception():
    with corral.Pool(backend="serial") as pool:
        assert isinstance(pool.submit(fail_on_2_and_5, 2).exception(timeout=WAIT), BadItem)


@pytest.mark.timeout(30)
def test_serial_pool_maps_the_same_function_twice():
    with corral.Pool(backend="serial") as pool:
        assert pool.map(square, [1]) == [1]
        assert pool.map(square, range(50)) == [x * x for x in range(50)]


@pytest.mark.timeout(30)
def test_serial_pool_maps_many_times():
    with corral.Pool(backend="serial") as pool:
        for n in (0, 1, 5, 50, 200):
            assert pool.map(square, range(n)) == [x * x for x in range(n)]


# -- timeouts -----------------------------------------------------------------------------------
def test_serial_timeout_interrupts_the_task(serial, tmp_path):
    began = time.monotonic()
    results = corral.map(
        hang_until_file, [(str(tmp_path), "hang")], timeout=0.3, errors="return", **serial
    )
    assert time.monotonic() - began < WAIT / 2
    failure = results[0]
    assert isinstance(failure, corral.Failure)
    assert failure.status == "timeout"
    assert isinstance(failure.error, corral.TaskTimeout)


def test_serial_timeout_outcome_names_the_key(tmp_path):
    tasks = [corral.Task(hang_until_file, ((str(tmp_path), "hang"),), key="slow", timeout=0.3)]
    report = corral.run(tasks, backend="serial", errors="return")
    (outcome,) = report.outcomes
    assert outcome.status is corral.Status.TIMEOUT
    assert isinstance(outcome.error, corral.TaskTimeout)
    assert isinstance(outcome.error, TimeoutError)
    assert outcome.error.key == "slow"


def test_serial_timeout_raises_batch_error_naming_the_timeout(tmp_path):
    with pytest.raises(corral.BatchError) as info:
        corral.map(hang_until_file, [(str(tmp_path), "hang"), (str(tmp_path), 1)], backend="serial",
                   timeout=0.3)  # fmt: skip
    assert "0 (" in str(info.value) and "): timeout: TaskTimeout" in str(info.value)


def test_serial_timeout_leaves_other_tasks_alone(tmp_path):
    items = [(str(tmp_path), 0), (str(tmp_path), "hang"), (str(tmp_path), 2)]
    results = corral.map(hang_until_file, items, backend="serial", timeout=0.3, errors="return")
    assert results[0] == 0
    assert results[1].status == "timeout"
    assert results[2] == 2


def test_serial_timeout_restores_the_alarm_handler(tmp_path):
    before = signal.getsignal(signal.SIGALRM)
    corral.map(
        hang_until_file, [(str(tmp_path), "hang")], backend="serial", timeout=0.2, errors="return"
    )
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_serial_timeout_does_not_fire_after_the_task_finished():
    assert corral.map(square, range(5), backend="serial", timeout=0.2) == [0, 1, 4, 9, 16]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


# -- retries ------------------------------------------------------------------------------------
def test_serial_retries_until_success(serial, tmp_path):
    report = corral.run(
        [corral.Task(fail_first_attempts, ((str(tmp_path), 2),))], retries=2, backoff=0, **serial
    )
    (outcome,) = report.outcomes
    assert outcome.status == "ok"
    assert outcome.value == 3
    assert outcome.attempts == 3
    assert outcome.pid == os.getpid()


def test_serial_retries_exhausted_is_a_failure(tmp_path):
    report = corral.run(
        [corral.Task(fail_first_attempts, ((str(tmp_path), 5),))],
        backend="serial", retries=1, backoff=0, errors="return",
    )  # fmt: skip
    (outcome,) = report.outcomes
    assert outcome.status == "failed"
    assert isinstance(outcome.error, ConnectionError)
    assert outcome.attempts == 2
    assert len(list(tmp_path.iterdir())) == 2


def test_serial_task_retries_override_run_retries(tmp_path):
    task = corral.Task(fail_first_attempts, ((str(tmp_path), 1),), retries=1)
    report = corral.run([task], backend="serial", retries=0, backoff=0)
    assert report.results == [2]


def test_serial_retries_with_backoff(tmp_path):
    results = corral.map(fail_first_attempts, [(str(tmp_path), 1)], backend="serial", retries=1,
                         backoff=0.01)  # fmt: skip
    assert results == [2]
