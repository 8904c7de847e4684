"""A worker that fails at an edge of a Call, not inside the task: while it unpickles the
arguments or the function, or pickles its result; and a result whose unpickling raises in the
coordinator. Whatever happens there (an exception, ``SystemExit``, ``KeyboardInterrupt``,
``GeneratorExit``, ``os._exit``, SIGKILL, a segfault), the task(s) of that Call fail with a
typed error that says which edge, the other tasks of the batch are right, and the pool goes
on working (the engine thread used to die: ``RuntimeError('Future in unexpected state')``,
then every ``submit`` failed).

Real worker processes and signals throughout. Objects "act" when pickled or unpickled: their
``__reduce__`` raises or ends the process that runs it.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import os
import signal
import threading

import pytest
from _procs import wait_until

import corral
from corral import _engine

pytestmark = pytest.mark.timeout(120)

RAISES = ["SystemExit", "KeyboardInterrupt", "GeneratorExit", "ValueError"]
"""What the coordinator may meet too: raised, never ending a process."""
DIES = ["os._exit", "SIGKILL", "segfault"]
BAD = 3
ITEMS = list(range(7))  # one chunk in the tests below (chunksize=len(ITEMS))
WAIT = 60.0


# -- objects that act at an edge (module level: workers import them by reference) -------------
def act(kind):
    """Do ``kind`` here: raise it, or end this process that way."""
    if kind == "SystemExit":
        raise SystemExit(3)
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if kind == "GeneratorExit":
        raise GeneratorExit
    if kind == "ValueError":
        raise ValueError("acted at an edge")
    if kind == "os._exit":
        os._exit(3)
    if kind == "SIGKILL":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "segfault":
        ctypes.string_at(0)
    raise AssertionError(f"unknown kind {kind!r}")


class ActsWhenLoaded:
    """Pickles fine; unpickling it does ``kind``."""

    def __init__(self, kind):
        self.kind = kind

    def __reduce__(self):
        return (act, (self.kind,))


class ActsWhenPickled:
    """Pickling it does ``kind``."""

    def __init__(self, kind):
        self.kind = kind

    def __reduce__(self):
        act(self.kind)


class SquareActsWhenLoaded(ActsWhenLoaded):
    """A task function (``x * x``) whose unpickling in the worker does ``kind``."""

    def __call__(self, x):
        return x * x


def square(x):
    return x * x


def result_acts(item):
    """``x * x``, except for ``BAD``: an object that does ``kind`` when pickled in the worker
    (``how="pickled"``) or unpickled in the coordinator (``how="loaded"``)."""
    x, kind, how = item
    if x != BAD:
        return x * x
    return ActsWhenPickled(kind) if how == "pickled" else ActsWhenLoaded(kind)


def getpid(_=None):
    return os.getpid()


# -- what each edge gives --------------------------------------------------------------------
def bad_call(edge, kind):
    """``(fn, items, bad positions)`` of a map whose item ``BAD`` (every item, for the
    function edge) fails at ``edge``."""
    if edge == "arguments":
        return square, [ActsWhenLoaded(kind) if x == BAD else x for x in ITEMS], {BAD}
    if edge == "coordinator-arguments":
        return square, [ActsWhenPickled(kind) if x == BAD else x for x in ITEMS], {BAD}
    if edge == "function":
        return SquareActsWhenLoaded(kind), ITEMS, set(ITEMS)
    how = "pickled" if edge == "result" else "loaded"
    return result_acts, [(x, kind, how) for x in ITEMS], {BAD}


def check_error(error, edge, kind):
    """The typed error a task failing at ``edge`` by ``kind`` must have."""
    if kind in DIES:
        assert isinstance(error, corral.WorkerCrashed), repr(error)
        word = {"arguments": "arguments", "function": "function", "result": "result"}[edge]
        assert word in error.during, error.during
        assert word in str(error)
        if kind == "os._exit":
            assert error.exitcode == 3
        else:
            assert error.signal == ("SIGKILL" if kind == "SIGKILL" else "SIGSEGV")
        return
    assert isinstance(error, corral.SerializationError), repr(error)
    text = str(error)
    if edge in ("arguments", "function"):
        assert f"unpickle the {edge}" in text, text
    elif edge == "result":
        assert "result" in text and "pickle" in text, text
    elif edge == "coordinator-result":
        assert "cannot unpickle the result" in text, text
    else:
        assert "cannot pickle" in text, text
    if kind != "ValueError":
        assert kind in text, text  # "SystemExit: 3", not an empty message


WORKER_EDGES = [
    (edge, kind) for edge in ("arguments", "function", "result") for kind in RAISES + DIES
]
COORDINATOR_EDGES = [
    (edge, kind) for edge in ("coordinator-arguments", "coordinator-result") for kind in RAISES
]


def check_map(values, edge, kind):
    bad = bad_call(edge, kind)[2]
    for x, value in zip(ITEMS, values, strict=True):
        if x in bad:
            assert isinstance(value, corral.Failure), (x, value)
            check_error(value.error, edge, kind)
        else:
            assert value == x * x, (x, value)


def still_works(pool):
    assert pool.map(square, range(20)) == [x * x for x in range(20)]
    assert pool.submit(pow, 2, 5).result(timeout=WAIT) == 32


# -- Pool: submit, map (one chunk), imap, run --------------------------------------------------
@pytest.mark.parametrize(("edge", "kind"), WORKER_EDGES + COORDINATOR_EDGES)
def test_pool_fails_only_the_task_and_keeps_working(edge, kind):
    fn, items, bad = bad_call(edge, kind)
    first_bad = min(bad)
    with corral.Pool(2) as pool:
        future = pool.submit(fn, items[first_bad])
        check_error(future.exception(timeout=WAIT), edge, kind)
        still_works(pool)
        values = pool.map(fn, items, chunksize=len(items), errors="return")
        check_map(values, edge, kind)
        still_works(pool)


@pytest.mark.parametrize(
    ("edge", "kind"),
    [("arguments", "SystemExit"), ("result", "os._exit"), ("function", "KeyboardInterrupt")],
)
def test_imap_and_run_fail_only_the_task(edge, kind):
    fn, items, bad = bad_call(edge, kind)
    with corral.Pool(2) as pool:
        check_map(list(pool.imap(fn, items, chunksize=len(items), errors="return")), edge, kind)
        report = pool.run(
            [corral.Task(fn, (item,), key=x) for x, item in zip(ITEMS, items, strict=True)],
            errors="return",
        )
        for outcome in report.outcomes:
            if outcome.key in bad:
                status = "crashed" if kind in DIES else "failed"
                assert outcome.status == status, outcome
                check_error(outcome.error, edge, kind)
            else:
                assert outcome.value == outcome.key**2, outcome
        still_works(pool)


@pytest.mark.parametrize(("edge", "kind"), [("arguments", "segfault"), ("result", "SystemExit")])
def test_corral_map_fails_only_the_task(edge, kind):
    fn, items, _ = bad_call(edge, kind)
    check_map(corral.map(fn, items, workers=2, chunksize=len(items), errors="return"), edge, kind)


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_every_start_method(start_method):
    with corral.Pool(2, start_method=start_method) as pool:
        for edge, kind in [("arguments", "SystemExit"), ("result", "os._exit")]:
            fn, items, _ = bad_call(edge, kind)
            check_map(pool.map(fn, items, chunksize=len(items), errors="return"), edge, kind)
        still_works(pool)


# -- Executor: concurrent.futures semantics ----------------------------------------------------
@pytest.mark.parametrize(
    ("edge", "kind"),
    [
        ("arguments", "SystemExit"),
        ("arguments", "os._exit"),
        ("function", "GeneratorExit"),
        ("result", "KeyboardInterrupt"),
        ("result", "segfault"),
        ("coordinator-result", "SystemExit"),
        ("coordinator-result", "KeyboardInterrupt"),
    ],
)
def test_executor_fails_only_the_future_and_keeps_working(edge, kind):
    fn, items, bad = bad_call(edge, kind)
    callbacks = []
    with corral.Executor(2) as ex:
        futures = [ex.submit(fn, item) for item in items]
        for f in futures:
            f.add_done_callback(callbacks.append)
        assert not cf.wait(futures, timeout=WAIT).not_done
        for x, f in zip(ITEMS, futures, strict=True):
            if x in bad:
                check_error(f.exception(), edge, kind)
            else:
                assert f.result() == x * x
        # a future is completed once: one callback each
        assert sorted(map(id, callbacks)) == sorted(map(id, futures))
        # map in chunks (one task per chunk): the chunk holding the bad item fails
        with pytest.raises((corral.SerializationError, corral.WorkerCrashed)) as raised:
            list(ex.map(fn, items, chunksize=2, timeout=WAIT))
        check_error(raised.value, edge, kind)
        assert ex.submit(pow, 2, 5).result(timeout=WAIT) == 32
        assert list(ex.map(square, range(10), chunksize=3)) == [x * x for x in range(10)]


def test_a_future_sent_to_a_worker_that_dies_before_starting_it_runs_once():
    """The future is set running when its Call is sent; the worker is killed before reading it:
    the task is sent again (not an attempt), and the future is not set running twice."""
    with corral.Executor(1) as ex:
        pid = ex.submit(getpid).result(timeout=WAIT)
        os.kill(pid, signal.SIGSTOP)
        try:
            future = ex.submit(square, 7)
            wait_until(future.running, "the future to be sent to the stopped worker")
        finally:
            os.kill(pid, signal.SIGKILL)
        assert future.result(timeout=WAIT) == 49
        assert ex.submit(pow, 2, 5).result(timeout=WAIT) == 32


def test_a_done_callback_that_raises_systemexit_does_not_stop_the_engine():
    with corral.Executor(2) as ex:
        future = ex.submit(square, 3)
        future.add_done_callback(lambda f: act("SystemExit"))
        assert future.result(timeout=WAIT) == 9
        assert ex.submit(pow, 2, 5).result(timeout=WAIT) == 32


# -- the engine thread itself fails ---------------------------------------------------------------
def test_a_failing_engine_fails_every_waiter_with_the_cause(monkeypatch, tmp_path):
    """A bug in the engine (injected: handling a Result raises): every outstanding task fails
    with a CorralError caused by it, map raises it, later submits raise, nothing hangs."""
    gate = tmp_path / "go"
    bug = RuntimeError("injected engine bug")
    real = _engine.Engine._on_result

    def on_result(self, slot_id, result):
        if gate.exists():
            raise bug
        real(self, slot_id, result)

    monkeypatch.setattr(_engine.Engine, "_on_result", on_result)
    pool = corral.Pool(2)
    try:
        assert pool.submit(square, 2).result(timeout=WAIT) == 4
        waiting = [pool.submit(wait_for, str(gate)) for _ in range(4)]
        stream = pool.imap(wait_for, [str(gate)] * 3)
        outcome = {}

        def run_map():
            try:
                pool.map(wait_for, [str(gate)] * 3)
            except BaseException as exc:
                outcome["map"] = exc

        mapper = threading.Thread(target=run_map)
        mapper.start()
        wait_until(lambda: any(f.running() for f in waiting), "a task to start")
        gate.touch()
        for f in waiting:
            error = f.exception(timeout=WAIT)
            assert isinstance(error, corral.CorralError) and error.__cause__ is bug, error
        with pytest.raises(corral.CorralError) as raised:
            list(stream)
        assert raised.value.__cause__ is bug
        mapper.join(WAIT)
        assert not mapper.is_alive()
        assert isinstance(outcome["map"], corral.CorralError)
        assert outcome["map"].__cause__ is bug
        with pytest.raises(corral.CorralError, match="engine failed"):
            pool.submit(square, 2)
        pool._life._thread.join(WAIT)  # the engine thread ended
        assert not pool._life._thread.is_alive()
    finally:
        pool.close()


def wait_for(path):
    """Return once ``path`` exists (polled; bounded)."""
    from _tasks import wait_for_file

    assert wait_for_file(path)
    return path


def test_a_batch_posted_after_the_engine_stopped_fails_at_once():
    pool = corral.Pool(2)
    pool.close()
    from corral._sinks import FutureSink

    future = cf.Future()
    batch = pool._batch_for_tasks([corral.Task(square, (2,))], pool.run_options, FutureSink(future))
    pool._post(lambda: pool.engine.accept(batch))  # racing a close: no engine thread to run it
    assert isinstance(future.exception(timeout=WAIT), corral.CorralError)
    assert batch.done_event.is_set()


def test_a_scheduled_batch_runs_a_broken_call_one_task_at_a_time():
    """Tasks of a scheduled batch (here: priority=) that are very short travel several to a
    Call; once a Call broke at an edge, its tasks are sent one per Call, so only the culprit
    fails, and the rest of the batch stays right."""
    with corral.Pool(2) as pool:
        pool.map(square, range(2000), priority=lambda x: 0)  # learns that square is short
        items = [ActsWhenLoaded("SystemExit") if x == BAD else x for x in range(200)]
        values = pool.map(square, items, priority=lambda x: 0, errors="return")
        for x, value in enumerate(values):
            if x == BAD:
                check_error(value.error, "arguments", "SystemExit")
            else:
                assert value == x * x
