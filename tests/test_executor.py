"""corral.Executor conforms to concurrent.futures.Executor.

Many of these follow CPython's own Lib/test/test_concurrent_futures (submit, map, wait,
as_completed, done callbacks, timeouts, shutdown). The one deliberate difference from
ProcessPoolExecutor, that a dead worker fails only its own future, is tested at the end.

Tasks that must stay running wait for a file the test writes (bounded), never on a sleep.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent import futures
from pathlib import Path

import pytest
from _tasks import WAIT, wait_for_file
from conftest import leftover_processes

import corral

_INIT_VALUE = None


# -- task functions ----------------------------------------------------------------------------
def mul(x, y):
    return x * y


def square(x):
    return x * x


def capture(*args, **kwargs):
    return args, kwargs


def getpid(_=None):
    return os.getpid()


def raise_value_error(message="boom"):
    raise ValueError(message)


def fail_on_3(x):
    if x == 3:
        raise ValueError("three")
    return x


def block(directory, value="released"):
    """Announce that it runs (``started``), then wait until the test writes ``release``."""
    Path(directory, "started").write_text("")
    if not wait_for_file(os.path.join(directory, "release")):
        raise TimeoutError("never released")
    return value


def block_on_2(directory, x):
    return block(directory, x) if x == 2 else x


def touch(directory, name):
    Path(directory, str(name)).write_text("")
    return name


def set_init_value(value):
    global _INIT_VALUE
    _INIT_VALUE = value


def read_init_value(_=None):
    return _INIT_VALUE


def failing_initializer():
    raise RuntimeError("initializer failed on purpose")


def exit_now(code):
    os._exit(code)


# -- helpers ------------------------------------------------------------------------------------
def started(directory):
    assert wait_for_file(os.path.join(directory, "started")), "the blocking task never started"


def release(directory):
    Path(directory, "release").write_text("")


def wait_gone(timeout=10.0):
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


# -- the type and its futures -----------------------------------------------------------------
def test_executor_is_a_concurrent_futures_executor():
    assert issubclass(corral.Executor, futures.Executor)


def test_submit_returns_a_standard_future_with_the_result(executor):
    future = executor.submit(mul, 6, 7)
    assert isinstance(future, futures.Future)
    assert future.result(timeout=WAIT) == 42


def test_submit_passes_keyword_arguments(executor):
    assert executor.submit(mul, 2, y=8).result(timeout=WAIT) == 16


def test_submit_allows_keywords_named_fn_and_self(executor):
    future = executor.submit(capture, 1, self=2, fn=3)
    assert future.result(timeout=WAIT) == ((1,), {"self": 2, "fn": 3})


def test_submit_fn_by_keyword_is_type_error(executor):
    with pytest.raises(TypeError):
        executor.submit(fn=capture, arg=1)


def test_submit_runs_in_a_worker_process(executor):
    assert executor.submit(getpid).result(timeout=WAIT) != os.getpid()


def test_one_worker_executor_still_runs_in_a_worker_process():
    with corral.Executor(max_workers=1) as ex:
        assert ex.submit(getpid).result(timeout=WAIT) != os.getpid()


def test_future_exception_is_the_tasks_own_exception(executor):
    future = executor.submit(raise_value_error, "bad")
    error = future.exception(timeout=WAIT)
    assert type(error) is ValueError
    assert error.args == ("bad",)
    with pytest.raises(ValueError, match="bad"):
        future.result(timeout=WAIT)


def test_future_exception_has_worker_traceback_as_cause(executor):
    error = executor.submit(raise_value_error).exception(timeout=WAIT)
    assert error.__cause__ is not None
    assert "raise_value_error" in str(error.__cause__)


def test_result_timeout_raises_timeout_error_while_running(executor, tmp_path):
    future = executor.submit(block, str(tmp_path))
    started(tmp_path)
    with pytest.raises(futures.TimeoutError):
        future.result(timeout=0.05)
    release(tmp_path)
    assert future.result(timeout=WAIT) == "released"


def test_exception_timeout_raises_timeout_error_while_running(executor, tmp_path):
    future = executor.submit(block, str(tmp_path))
    started(tmp_path)
    with pytest.raises(futures.TimeoutError):
        future.exception(timeout=0.05)
    release(tmp_path)
    assert future.exception(timeout=WAIT) is None


def test_running_future_reports_running_and_cannot_be_cancelled(executor, tmp_path):
    future = executor.submit(block, str(tmp_path))
    started(tmp_path)
    assert future.running()
    assert not future.cancel()
    release(tmp_path)
    assert future.result(timeout=WAIT) == "released"


# -- wait and as_completed ------------------------------------------------------------------
def test_wait_first_completed(executor, tmp_path):
    blocked = executor.submit(block, str(tmp_path))
    started(tmp_path)
    quick = executor.submit(square, 3)
    done, not_done = futures.wait(
        [blocked, quick], timeout=WAIT, return_when=futures.FIRST_COMPLETED
    )
    assert done == {quick}
    assert not_done == {blocked}
    release(tmp_path)
    assert blocked.result(timeout=WAIT) == "released"


def test_wait_first_exception(executor, tmp_path):
    blocked = executor.submit(block, str(tmp_path))
    started(tmp_path)
    quick = executor.submit(square, 3)
    failing = executor.submit(raise_value_error)
    done, not_done = futures.wait(
        [blocked, quick, failing], timeout=WAIT, return_when=futures.FIRST_EXCEPTION
    )
    assert failing in done
    assert blocked in not_done
    release(tmp_path)
    blocked.result(timeout=WAIT)


def test_wait_all_completed(executor):
    fs = [executor.submit(square, x) for x in range(6)] + [executor.submit(raise_value_error)]
    done, not_done = futures.wait(fs, timeout=WAIT, return_when=futures.ALL_COMPLETED)
    assert done == set(fs)
    assert not_done == set()


def test_wait_timeout_returns_the_unfinished(executor, tmp_path):
    blocked = executor.submit(block, str(tmp_path))
    quick = executor.submit(square, 2)
    quick.result(timeout=WAIT)
    done, not_done = futures.wait([blocked, quick], timeout=0.1)
    assert done == {quick}
    assert not_done == {blocked}
    release(tmp_path)
    blocked.result(timeout=WAIT)


def test_as_completed_yields_every_future(executor):
    fs = {executor.submit(square, x): x for x in range(10)}
    seen = {}
    for future in futures.as_completed(fs, timeout=WAIT):
        seen[fs[future]] = future.result()
    assert seen == {x: x * x for x in range(10)}


def test_as_completed_yields_the_finished_before_the_running(executor, tmp_path):
    blocked = executor.submit(block, str(tmp_path))
    started(tmp_path)
    quick = executor.submit(square, 5)
    it = futures.as_completed([blocked, quick], timeout=WAIT)
    assert next(it) is quick
    release(tmp_path)
    assert next(it) is blocked


def test_as_completed_timeout_raises_timeout_error(executor, tmp_path):
    blocked = executor.submit(block, str(tmp_path))
    quick = executor.submit(square, 5)
    quick.result(timeout=WAIT)
    got = []
    with pytest.raises(futures.TimeoutError):
        for future in futures.as_completed([blocked, quick], timeout=0.1):
            got.append(future)
    assert got == [quick]
    release(tmp_path)
    blocked.result(timeout=WAIT)


# -- done callbacks -----------------------------------------------------------------------------
def test_done_callback_receives_the_finished_future(executor):
    called = threading.Event()
    seen = []

    def callback(future):
        seen.append(future.result())
        called.set()

    future = executor.submit(square, 9)
    future.add_done_callback(callback)
    assert called.wait(WAIT)
    assert seen == [81]


def test_done_callback_sees_the_exception(executor):
    called = threading.Event()
    seen = []

    def callback(future):
        seen.append(future.exception())
        called.set()

    executor.submit(raise_value_error, "cb").add_done_callback(callback)
    assert called.wait(WAIT)
    assert isinstance(seen[0], ValueError)


def test_done_callback_added_after_completion_runs_at_once(executor):
    future = executor.submit(square, 4)
    future.result(timeout=WAIT)
    seen = []
    future.add_done_callback(lambda f: seen.append(f.result()))
    assert seen == [16]


def test_done_callback_that_raises_does_not_stop_other_callbacks(executor):
    called = threading.Event()

    def bad(future):
        raise RuntimeError("callback failure")

    future = executor.submit(square, 2)
    future.add_done_callback(bad)
    future.add_done_callback(lambda f: called.set())
    assert called.wait(WAIT)
    assert executor.submit(square, 3).result(timeout=WAIT) == 9


def test_done_callback_runs_on_cancel(tmp_path):
    with corral.Executor(max_workers=1) as ex:
        blocked = ex.submit(block, str(tmp_path))
        started(tmp_path)
        queued = ex.submit(square, 2)
        seen = []
        queued.add_done_callback(lambda f: seen.append(f.cancelled()))
        assert queued.cancel()
        assert seen == [True]
        release(tmp_path)
        blocked.result(timeout=WAIT)


# -- cancel -------------------------------------------------------------------------------------
def test_cancel_of_a_queued_future_stops_it_from_running(tmp_path):
    with corral.Executor(max_workers=1) as ex:
        blocked = ex.submit(block, str(tmp_path))
        started(tmp_path)
        queued = ex.submit(touch, str(tmp_path), "queued-ran")
        assert queued.cancel()
        assert queued.cancelled()
        assert queued.done()
        release(tmp_path)
        assert blocked.result(timeout=WAIT) == "released"
        after = ex.submit(square, 7)
        assert after.result(timeout=WAIT) == 49
    with pytest.raises(futures.CancelledError):
        queued.result(timeout=0)
    assert not (tmp_path / "queued-ran").exists()


# -- map ----------------------------------------------------------------------------------------
def test_map_results_in_order(executor):
    assert list(executor.map(square, range(20))) == [x * x for x in range(20)]


def test_map_over_several_iterables(executor):
    assert list(executor.map(pow, range(10), [2] * 10)) == [pow(x, 2) for x in range(10)]


def test_map_stops_at_the_shortest_iterable(executor):
    assert list(executor.map(mul, range(10), range(3))) == [0, 1, 4]


def test_map_of_an_empty_iterable(executor):
    assert list(executor.map(square, [])) == []


@pytest.mark.parametrize("chunksize", [1, 2, 5, 100])
def test_map_with_chunksize_keeps_order(executor, chunksize):
    assert list(executor.map(square, range(23), chunksize=chunksize)) == [x * x for x in range(23)]


def test_map_chunksize_below_one_is_value_error(executor):
    with pytest.raises(ValueError):
        executor.map(square, range(3), chunksize=0)


def test_map_raises_the_exception_when_reached(executor):
    it = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert next(it) == (0, 1)
    assert next(it) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(it)


def test_map_exception_when_reached_with_chunks(executor):
    # As with ProcessPoolExecutor, an exception fails its whole chunk ([2, 3]).
    it = executor.map(fail_on_3, range(6), chunksize=2)
    assert [next(it), next(it)] == [0, 1]
    with pytest.raises(ValueError, match="three"):
        next(it)


def test_map_timeout_raises_timeout_error(executor, tmp_path):
    # The timeout counts from the map() call (concurrent.futures' rule) and must cover starting
    # the workers and items 0 and 1 on a loaded machine; item 2 blocks until released.
    executor.submit(square, 1).result()  # the workers are up
    got = []
    with pytest.raises(futures.TimeoutError):
        for value in executor.map(block_on_2, [str(tmp_path)] * 3, range(3), timeout=5):
            got.append(value)
    release(tmp_path)
    assert got == [0, 1]


def test_map_submits_every_task_without_iteration(tmp_path):
    ex = corral.Executor(max_workers=2)
    ex.map(touch, [str(tmp_path)] * 10, range(10))
    ex.shutdown(wait=True)
    assert sorted(int(p.name) for p in tmp_path.iterdir()) == list(range(10))


# -- shutdown -----------------------------------------------------------------------------------
def test_submit_after_shutdown_is_runtime_error():
    ex = corral.Executor(max_workers=2)
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(square, 2)


def test_shutdown_twice_is_harmless():
    ex = corral.Executor(max_workers=2)
    ex.shutdown()
    ex.shutdown()


def test_shutdown_wait_finishes_pending_futures():
    ex = corral.Executor(max_workers=2)
    fs = [ex.submit(square, x) for x in range(30)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in fs)
    assert [f.result() for f in fs] == [x * x for x in range(30)]


def test_context_manager_shuts_down_on_exit():
    with corral.Executor(max_workers=2) as ex:
        future = ex.submit(square, 3)
    assert future.done()
    assert future.result() == 9
    with pytest.raises(RuntimeError):
        ex.submit(square, 3)


def test_shutdown_cancel_futures_cancels_queued_ones(tmp_path):
    ex = corral.Executor(max_workers=1)
    blocked = ex.submit(block, str(tmp_path))
    started(tmp_path)
    queued = [ex.submit(touch, str(tmp_path), f"q{i}") for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    release(tmp_path)
    assert blocked.result(timeout=WAIT) == "released"
    assert not any(tmp_path.glob("q*"))


def test_shutdown_without_wait_stops_the_workers_once_the_running_task_ends(tmp_path):
    ex = corral.Executor(max_workers=1)
    blocked = ex.submit(block, str(tmp_path))
    started(tmp_path)
    queued = [ex.submit(touch, str(tmp_path), f"q{i}") for i in range(3)]
    ex.shutdown(wait=False, cancel_futures=True)
    release(tmp_path)
    blocked.result(timeout=WAIT)
    assert all(f.cancelled() for f in queued)
    assert wait_gone() == []


@pytest.mark.timeout(30)
def test_shutdown_wait_with_cancel_futures_returns_once_the_running_task_ends(tmp_path):
    ex = corral.Executor(max_workers=1)
    blocked = ex.submit(block, str(tmp_path))
    started(tmp_path)
    queued = [ex.submit(touch, str(tmp_path), f"q{i}") for i in range(3)]
    shutting = threading.Thread(target=ex.shutdown, kwargs={"wait": True, "cancel_futures": True})
    shutting.start()
    deadline = time.monotonic() + WAIT
    while not all(f.cancelled() for f in queued) and time.monotonic() < deadline:
        time.sleep(0.005)
    release(tmp_path)
    shutting.join(15)
    assert not shutting.is_alive(), "shutdown(wait=True, cancel_futures=True) did not return"
    assert blocked.result(timeout=0) == "released"
    assert all(f.cancelled() for f in queued)


# -- construction -------------------------------------------------------------------------------
@pytest.mark.parametrize("max_workers", [0, -1])
def test_max_workers_below_one_is_value_error(max_workers):
    with pytest.raises(ValueError):
        corral.Executor(max_workers=max_workers)


def test_max_tasks_per_child_below_one_is_value_error():
    with pytest.raises(ValueError):
        corral.Executor(max_workers=1, max_tasks_per_child=0)


def test_default_max_workers_works():
    with corral.Executor() as ex:
        assert ex.submit(square, 5).result(timeout=WAIT) == 25


@pytest.mark.slow
def test_mp_context_spawn_is_used():
    with corral.Executor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as ex:
        assert ex.submit(square, 5).result(timeout=WAIT) == 25


# -- initializer --------------------------------------------------------------------------------
def test_initializer_runs_in_each_worker():
    with corral.Executor(max_workers=2, initializer=set_init_value, initargs=("ready",)) as ex:
        values = [f.result(timeout=WAIT) for f in [ex.submit(read_init_value) for _ in range(20)]]
    assert values == ["ready"] * 20


def test_initializer_runs_in_each_recycled_worker():
    with corral.Executor(
        max_workers=1, initializer=set_init_value, initargs=(7,), max_tasks_per_child=1
    ) as ex:
        values = [ex.submit(read_init_value).result(timeout=WAIT) for _ in range(3)]
    assert values == [7, 7, 7]


def test_failing_initializer_fails_futures_with_worker_start_error():
    with corral.Executor(max_workers=1, initializer=failing_initializer) as ex:
        future = ex.submit(square, 2)
        error = future.exception(timeout=WAIT)
    assert isinstance(error, corral.WorkerStartError)
    assert "initializer failed on purpose" in str(error)


# -- recycling ----------------------------------------------------------------------------------
def test_max_tasks_per_child_recycles_workers():
    with corral.Executor(max_workers=1, max_tasks_per_child=1) as ex:
        pids = [ex.submit(getpid).result(timeout=WAIT) for _ in range(3)]
    assert len(set(pids)) == 3


def test_workers_are_reused_without_max_tasks_per_child():
    with corral.Executor(max_workers=1) as ex:
        pids = [ex.submit(getpid).result(timeout=WAIT) for _ in range(3)]
    assert len(set(pids)) == 1


# -- the deliberate difference: a crash fails one future only --------------------------------
def test_worker_crash_fails_its_future_with_worker_crashed(executor):
    error = executor.submit(exit_now, 3).exception(timeout=WAIT)
    assert isinstance(error, corral.WorkerCrashed)
    assert error.exitcode == 3


def test_executor_keeps_working_after_a_worker_crash(executor):
    executor.submit(exit_now, 1).exception(timeout=WAIT)
    assert [f.result(timeout=WAIT) for f in [executor.submit(square, x) for x in range(5)]] == [
        0, 1, 4, 9, 16,
    ]  # fmt: skip


def test_worker_crash_does_not_fail_a_concurrently_running_future(executor, tmp_path):
    blocked = executor.submit(block, str(tmp_path))
    started(tmp_path)
    crashed = executor.submit(exit_now, 1)
    assert isinstance(crashed.exception(timeout=WAIT), corral.WorkerCrashed)
    release(tmp_path)
    assert blocked.result(timeout=WAIT) == "released"
