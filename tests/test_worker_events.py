"""The worker, service and batch events of the stream (issue 10 item 3): a worker started
(pid, start-up seconds) and ready; a Service started and stopped in a worker, told to the
coordinator; a batch started and finished."""

from __future__ import annotations

import sys

import pytest

import corral
from corral._events import (
    BatchFinished,
    BatchStarted,
    ServiceStarted,
    ServiceStopped,
    TaskFinished,
    WorkerReady,
    WorkerStarted,
)

pytestmark = pytest.mark.timeout(120)


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []

    def __call__(self, event: object) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def serve_once(x):
    argv = [sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
    with corral.Service(argv, ready="tcp") as service:
        return service.port, service.pid


def test_a_replacement_worker_is_started_then_ready_with_its_start_up_time():
    rec = Recorder()
    with corral.Pool(1, max_tasks_per_worker=1) as pool:
        pool._events.subscribe(rec)
        pool.map(abs, [1, 2])
    started, ready = rec.of(WorkerStarted), rec.of(WorkerReady)
    assert started and ready
    first = started[0]
    assert first.seconds >= 0 and first.pid > 0
    matching = [r for r in ready if r.pid == first.pid]
    assert len(matching) == 1 and matching[0].seconds >= first.seconds
    assert rec.events.index(first) < rec.events.index(matching[0])


def test_a_service_in_a_worker_is_told_to_the_coordinator_as_events():
    rec = Recorder()
    with corral.Pool(1) as pool:
        pool._events.subscribe(rec)
        [(port, pid)] = pool.map(serve_once, [1])
    (started,) = rec.of(ServiceStarted)
    (stopped,) = rec.of(ServiceStopped)
    assert (started.port, started.pid, started.worker) == (port, pid, 0)
    assert (stopped.port, stopped.pid) == (port, pid)
    assert "http.server" in started.program or "python" in started.program
    assert rec.events.index(started) < rec.events.index(stopped)
    finished = rec.of(TaskFinished)[0]
    assert rec.events.index(stopped) < rec.events.index(finished)


def test_service_events_come_even_without_log_forwarding():
    rec = Recorder()
    with corral.Pool(1, forward_logging=False) as pool:
        pool._events.subscribe(rec)
        pool.map(serve_once, [1])
    assert len(rec.of(ServiceStarted)) == 1 and len(rec.of(ServiceStopped)) == 1


@pytest.mark.parametrize("backend", ["process", "serial"])
def test_a_batch_is_started_then_finished(backend):
    rec = Recorder()
    with corral.Pool(2, backend=backend) as pool:
        pool._events.subscribe(rec)
        pool.map(abs, range(5))
    (started,) = rec.of(BatchStarted)
    (finished,) = rec.of(BatchFinished)
    assert started.tasks == 5 and finished.tasks == 5 and finished.wall >= 0
    assert started.workers == (2 if backend == "process" else 1)
    assert (started.start_method is None) == (backend == "serial")
    tasks = [i for i, e in enumerate(rec.events) if type(e).__name__.startswith("Task")]
    assert rec.events.index(started) < min(tasks) and max(tasks) < rec.events.index(finished)
