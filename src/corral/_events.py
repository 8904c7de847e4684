"""The event stream: what happens in a run, as small typed events, to subscribers in order.

    engine thread                                   subscribers (called on the engine thread)
    ─────────────                                   ─────────────────────────────────────────
    Engine.accept / extend ─ TaskQueued ──┐
    Dispatcher._send ─────── TaskStarted ─┤
    Failures.attempt_failed ─ TaskRetried ┤
    Batch.finish_ok / _finish TaskFinished┼─► Events.emit ─► fn(event) for fn in subscribers
    Crew._start ──────────── WorkerStarted┤                  (one that raises: logged, detached)
    Crew.recycle_if_due ─── WorkerRecycled┤
    Crew.on_died ──────────── WorkerDied ─┤
    Crew timeout / _stop ──── WorkerKilled┤
    Crew.stop_all, retired_all WorkerRetired┘

Each event is emitted from the one place its transition happens: ``TaskFinished`` from the two
``Batch`` methods that call ``Positions.finish`` (every final outcome, cached ones included),
``TaskStarted`` when a Call is recorded in its slot and sent, the worker events where ``Crew``
starts, recycles, loses or retires a worker. The order subscribers see is the order the engine
thread made the transitions: for one task, ``TaskQueued`` < ``TaskStarted`` (< ``TaskRetried``
< ``TaskStarted`` ...) < ``TaskFinished``. A position that never ran (cancelled while waiting,
cached, skipped after a failed dependency) has ``TaskFinished`` with no ``TaskStarted``.

Not yet events: a worker being *ready* (the worker protocol has no ready message; its first
answer is the first sign of life), and services starting/stopping: services live in the
workers (``_services.service``), so their events need a worker-to-coordinator message first.

Cost. ``Events.active`` is a plain bool, true only while someone subscribes; every emitting
site checks it before building an event, so a run with no subscribers pays one attribute
read per Call (not per task) and builds nothing.

Subscribers. ``pool._events.subscribe(fn)`` (internal API; ``unsubscribe`` to stop). ``fn`` is
called on the engine thread (with the serial backend: the caller's thread, which drives the
engine), synchronously, for every event after it subscribed: it must not
block, and must be quick, since while it runs no answer is read and no work is sent. A slow
subscriber (a journal that writes to disk, telemetry that talks to a network) hands each
event to its own queue and does its work on its own thread (``queue.SimpleQueue.put`` is all
that runs on the engine thread); it flushes that thread when the pool closes. A subscriber
that raises is logged (logger ``corral``) and detached; the run goes on.

A subscriber can only be added once the Pool exists, so it misses the first
``WorkerStarted`` of each slot. Measured: a no-op subscriber costs ~2.7 µs per event (three
per task), i.e. a warm ``pool.map(abs, range(200000))`` goes from ~0.08 s to ~1.6 s; that is
why progress stays a per-batch ``Observer`` advanced once per Call, not a subscriber.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._outcome import Status

log = logging.getLogger("corral")


@dataclass(frozen=True)
class TaskQueued:
    """A task can run: its batch was accepted, or the batch was extended with it."""

    batch: int  # id() of the batch: tells apart the batches of one pool
    position: int
    key: Any


@dataclass(frozen=True)
class TaskStarted:
    """An attempt was sent to a worker (it may wait behind a Call already there)."""

    batch: int
    position: int
    key: Any
    worker: int
    pid: int | None
    attempt: int  # 1 for the first attempt


@dataclass(frozen=True)
class TaskRetried:
    """An attempt failed and the task will run again (after ``delay`` seconds)."""

    batch: int
    position: int
    key: Any
    attempt: int  # the attempt that failed
    error: BaseException
    delay: float


@dataclass(frozen=True)
class TaskFinished:
    """The task's final outcome (given exactly once). ``error`` is ``None`` for ``ok``."""

    batch: int
    position: int
    key: Any
    status: Status
    error: BaseException | None


@dataclass(frozen=True)
class WorkerStarted:
    worker: int
    pid: int | None


@dataclass(frozen=True)
class WorkerRecycled:
    """Past ``max_tasks_per_worker`` or ``max_worker_memory``: retired, a new one starts."""

    worker: int
    pid: int | None
    rss: int


@dataclass(frozen=True)
class WorkerDied:
    """The worker process ended unasked. ``signal`` is set when a signal killed it."""

    worker: int
    pid: int | None
    exitcode: int | None
    signal: int | None


@dataclass(frozen=True)
class WorkerKilled:
    """The coordinator killed the worker: a task ran past its timeout (``reason``
    "timeout"), its batch was cancelled ("cancelled"), or available memory fell below half
    of ``min_free_memory`` ("memory", its tasks requeued). A new worker starts next."""

    worker: int
    pid: int | None
    reason: str


@dataclass(frozen=True)
class WorkerRetired:
    """The worker was stopped for good: the pool closes (the engine loop ends; not with the
    serial backend, whose caller drives the engine), or workers cannot be started."""

    worker: int
    pid: int | None


Event = (
    TaskQueued
    | TaskStarted
    | TaskRetried
    | TaskFinished
    | WorkerStarted
    | WorkerRecycled
    | WorkerDied
    | WorkerKilled
    | WorkerRetired
)
Subscriber = Callable[[Any], None]


class Events:
    """One per engine: the subscribers, and the flag that emitting sites check first."""

    def __init__(self) -> None:
        self.active = False
        self._subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> None:
        # A new list, never changed in place: emit may be iterating the old one.
        self._subscribers = [*self._subscribers, fn]
        self.active = True

    def unsubscribe(self, fn: Subscriber) -> None:
        self._subscribers = [s for s in self._subscribers if s != fn]
        self.active = bool(self._subscribers)

    def emit(self, event: Event) -> None:
        for fn in self._subscribers:
            try:
                fn(event)
            except Exception:
                log.exception("corral: event subscriber %r raised; detached", fn)
                self.unsubscribe(fn)
