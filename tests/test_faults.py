"""Faults inside tasks: exceptions, worker deaths (exit, signals, segfault), data that does not
pickle. Each fails only its own task; every other result is right and the batch goes on.

Everything here uses real worker processes and real signals. A crashing task is never run
alone with ``workers=1`` (that would run it in the test process).
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

import pytest
from _procs import alive, live_workers, wait_until

import corral
from corral._errors import RemoteTraceback

pytestmark = pytest.mark.timeout(60)  # a batch that never finishes fails here, not after 300 s

START_METHODS = ["fork", "forkserver", "spawn"]
BAD = 3


# -- task functions (module level: they travel to the workers by reference) ------------------
def square(x):
    return x * x


def raise_on_bad(x):
    if x == BAD:
        raise ValueError(f"bad item {x}")
    return x * x


def exit_on_bad(x):
    if x == BAD:
        os._exit(3)
    return x * x


def sigkill_on_bad(x):
    if x == BAD:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def segfault_on_bad(x):
    if x == BAD:
        ctypes.string_at(0)
    return x * x


def always_exit(x):
    os._exit(3)


def crash_every_fifth(x):
    if x % 5 == 2:
        os._exit(7)
    return x * x


def hang_on_bad(x):
    if x == BAD:
        time.sleep(1000)
    return x * x


def double(x):
    return x * 2


def lock_on_bad(x):
    if x == BAD:
        return threading.Lock()
    return x * 2


class LockedError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def return_strict_on_bad(x):
    if x == BAD:
        return StrictError(x, "as a value")  # pickles in the worker, fails to unpickle here
    return x * x


def raise_locked(x):
    if x == BAD:
        raise LockedError(f"locked {x}")
    return x * x


class PairError(Exception):
    """Custom __init__ with two arguments, all passed on to Exception: pickles fine."""

    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


def raise_pair(x):
    if x == BAD:
        raise PairError(x, "detail text")
    return x * x


class StrictError(Exception):
    """Custom __init__ whose args do not match what it passes to Exception: pickles, but
    cannot be unpickled (``StrictError("3: why")`` misses an argument)."""

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code


def raise_strict(x):
    if x == BAD:
        raise StrictError(x, "why")
    return x * x


def failing_initializer():
    raise RuntimeError("initializer says no")


def exiting_initializer():
    os._exit(5)


CRASHERS = {
    "exception": raise_on_bad,
    "os_exit": exit_on_bad,
    "sigkill": sigkill_on_bad,
    "segfault": segfault_on_bad,
}
EXPECTED_STATUS = {
    "exception": "failed",
    "os_exit": "crashed",
    "sigkill": "crashed",
    "segfault": "crashed",
}


# -- helpers ------------------------------------------------------------------------------------
def run_each(fn, n, chunksize=1, **options):
    """``fn(x)`` for x in range(n) as Tasks on two workers; the Report, failures returned."""
    tasks = [corral.Task(fn, (x,)) for x in range(n)]
    return corral.run(tasks, workers=2, chunksize=chunksize, errors="return", **options)


def only_bad_failed(results, n, bad=(BAD,)):
    for x in range(n):
        if x in bad:
            assert isinstance(results[x], corral.Failure), (x, results[x])
        else:
            assert results[x] == x * x, (x, results[x])


# -- exceptions ---------------------------------------------------------------------------------
def test_exception_keeps_its_type_and_other_results_are_right():
    with pytest.raises(corral.BatchError) as info:
        corral.map(raise_on_bad, range(10), workers=2, chunksize=1)
    report = info.value.report
    assert len(report.outcomes) == 10
    failed = report.outcomes[BAD]
    assert failed.status == "failed"
    assert type(failed.error) is ValueError
    assert failed.error.args == (f"bad item {BAD}",)
    for x, outcome in enumerate(report.outcomes):
        if x != BAD:
            assert outcome.status == "ok"
            assert outcome.value == x * x


def test_exception_carries_worker_traceback_as_cause():
    report = run_each(raise_on_bad, 6)
    outcome = report.outcomes[BAD]
    cause = outcome.error.__cause__
    assert isinstance(cause, RemoteTraceback)
    text = str(cause)
    assert "raise_on_bad" in text
    assert "ValueError: bad item 3" in text
    assert "raise_on_bad" in outcome.traceback
    assert "ValueError: bad item 3" in outcome.traceback


def test_errors_return_puts_a_failure_in_place_of_the_failed_item():
    results = corral.map(raise_on_bad, range(8), workers=2, chunksize=1, errors="return")
    assert len(results) == 8
    failure = results[BAD]
    assert isinstance(failure, corral.Failure)
    assert not failure
    assert failure.key == BAD
    assert failure.status == "failed"
    assert isinstance(failure.error, ValueError)
    assert "ValueError: bad item 3" in failure.reason
    only_bad_failed(results, 8)


def test_batch_error_message_names_failed_keys_and_reasons():
    tasks = [corral.Task(raise_on_bad, (x,), key=f"item-{x}") for x in range(6)]
    with pytest.raises(corral.BatchError) as info:
        corral.run(tasks, workers=2, chunksize=1)
    message = str(info.value)
    assert "1 of 6 tasks failed" in message
    assert "'item-3'" in message
    assert "ValueError: bad item 3" in message
    assert "item-2" not in message


@pytest.mark.parametrize("start_method", START_METHODS)
def test_exception_in_task_with_each_start_method(start_method):
    results = corral.map(
        raise_on_bad, range(8), workers=2, chunksize=1, errors="return", start_method=start_method
    )
    assert isinstance(results[BAD].error, ValueError)
    only_bad_failed(results, 8)


def test_every_task_of_a_batch_runs_even_when_an_early_one_fails():
    report = run_each(raise_on_bad, 30)
    assert [o.status for o in report.outcomes].count("ok") == 29
    assert report.failures == [report.outcomes[BAD]]


# -- worker deaths ------------------------------------------------------------------------------
@pytest.mark.parametrize("start_method", START_METHODS)
def test_os_exit_in_task_is_crashed_with_its_exit_code(start_method):
    report = run_each(exit_on_bad, 8, start_method=start_method)
    outcome = report.outcomes[BAD]
    assert outcome.status == "crashed"
    assert isinstance(outcome.error, corral.WorkerCrashed)
    assert outcome.error.exitcode == 3
    assert outcome.error.signal is None
    assert outcome.error.key == BAD
    only_bad_failed(report.results, 8)


def test_sigkill_of_worker_is_crashed_with_signal_name():
    report = run_each(sigkill_on_bad, 8)
    error = report.outcomes[BAD].error
    assert report.outcomes[BAD].status == "crashed"
    assert isinstance(error, corral.WorkerCrashed)
    assert error.signal == "SIGKILL"
    assert error.exitcode == -signal.SIGKILL
    assert "SIGKILL" in str(error)
    only_bad_failed(report.results, 8)


def test_segfault_in_task_is_crashed_with_sigsegv():
    report = run_each(segfault_on_bad, 8)
    error = report.outcomes[BAD].error
    assert report.outcomes[BAD].status == "crashed"
    assert isinstance(error, corral.WorkerCrashed)
    assert error.signal == "SIGSEGV"
    assert error.exitcode == -signal.SIGSEGV
    only_bad_failed(report.results, 8)


def test_crash_error_names_the_dead_worker_pid():
    report = run_each(exit_on_bad, 6)
    outcome = report.outcomes[BAD]
    assert outcome.error.pid is not None
    assert outcome.pid == outcome.error.pid
    assert outcome.attempts == 1
    assert str(outcome.error.pid) in str(outcome.error)
    assert not alive(outcome.error.pid)


def test_crashed_worker_is_replaced_and_the_pool_keeps_its_size():
    with corral.Pool(2) as pool:
        tasks = [corral.Task(exit_on_bad, (x,)) for x in range(6)]
        report = pool.run(tasks, chunksize=1, errors="return")
        dead = report.outcomes[BAD].error.pid
        wait_until(lambda: len(live_workers()) == 2, "two live workers after the crash")
        assert dead not in live_workers()
        assert pool.map(square, range(20), chunksize=1) == [x * x for x in range(20)]


def test_every_task_crashing_gives_crashed_outcomes_not_a_start_error():
    report = run_each(always_exit, 6)
    assert [o.status for o in report.outcomes] == ["crashed"] * 6
    assert all(isinstance(o.error, corral.WorkerCrashed) for o in report.outcomes)
    assert all(o.error.exitcode == 3 for o in report.outcomes)


def test_many_crashes_in_one_batch_fail_only_those_items():
    results = corral.map(crash_every_fifth, range(30), workers=2, chunksize=1, errors="return")
    bad = {x for x in range(30) if x % 5 == 2}
    only_bad_failed(results, 30, bad)
    assert all(results[x].status == "crashed" and results[x].error.exitcode == 7 for x in bad)


# -- faults inside chunks -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(CRASHERS))
def test_fault_in_the_middle_of_an_explicit_chunk_fails_only_that_item(kind):
    report = run_each(CRASHERS[kind], 20, chunksize=5)
    assert report.outcomes[BAD].status == EXPECTED_STATUS[kind]
    assert [o.key for o in report.failures] == [BAD]
    only_bad_failed(report.results, 20)


@pytest.mark.parametrize("kind", ["exception", "os_exit"])
def test_fault_with_auto_chunks_fails_only_that_item(kind):
    results = corral.map(CRASHERS[kind], range(200), workers=2, chunksize="auto", errors="return")
    assert results[BAD].status == EXPECTED_STATUS[kind]
    only_bad_failed(results, 200)


def test_map_with_explicit_chunks_and_a_crash_returns_results_in_input_order():
    results = corral.map(exit_on_bad, range(23), workers=2, chunksize=5, errors="return")
    assert len(results) == 23
    assert isinstance(results[BAD].error, corral.WorkerCrashed)
    only_bad_failed(results, 23)


def test_crash_in_a_chunk_is_attributed_to_the_item_that_ran():
    report = corral.run(
        [corral.Task(exit_on_bad, (x,), key=f"k{x}") for x in range(10)],
        workers=2,
        chunksize=5,
        errors="return",
    )
    assert [o.key for o in report.failures] == ["k3"]
    assert report.failures[0].error.key == "k3"


# -- data that does not pickle --------------------------------------------------------------------
@pytest.mark.parametrize("chunksize", [1, 5])
def test_unpicklable_argument_fails_only_that_item(chunksize):
    items = [0, 1, 2, threading.Lock(), 4, 5, 6, 7]
    results = corral.map(double, items, workers=2, chunksize=chunksize, errors="return")
    failure = results[BAD]
    assert isinstance(failure, corral.Failure)
    assert failure.status == "failed"
    assert isinstance(failure.error, corral.SerializationError)
    assert [r for i, r in enumerate(results) if i != BAD] == [0, 2, 4, 8, 10, 12, 14]


@pytest.mark.parametrize("chunksize", [1, 5])
def test_unpicklable_result_fails_only_that_item(chunksize):
    results = corral.map(lock_on_bad, range(8), workers=2, chunksize=chunksize, errors="return")
    failure = results[BAD]
    assert isinstance(failure, corral.Failure)
    assert failure.status == "failed"
    assert isinstance(failure.error, corral.SerializationError)
    assert [r for i, r in enumerate(results) if i != BAD] == [x * 2 for x in range(8) if x != BAD]


@pytest.mark.parametrize("chunksize", [1, 5])
def test_result_that_cannot_be_unpickled_fails_only_that_item(chunksize):
    results = corral.map(
        return_strict_on_bad, range(10), workers=2, chunksize=chunksize, errors="return"
    )
    assert isinstance(results[BAD], corral.Failure)
    assert isinstance(results[BAD].error, corral.SerializationError)
    only_bad_failed(results, 10)


def test_unpicklable_exception_arrives_as_remote_error():
    report = run_each(raise_locked, 6)
    error = report.outcomes[BAD].error
    assert report.outcomes[BAD].status == "failed"
    assert isinstance(error, corral.RemoteError)
    assert error.type_name.endswith("LockedError")
    assert error.message == "locked 3"
    assert "raise_locked" in error.remote_traceback
    only_bad_failed(report.results, 6)


def test_unpicklable_exception_in_a_chunk_fails_only_that_item():
    results = corral.map(raise_locked, range(10), workers=2, chunksize=5, errors="return")
    assert isinstance(results[BAD].error, corral.RemoteError)
    only_bad_failed(results, 10)


def test_exception_with_custom_init_arguments_keeps_type_and_attributes():
    report = run_each(raise_pair, 6)
    error = report.outcomes[BAD].error
    assert type(error) is PairError
    assert error.args == (BAD, "detail text")
    assert (error.code, error.detail) == (BAD, "detail text")
    assert isinstance(error.__cause__, RemoteTraceback)
    only_bad_failed(report.results, 6)


def test_exception_that_cannot_be_rebuilt_from_its_args_arrives_as_remote_error():
    report = run_each(raise_strict, 6)
    error = report.outcomes[BAD].error
    assert isinstance(error, corral.RemoteError)
    assert error.type_name.endswith("StrictError")
    assert error.message == "3: why"
    only_bad_failed(report.results, 6)


# -- the other verbs after faults -----------------------------------------------------------------
def test_submit_future_gets_worker_crashed():
    with corral.Pool(2) as pool:
        crashed = pool.submit(exit_on_bad, BAD)
        fine = pool.submit(exit_on_bad, 4)
        assert isinstance(crashed.exception(timeout=60), corral.WorkerCrashed)
        assert fine.result(timeout=60) == 16


def test_imap_with_errors_return_yields_a_failure_for_a_crash_and_goes_on():
    results = list(corral.imap(exit_on_bad, range(10), workers=2, chunksize=1, errors="return"))
    assert results[BAD].status == "crashed"
    only_bad_failed(results, 10)


def test_imap_with_errors_raise_raises_the_crash_when_it_reaches_it():
    seen = []
    with pytest.raises(corral.WorkerCrashed):
        for value in corral.imap(exit_on_bad, range(10), workers=2, chunksize=1):
            seen.append(value)
    assert seen == [x * x for x in range(BAD)]


@pytest.mark.slow
def test_pool_stays_usable_after_a_crash_and_a_timeout():
    with corral.Pool(2, kill_grace=0.2) as pool:
        crashed = pool.map(exit_on_bad, range(6), chunksize=1, errors="return")
        assert crashed[BAD].status == "crashed"
        timed_out = pool.map(hang_on_bad, range(6), chunksize=1, timeout=0.5, errors="return")
        assert timed_out[BAD].status == "timeout"
        assert pool.map(square, range(30)) == [x * x for x in range(30)]
        assert pool.submit(square, 7).result(timeout=60) == 49


@pytest.mark.slow
def test_report_summary_mentions_each_failure_and_its_reason():
    tasks = [
        corral.Task(square, (2,), key="fine"),
        corral.Task(raise_on_bad, (BAD,), key="raises"),
        corral.Task(exit_on_bad, (BAD,), key="exits"),
        corral.Task(hang_on_bad, (BAD,), key="hangs", timeout=0.5),
    ]
    report = corral.run(tasks, workers=2, errors="return", kill_grace=0.2)
    assert not report.ok
    assert {o.key: o.status for o in report.outcomes} == {
        "fine": "ok",
        "raises": "failed",
        "exits": "crashed",
        "hangs": "timeout",
    }
    summary = report.summary()
    for text in (
        "failed",
        "crashed",
        "timeout",
        "'raises'",
        "'exits'",
        "'hangs'",
        "ValueError",
        "WorkerCrashed",
        "TaskTimeout",
    ):
        assert text in summary, text
    assert "'fine'" not in summary


# -- workers that cannot start --------------------------------------------------------------------
def test_initializer_that_raises_fails_the_batch_with_worker_start_error():
    with corral.Pool(2, initializer=failing_initializer) as pool:
        results = pool.map(square, range(4), errors="return")
    assert all(isinstance(r, corral.Failure) for r in results)
    assert all(isinstance(r.error, corral.WorkerStartError) for r in results)
    assert "initializer says no" in str(results[0].error)


def test_initializer_that_kills_its_worker_gives_worker_start_error_not_a_hang():
    with corral.Pool(2, initializer=exiting_initializer) as pool:
        results = pool.map(square, range(4), errors="return")
    assert all(isinstance(r.error, corral.WorkerStartError) for r in results)
