"""corral.Executor against what concurrent.futures.ProcessPoolExecutor documents.

Ported from the behaviours CPython's own Lib/test/test_concurrent_futures checks (test_process_pool,
executor, test_shutdown, test_deadlock), Python 3.14's included (``map(buffersize=)``,
``terminate_workers()``, ``kill_workers()``), and from the deliberate differences listed in
docs/executor.md, each tested as what corral does instead. ``tests/test_executor.py`` has the
basics (submit, wait, as_completed, callbacks, cancel, shutdown, crashes); this file the rest.

Tasks that must stay running wait for a file the test writes (bounded), never on a sleep.
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import weakref
from concurrent import futures
from concurrent.futures import process
from pathlib import Path

import pytest
from _tasks import WAIT, wait_for_file
from conftest import leftover_processes

import corral

SCRIPTS = Path(__file__).parent / "scripts"


# -- task functions ----------------------------------------------------------------------------
def raise_runtime_error():
    raise RuntimeError(123)  # the line the remote traceback must show


def getpid(_=None):
    return os.getpid()


def mul(x, y):
    return x * y


def block(directory, value="released"):
    Path(directory, "started").write_text("")
    if not wait_for_file(os.path.join(directory, "release"), timeout=120):
        raise TimeoutError("never released")
    return value


def nap(seconds):
    time.sleep(seconds)  # the work itself (cf's own test submits time.sleep)


def make_lock():
    return threading.Lock()


def failing_initializer():
    raise RuntimeError("initializer failed on purpose")


def exit_now(code):
    os._exit(code)


class Dummy:
    def method(self):
        return 1


# -- helpers ------------------------------------------------------------------------------------
def started(directory):
    assert wait_for_file(os.path.join(directory, "started")), "the blocking task never started"


def release(directory):
    Path(directory, "release").write_text("")


def wait_gone(timeout=15.0):
    deadline = time.monotonic() + timeout
    left = leftover_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = leftover_processes()
    return left


@pytest.fixture
def executor():
    ex = corral.Executor(max_workers=2)
    yield ex
    ex.shutdown(wait=True)


# -- exceptions and their tracebacks -----------------------------------------------------------
def test_exception_keeps_type_and_args_with_the_remote_traceback_as_cause(executor):
    error = executor.submit(raise_runtime_error).exception(timeout=WAIT)
    assert type(error) is RuntimeError
    assert error.args == (123,)
    cause = error.__cause__
    assert type(cause) is process._RemoteTraceback
    assert "raise RuntimeError(123)  # the line the remote traceback must show" in cause.tb


def test_excepthook_prints_the_remote_traceback(executor):
    error = executor.submit(raise_runtime_error).exception(timeout=WAIT)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            raise error
        except RuntimeError:
            sys.excepthook(*sys.exc_info())
    assert "raise RuntimeError(123)" in stderr.getvalue()


def test_unpicklable_argument_fails_with_the_pickling_error_naming_the_task(executor):
    error = executor.submit(getpid, threading.Lock()).exception(timeout=WAIT)
    assert type(error) is TypeError
    assert "pickle" in str(error)
    if sys.version_info >= (3, 11):
        assert any("task" in note for note in error.__notes__)
    assert executor.submit(mul, 2, 3).result(timeout=WAIT) == 6


def test_unpicklable_result_is_a_serialization_error_which_is_a_type_error(executor):
    # Deliberate difference: the pickling error happened in the worker; corral's
    # SerializationError (a TypeError) names the task and says why.
    error = executor.submit(make_lock).exception(timeout=WAIT)
    assert isinstance(error, corral.SerializationError)
    assert isinstance(error, TypeError)
    assert "result" in str(error)


# -- map: chunksize, buffersize, timeout ----------------------------------------------------
@pytest.mark.parametrize("chunksize", [6, 50, 40])
def test_map_chunksize_gives_the_builtin_map(executor, chunksize):
    expected = list(map(pow, range(40), range(40)))
    assert list(executor.map(pow, range(40), range(40), chunksize=chunksize)) == expected


def test_map_negative_chunksize_is_value_error(executor):
    with pytest.raises(ValueError):
        list(executor.map(pow, range(4), range(4), chunksize=-1))


def test_map_buffersize_reads_an_endless_input_lazily(executor):
    results = executor.map(mul, itertools.count(), itertools.repeat(2), buffersize=2)
    assert [next(results) for _ in range(5)] == [0, 2, 4, 6, 8]
    results.close()


def test_map_buffersize_submits_at_most_that_many_ahead(executor):
    read = []

    def source():
        for x in range(20):
            read.append(x)
            yield x

    results = executor.map(abs, source(), buffersize=3)
    assert len(read) == 3  # submitted now: the buffer, no more
    assert next(results) == 0
    assert len(read) == 4  # one more for each result read
    assert list(results) == list(range(1, 20))


def test_map_buffersize_with_chunksize(executor):
    got = executor.map(mul, range(25), range(25), chunksize=4, buffersize=2)
    assert list(got) == [x * x for x in range(25)]


@pytest.mark.parametrize("buffersize", [0, -1])
def test_map_buffersize_below_one_is_value_error(executor, buffersize):
    with pytest.raises(ValueError):
        executor.map(abs, range(3), buffersize=buffersize)


def test_map_buffersize_not_an_int_is_type_error(executor):
    with pytest.raises(TypeError):
        executor.map(abs, range(3), buffersize=2.0)


def test_map_buffersize_stops_submitting_once_the_executor_is_collected():
    ex = corral.Executor(max_workers=1)
    results = ex.map(abs, itertools.count(), buffersize=2)
    assert next(results) == 0
    wr = weakref.ref(ex)
    del ex
    gc.collect()
    assert wr() is None
    assert list(results) == [1, 2]  # what was submitted ends; nothing more is read
    assert wait_gone() == []


def test_map_timeout_cancels_what_is_left(executor, tmp_path):
    executor.submit(abs, 1).result(timeout=WAIT)
    results = executor.map(block, [str(tmp_path)] * 4, range(4), timeout=0.5)
    with pytest.raises(futures.TimeoutError):
        next(results)
    release(tmp_path)


# -- shutdown -----------------------------------------------------------------------------------
def test_shutdown_cancel_futures_right_after_submits_lets_the_handed_ones_finish():
    # CPython's test_cancel_futures: some are cancelled, the others finish, at least one.
    ex = corral.Executor(max_workers=2)
    fs = [ex.submit(nap, 0.05) for _ in range(50)]
    ex.shutdown(cancel_futures=True)
    cancelled = [f for f in fs if f.cancelled()]
    others = [f for f in fs if not f.cancelled()]
    assert len(cancelled) > 20
    assert others
    for f in others:
        assert f.done()
        assert f.exception() is None


def test_shutdown_wait_false_returns_and_the_work_still_finishes(tmp_path):
    ex = corral.Executor(max_workers=1)
    future = ex.submit(block, str(tmp_path))
    started(tmp_path)
    ex.shutdown(wait=False)
    assert not future.done()
    release(tmp_path)
    assert future.result(timeout=WAIT) == "released"
    assert wait_gone() == []


def test_executor_is_collected_and_its_workers_stop():
    ex = corral.Executor(max_workers=2)
    list(ex.map(abs, range(-5, 5)))
    wr = weakref.ref(ex)
    del ex
    gc.collect()
    assert wr() is None
    assert wait_gone() == []


def test_map_results_are_not_kept_by_the_executor(executor):
    for value in executor.map(_make_dummy, range(5)):
        wr = weakref.ref(value)
        del value
        gc.collect()
        assert wr() is None


def _make_dummy(_):
    return Dummy()


def test_no_stale_reference_to_a_finished_callable(executor):
    collected = threading.Event()
    obj = Dummy()
    weakref.finalize(obj, collected.set)
    assert executor.submit(obj.method).result(timeout=WAIT) == 1
    del obj
    gc.collect()
    assert collected.wait(WAIT)


def test_submit_after_interpreter_exit_began_is_runtime_error(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "executor_exit.py"), str(tmp_path)],
        timeout=120,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "late-submit").read_text() == "RuntimeError"


# -- terminate_workers / kill_workers (3.14) ----------------------------------------------------
@pytest.mark.parametrize("method", ["terminate_workers", "kill_workers"])
def test_force_shutdown_stops_the_running_task_and_the_pool(method, tmp_path):
    ex = corral.Executor(max_workers=1)
    running = ex.submit(block, str(tmp_path))
    started(tmp_path)
    queued = ex.submit(abs, -1)
    getattr(ex, method)()
    assert queued.cancelled()
    assert isinstance(running.exception(timeout=WAIT), corral.TaskCancelled)
    assert not (tmp_path / "release").exists()
    with pytest.raises(RuntimeError):
        ex.submit(abs, 1)
    assert wait_gone() == []


@pytest.mark.parametrize("method", ["terminate_workers", "kill_workers"])
def test_force_shutdown_after_a_crash_does_not_raise(method):
    ex = corral.Executor(max_workers=1)
    assert isinstance(ex.submit(exit_now, 1).exception(timeout=WAIT), corral.WorkerCrashed)
    getattr(ex, method)()
    assert wait_gone() == []


def test_force_shutdown_of_an_idle_executor(executor):
    executor.terminate_workers()
    executor.kill_workers()
    assert wait_gone() == []


# -- construction: max_workers, initializer, max_tasks_per_child, mp_context --------------------
@pytest.mark.parametrize("max_workers", [0, -1])
def test_max_workers_not_positive_is_value_error(max_workers):
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        corral.Executor(max_workers=max_workers)


def test_initializer_not_callable_is_type_error():
    with pytest.raises(TypeError):
        corral.Executor(max_workers=1, initializer=42)


def test_failing_initializer_fails_each_future_with_worker_start_error():
    # Deliberate difference: no BrokenProcessPool; each future fails with WorkerStartError
    # (with the initializer's error) and submit does not raise.
    with corral.Executor(max_workers=1, initializer=failing_initializer) as ex:
        errors = [ex.submit(abs, -x).exception(timeout=WAIT) for x in range(2)]
    assert all(isinstance(e, corral.WorkerStartError) for e in errors)
    assert "initializer failed on purpose" in str(errors[0])


def test_initargs_holding_a_multiprocessing_queue_is_refused_at_construction():
    # Deliberate difference: initargs travel pickled (workers come from a fork server), not by
    # inheritance; the refusal comes before any work.
    queue = multiprocessing.Queue()
    try:
        with pytest.raises(RuntimeError, match="inheritance"):
            corral.Executor(max_workers=1, initializer=print, initargs=(queue,))
    finally:
        queue.close()
        queue.join_thread()


def test_max_tasks_per_child_replaces_the_worker_after_that_many():
    with corral.Executor(1, max_tasks_per_child=3) as ex:
        pids = [ex.submit(getpid).result(timeout=WAIT) for _ in range(4)]
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] != pids[0]


def test_max_tasks_per_child_with_fork_is_value_error():
    with pytest.raises(ValueError, match="fork"):
        corral.Executor(1, mp_context=multiprocessing.get_context("fork"), max_tasks_per_child=3)


def test_max_tasks_per_child_shutdown_right_after_submits_runs_them_all():
    ex = corral.Executor(3, max_tasks_per_child=1)
    fs = [ex.submit(mul, i, i) for i in range(6)]
    ex.shutdown()
    assert [f.result() for f in fs] == [i * i for i in range(6)]


def test_max_tasks_per_child_with_a_backlog_does_not_deadlock():
    for workers, max_tasks, n in [(1, 2, 6), (2, 2, 8)]:
        ex = corral.Executor(workers, max_tasks_per_child=max_tasks)
        try:
            fs = [ex.submit(mul, i, 2) for i in range(n)]
            assert [f.result(timeout=WAIT) for f in fs] == [i * 2 for i in range(n)]
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_mp_context_chooses_the_start_method(method):
    with corral.Executor(1, mp_context=multiprocessing.get_context(method)) as ex:
        assert ex.submit(mul, 6, 7).result(timeout=WAIT) == 42
        assert ex._pool.start_method == method


# -- futures: wait, as_completed ---------------------------------------------------------------
def test_as_completed_yields_a_duplicated_future_once(executor):
    future = executor.submit(mul, 2, 2)
    assert list(futures.as_completed([future, future], timeout=WAIT)) == [future]


def test_wait_on_finished_futures_returns_at_once(executor):
    fs = [executor.submit(mul, i, 1) for i in range(4)]
    for f in fs:
        f.result(timeout=WAIT)
    done, not_done = futures.wait(fs, timeout=0)
    assert done == set(fs) and not not_done


def test_many_submits_complete_in_submission_order_of_results(executor):
    fs = [executor.submit(mul, i, 3) for i in range(2000)]
    assert [f.result(timeout=WAIT) for f in fs] == [i * 3 for i in range(2000)]
