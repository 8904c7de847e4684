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

Cost. ``Events.active`` is a plain bool, true only while someone subscribes to the task
events; every site emitting a task event checks it before building the event, so a run with
no such subscriber pays one attribute read per Call (not per task) and builds nothing.
``Events.listened`` is true while anyone subscribes: the sites of the rare events (a worker's
start, death, recycling, retirement; one per worker, not per task) check it instead. A
subscriber that asks only for those (``subscribe(fn, tasks=False)``: the worker log of
``_report.telemetry``, subscribed by every Pool before its workers start) costs a bulk
``map`` nothing per task.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._outcome import Outcome, Status

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
    """The task's final outcome (given exactly once). ``error`` is ``None`` for ``ok``.
    ``outcome``: the whole Outcome of a task that did not succeed, or a ``cached`` one; None
    for ``ok`` (a chunk's Outcomes are built only when a Report asks for them)."""

    batch: int
    position: int
    key: Any
    status: Status
    error: BaseException | None
    outcome: Outcome | None = None


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
    "timeout"), or its batch was cancelled ("cancelled"). A new worker starts next."""

    worker: int
    pid: int | None
    reason: str


@dataclass(frozen=True)
class WorkerRetired:
    """The worker was stopped for good: the pool closes (the engine loop ends; not with the
    serial backend, whose caller drives the engine), or workers cannot be started."""

    worker: int
    pid: int | None


@dataclass(frozen=True)
class CallStarted:
    """A Call (one or more tasks of one batch) was sent to a worker. One event per Call, to
    the ``subscribe_calls`` subscribers only: a subscriber that records starts in bulk (the
    journal) pays per Call, not per task, and without one nothing is built."""

    batch: int
    positions: Sequence[int]
    worker: int
    pid: int | None
    attempts: dict[int, int] | None  # position → attempt, for those past their first
    time: float


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


TASK_EVENTS = (TaskQueued, TaskStarted, TaskRetried, TaskFinished)
"""The per-task events: only subscribers that asked for them (the default) are given them."""


class Events:
    """One per engine: the subscribers, and the flags that emitting sites check first
    (``active``: someone wants the task events; ``listened``: someone wants any event)."""

    def __init__(self) -> None:
        self.active = False
        self.listened = False
        self._subscribers: list[Subscriber] = []
        self._rare_only: frozenset[Subscriber] = frozenset()
        # Per-Call events (``CallStarted``), a channel of their own: see ``subscribe_calls``.
        self.calls_active = False
        self._call_subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber, *, tasks: bool = True) -> None:
        """Call ``fn(event)`` for every event from now on; with ``tasks=False``, for every
        event but the per-task ones (``TASK_EVENTS``), which then cost the run nothing."""
        # A new list, never changed in place: emit may be iterating the old one.
        self._subscribers = [*self._subscribers, fn]
        if not tasks:
            self._rare_only = self._rare_only | {fn}
        self._update()

    def unsubscribe(self, fn: Subscriber) -> None:
        self._subscribers = [s for s in self._subscribers if s != fn]
        self._rare_only = self._rare_only - {fn}
        self._update()

    def _update(self) -> None:
        self.listened = bool(self._subscribers)
        self.active = any(s not in self._rare_only for s in self._subscribers)

    def emit(self, event: Event) -> None:
        rare_only = self._rare_only
        per_task = bool(rare_only) and isinstance(event, TASK_EVENTS)
        for fn in self._subscribers:
            if per_task and fn in rare_only:
                continue
            try:
                fn(event)
            except Exception:
                log.exception("corral: event subscriber %r raised; detached", fn)
                self.unsubscribe(fn)

    def subscribe_calls(self, fn: Subscriber) -> None:
        """Receive ``CallStarted`` (one per Call), not the per-task events; the same rules
        as ``subscribe`` (engine thread, quick, detached when it raises)."""
        self._call_subscribers = [*self._call_subscribers, fn]
        self.calls_active = True

    def unsubscribe_calls(self, fn: Subscriber) -> None:
        self._call_subscribers = [s for s in self._call_subscribers if s != fn]
        self.calls_active = bool(self._call_subscribers)

    def emit_call(self, event: CallStarted) -> None:
        for fn in self._call_subscribers:
            try:
                fn(event)
            except Exception:
                log.exception("corral: call subscriber %r raised; detached", fn)
                self.unsubscribe_calls(fn)
