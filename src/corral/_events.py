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
    Crew.stop_all, retired_all WorkerRetired┤
    Crew.ready (Ready msg) ── WorkerReady ┤
    Forwarding (a service's   ServiceStarted/Stopped
      record from a worker) ──────────────┤
    Engine.accept / complete  BatchStarted/Finished

Each event is emitted from the one place its transition happens: ``TaskFinished`` from the two
``Batch`` methods that call ``Positions.finish`` (every final outcome, cached ones included),
``TaskStarted`` when a Call is recorded in its slot and sent, the worker events where ``Crew``
starts, recycles, loses or retires a worker. The order subscribers see is the order the engine
thread made the transitions: for one task, ``TaskQueued`` < ``TaskStarted`` (< ``TaskRetried``
< ``TaskStarted`` ...) < ``TaskFinished``. A position that never ran (cancelled while waiting,
cached, skipped after a failed dependency) has ``TaskFinished`` with no ``TaskStarted``.

A worker says it is ready with a ``Ready`` message (``WorkerReady``, from ``Crew.ready``).
A Service runs in a worker (or the caller): it logs its start and stop on the logger
``corral.services`` with a ``corral_service`` attribute, the worker's log forwarder always
sends those records (``_worker.forward``), and the coordinator's ``_forwarding`` turns them
into ``ServiceStarted``/``ServiceStopped``: no message kind of its own, nothing when no
Service runs. A Service started in the caller's own process logs the same records but makes no
event (no pool is involved).

Cost. ``Events.active`` is a plain bool, true only while someone takes the per-task events
(``FREQUENT``: queued, started, finished); ``Events.rare`` while anyone subscribes (the
other kinds, a few per retry, worker, service or batch). Every emitting site checks its flag
before building an event, so a run with no subscribers pays one attribute read per Call (not
per task) and builds nothing. A subscriber that asks for some kinds only (``kinds=``: the
progress display takes retries and workers) or for every kind but the per-task ones
(``tasks=False``: the worker log of ``_report.telemetry``, subscribed by every Pool before its
workers start) leaves the per-task events unbuilt: it costs a bulk ``map`` nothing per task.
Per-Call events (``CallStarted``, for the journal) have a channel of their own
(``subscribe_calls``).

Subscribers. ``pool._events.subscribe(fn)`` (internal API; ``unsubscribe`` to stop). ``fn`` is
called on the engine thread (with the serial backend: the caller's thread, which drives the
engine), synchronously, for every event after it subscribed: it must not
block, and must be quick, since while it runs no answer is read and no work is sent. A slow
subscriber (a journal that writes to disk, telemetry that talks to a network) hands each
event to its own queue and does its work on its own thread (``queue.SimpleQueue.put`` is all
that runs on the engine thread); it flushes that thread when the pool closes. A subscriber
that raises is logged (logger ``corral``) and detached; the run goes on.

