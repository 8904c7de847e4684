"""The event stream (``_events``): typed events, delivered on the engine thread in order, to
subscribers registered on a Pool; a subscriber that raises is detached; none costs nothing."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

import corral
from corral._events import (
    Events,
    TaskFinished,
    TaskQueued,
    TaskRetried,
    TaskStarted,
    WorkerDied,
    WorkerKilled,
    WorkerRecycled,
    WorkerRetired,
    WorkerStarted,
)

pytestmark = pytest.mark.timeout(120)


def square(x):
    return x * x


def fail_first(path, value):
    """Fails its first attempt (recorded in ``path``), then returns ``value``."""
    p = Path(path)
    if not p.exists():
        p.write_text("1")
        raise ValueError("first attempt fails")
    return value


def crash_first(path, value):
    """Kills its worker on the first attempt (exit code 3), then returns ``value``."""
    p = Path(path)
    if not p.exists():
        p.write_text("1")
        os._exit(3)
    return value


def hang_on_one(x):
    if x == 1:
        time.sleep(1000)
    return x


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []
        self.threads: set[int] = set()

    def __call__(self, event: object) -> None:
        self.threads.add(threading.get_ident())
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def test_each_task_is_queued_then_started_then_finished_in_order():
    rec = Recorder()
    with corral.Pool(2) as pool:
        pool._events.subscribe(rec)
        assert pool.map(square, range(20), chunksize=3) == [x * x for x in range(20)]
    assert threading.get_ident() not in rec.threads  # delivered on the engine thread
    for pos in range(20):
        mine = [e for e in rec.events if getattr(e, "position", None) == pos]
        kinds = [type(e) for e in mine]
        assert kinds == [TaskQueued, TaskStarted, TaskFinished], kinds
        started, finished = mine[1], mine[2]
        assert started.attempt == 1 and started.worker in (0, 1) and started.pid > 0
        assert finished.status == corral.Status.OK and finished.error is None
        assert finished.key == pos
    # closing the pool retires each worker, after every task finished
    retired = rec.of(WorkerRetired)
    assert sorted(e.worker for e in retired) == [0, 1]
    assert rec.events[-2:] == retired


def test_a_retried_task_is_started_twice_with_a_retried_between(tmp_path):
    rec = Recorder()
    with corral.Pool(2) as pool:
        pool._events.subscribe(rec)
        report = pool.run(
            [corral.Task(fail_first, (str(tmp_path / "a"), "v"), key="a")],
            retries=1,
            backoff=0.01,
        )
    assert report.outcomes[0].value == "v"
    mine = [e for e in rec.events if getattr(e, "key", None) == "a"]
    assert [type(e) for e in mine] == [
        TaskQueued,
        TaskStarted,
        TaskRetried,
        TaskStarted,
        TaskFinished,
    ]
    assert [e.attempt for e in mine if isinstance(e, TaskStarted)] == [1, 2]
    retried = mine[2]
    assert retried.attempt == 1 and isinstance(retried.error, ValueError)
    assert mine[-1].status == corral.Status.OK


def test_a_worker_crash_gives_died_then_a_new_worker_started(tmp_path):
    rec = Recorder()
    with corral.Pool(2) as pool:
        pool._events.subscribe(rec)
        report = pool.run(
            [corral.Task(crash_first, (str(tmp_path / "c"), "v"), key="c")],
            retries=1,
            backoff=0.01,
        )
    assert report.outcomes[0].value == "v"
    died = rec.of(WorkerDied)
    assert len(died) == 1
    assert died[0].exitcode == 3 and died[0].signal is None and died[0].pid > 0
    after = rec.events[rec.events.index(died[0]) :]
    restarted = [e for e in after if isinstance(e, WorkerStarted)]
    assert restarted and restarted[0].worker == died[0].worker
    assert restarted[0].pid != died[0].pid
    retried = [e for e in after if isinstance(e, TaskRetried)]
    assert retried and isinstance(retried[0].error, corral.WorkerCrashed)


def test_a_subscriber_that_raises_is_logged_and_detached_and_the_run_completes(caplog):
    calls = []

    def bad(event):
        calls.append(event)
        raise RuntimeError("subscriber bug")

    rec = Recorder()
    with caplog.at_level(logging.ERROR, logger="corral"), corral.Pool(2) as pool:
        pool._events.subscribe(bad)
        pool._events.subscribe(rec)
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
    assert len(calls) == 1  # detached after the first event
    assert len(rec.of(TaskFinished)) == 10  # the other subscriber saw everything
    assert any("subscriber" in r.getMessage() for r in caplog.records)


def test_without_subscribers_no_event_is_built(monkeypatch):
    """Functional check of the zero-cost path: with nobody subscribed, no task event object
    is ever constructed (the emitting sites check ``Events.active`` first). Every Pool's own
    worker log (``_report.telemetry``) hears the rare events only: one WorkerStarted per
    worker, nothing per task."""
    built = []
    import corral._events as ev

    for cls in (TaskQueued, TaskStarted, TaskFinished, TaskRetried, WorkerStarted, WorkerDied):
        original = cls.__new__  # the events are NamedTuples: built by __new__

        def counting(kind, *a, _o=original, **k):
            built.append(kind.__name__)
            return _o(kind, *a, **k)

        monkeypatch.setattr(cls, "__new__", counting)
    with corral.Pool(2) as pool:
        assert not pool._events.active
        assert pool.map(square, range(50)) == [x * x for x in range(50)]
    assert built == ["WorkerStarted", "WorkerStarted"]
    assert ev.Events().active is False


def test_unsubscribe_stops_delivery():
    events = Events()
    got = []
    events.subscribe(got.append)
    events.emit(WorkerStarted(0, 1))
    events.unsubscribe(got.append)
    assert not events.active
    events.emit(WorkerStarted(0, 2))
    assert got == [WorkerStarted(0, 1)]


def test_a_recycled_worker_gives_recycled_then_a_new_worker_started():
    rec = Recorder()
    with corral.Pool(1, max_tasks_per_worker=2) as pool:
        pool._events.subscribe(rec)
        assert pool.map(square, range(6), chunksize=1) == [x * x for x in range(6)]
    recycled = rec.of(WorkerRecycled)
    assert len(recycled) >= 2
    first = rec.events.index(recycled[0])
    restarted = [e for e in rec.events[first:] if isinstance(e, WorkerStarted)]
    assert restarted and restarted[0].pid != recycled[0].pid


def test_a_timeout_gives_killed_then_the_task_finished_timeout():
    rec = Recorder()
    with corral.Pool(2) as pool:
        pool._events.subscribe(rec)
        report = pool.run(
            [corral.Task(hang_on_one, (x,), key=x) for x in range(3)], timeout=1.0, errors="return"
        )
    assert [o.status for o in report.outcomes][1] == corral.Status.TIMEOUT
    killed = rec.of(WorkerKilled)
    assert [k.reason for k in killed] == ["timeout"]
    finished = next(e for e in rec.of(TaskFinished) if e.key == 1)
    assert rec.events.index(killed[0]) < rec.events.index(finished)
    assert isinstance(finished.error, corral.TaskTimeout)
    assert not rec.of(WorkerDied)  # killed by the coordinator: not a death


def test_the_serial_backend_emits_the_same_task_events_on_the_callers_thread():
    rec = Recorder()
    with corral.Pool(1, backend="serial") as pool:
        pool._events.subscribe(rec)
        assert pool.map(square, range(5)) == [x * x for x in range(5)]
    assert rec.threads == {threading.get_ident()}
    for pos in range(5):
        kinds = [type(e) for e in rec.events if getattr(e, "position", None) == pos]
        assert kinds == [TaskQueued, TaskStarted, TaskFinished], kinds
    assert {e.worker for e in rec.of(TaskStarted)} == {-1}