A subscriber can only be added once the Pool exists, so it misses the first
``WorkerStarted`` of each slot (corral's own story logger, ``_report.story``, is added by the
engine before the workers start). Measured: a no-op subscriber costs ~2.7 µs per event (three
per task), i.e. a warm ``pool.map(abs, range(200000))`` goes from ~0.08 s to ~1.6 s; that is
why progress counts finished tasks through the per-batch ``Observer`` advanced once per
Call, and subscribes only to the rare kinds (retries, workers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, get_args

from ._outcome import Outcome, Status

log = logging.getLogger("corral")

# The events are NamedTuples (immutable, typed, ``_asdict``), not frozen dataclasses: a frozen
# dataclass compiles six methods from source at every import (~1 ms each class, 15 classes on
# the path of every first ``corral.map``), a NamedTuple one (issue 15, start-up).


class TaskQueued(NamedTuple):
    """A task can run: its batch was accepted, or the batch was extended with it."""

    batch: int  # id() of the batch: tells apart the batches of one pool
    position: int
    key: Any


class TaskStarted(NamedTuple):
    """An attempt was sent to a worker (it may wait behind a Call already there)."""

    batch: int
    position: int
    key: Any
    worker: int
    pid: int | None
    attempt: int  # 1 for the first attempt


class TaskRetried(NamedTuple):
    """An attempt failed and the task will run again (after ``delay`` seconds)."""

    batch: int
    position: int
    key: Any
    attempt: int  # the attempt that failed
    error: BaseException
    delay: float


class TaskFinished(NamedTuple):
    """The task's final outcome (given exactly once). ``error`` is ``None`` for ``ok``.
    ``outcome``: the whole Outcome of a task that did not succeed, or a ``cached`` one; None
    for ``ok`` (a chunk's Outcomes are built only when a Report asks for them)."""

    batch: int
    position: int
    key: Any
    status: Status
    error: BaseException | None
    outcome: Outcome | None = None


class WorkerStarted(NamedTuple):
    """A worker process was started (``seconds``: what starting it took on the engine
    thread); it is ready for Calls at ``WorkerReady``."""

    worker: int
    pid: int | None
    seconds: float = 0.0


class WorkerReady(NamedTuple):
    """The worker has started up (imports, initializer, fixtures unpickled): ``seconds``
    from the start of its process to now (its ``Ready`` message)."""

    worker: int
    pid: int | None
    seconds: float


class WorkerRecycled(NamedTuple):
    """Past ``max_tasks_per_worker`` or ``max_worker_memory``: retired, a new one starts."""

    worker: int
    pid: int | None
    rss: int


class WorkerDied(NamedTuple):
    """The worker process ended unasked. ``signal`` is set when a signal killed it."""

    worker: int
    pid: int | None
    exitcode: int | None
    signal: int | None


class WorkerKilled(NamedTuple):
    """The coordinator killed the worker: a task ran past its timeout (``reason``
    "timeout"), its batch was cancelled ("cancelled"), or available memory fell below half
    of ``min_free_memory`` ("memory", its tasks requeued). A new worker starts next."""

    worker: int
    pid: int | None
    reason: str


class WorkerRetired(NamedTuple):
    """The worker was stopped for good: the pool closes (the engine loop ends; not with the
    serial backend, whose caller drives the engine), or workers cannot be started."""

    worker: int
    pid: int | None


class CallStarted(NamedTuple):
    """A Call (one or more tasks of one batch) was sent to a worker. One event per Call, to
    the ``subscribe_calls`` subscribers only: a subscriber that records starts in bulk (the
    journal) pays per Call, not per task, and without one nothing is built."""

    batch: int
    positions: Sequence[int]
    worker: int
    pid: int | None
    attempts: dict[int, int] | None  # position → attempt, for those past their first
    time: float


class ServiceStarted(NamedTuple):
    """A ``corral.Service`` is ready, in worker ``worker`` (-1: this process), ``seconds``
    after its start began (readiness wait and port retries included)."""

    worker: int
    program: str
    port: int | None
    pid: int | None
    seconds: float | None = None


class ServiceStopped(NamedTuple):
    worker: int
    program: str
    port: int | None
    pid: int | None


class BatchStarted(NamedTuple):
    """The engine accepted a batch (``map``, ``imap``, ``run``, ``submit``): ``tasks`` it
    has so far (``imap`` adds more as it reads its input), on ``workers`` workers started
    by ``start_method`` (None: in this process)."""

    batch: int
    tasks: int
    workers: int
    start_method: str | None


class BatchFinished(NamedTuple):
    """Every task of the batch is final; ``wall``: seconds since ``BatchStarted``."""

    batch: int
    tasks: int
    wall: float


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
    | WorkerReady
    | ServiceStarted
    | ServiceStopped
    | BatchStarted
    | BatchFinished
)
Subscriber = Callable[[Any], None]


FREQUENT: frozenset[type] = frozenset({TaskQueued, TaskStarted, TaskFinished})
"""The per-task events (several per task): built only while a subscriber takes them
(``Events.active``). Every other kind is rare (per retry, worker, service or batch) and is
built while anyone subscribes (``Events.rare``)."""

TASK_EVENTS = (TaskQueued, TaskStarted, TaskRetried, TaskFinished)
"""Every event about one task (a retry included), for ``isinstance``."""

RARE: frozenset[type] = frozenset(get_args(Event)) - FREQUENT
"""What ``subscribe(fn, tasks=False)`` delivers."""


class Events:
    """One per engine: the subscribers, and the flags that emitting sites check first.

    ``subscribe(fn, kinds=...)`` delivers only events of those types: a subscriber of rare
    kinds only (the progress display: retries and workers) leaves ``active`` false, so the
    per-task events are still not built."""

    def __init__(self) -> None:
        self.active = False  # someone takes the per-task events (FREQUENT)
        self.rare = False  # someone subscribes at all: the rare events are built
        self._subscribers: list[tuple[Subscriber, frozenset[type] | None]] = []
        # Per-Call events (``CallStarted``), a channel of their own: see ``subscribe_calls``.
        self.calls_active = False
        self._call_subscribers: list[Subscriber] = []

    def subscribe(
        self, fn: Subscriber, kinds: Iterable[type] | None = None, *, tasks: bool = True
    ) -> None:
        """Call ``fn(event)`` for every event from now on: of ``kinds`` only when given; with
        ``tasks=False``, for every kind but the per-task ones (``FREQUENT``)."""
        if kinds is None and not tasks:
            kinds = RARE
        # A new list, never changed in place: emit may be iterating the old one.
        wanted = frozenset(kinds) if kinds is not None else None
        self._subscribers = [*self._subscribers, (fn, wanted)]
        self._flags()

    def unsubscribe(self, fn: Subscriber) -> None:
        self._subscribers = [(s, k) for s, k in self._subscribers if s != fn]
        self._flags()

    def _flags(self) -> None:
        subs = self._subscribers
        self.active = any(k is None or k & FREQUENT for _, k in subs)
        self.rare = bool(subs)

    def emit(self, event: Event) -> None:
        kind = type(event)
        for fn, kinds in self._subscribers:
            if kinds is not None and kind not in kinds:
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
