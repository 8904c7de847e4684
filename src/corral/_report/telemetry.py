"""Where a run's time went: the workers' lives (from the event stream) and the run's figures.

    engine thread                               caller thread (after the batch)
    ─────────────                               ───────────────────────────────
    Crew: WorkerStarted / Died / Killed /       Pool._run_batch ─► CollectSink.report
          Recycled / Retired, and any other       └─ Report(..., worker_spans=log.spans(a, b),
          rare event (ServiceStarted, ...)                       happenings=log.happenings(a, b))
      └─► Events ─► WorkerLog.on_event          Report.utilisation, .speedup, .concurrency(),
          (subscribed with tasks=False before     .worker_startup(), ... ─► run_figures here
           the Pool's first worker starts)

Ownership. A ``WorkerLog`` belongs to one Pool; the engine thread alone writes it (its
subscriber), under its lock; callers read copies. It hears only the rare events
(``Events.subscribe(tasks=False)``), one per worker start or end: it costs a bulk ``map``
nothing per task. Task-level figures come from ``Outcome.history`` (``Attempt``), which the
engine fills anyway; nothing here reaches into the engine.

When a worker was *ready* is not an event (the worker protocol has no ready message): a
worker's start-up is taken to end when the first attempt it ran started. At a pool's start,
Calls are sent as soon as a worker is started, so that is when it could first work; a worker
restarted while nothing was waiting for it shows a start-up that includes that wait.

Events this module does not know (a ``ServiceStarted`` from the services, say) are kept as
``Happening`` records with their fields, so the exports show them when they exist.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .._events import (
    TASK_EVENTS,
    WorkerDied,
    WorkerKilled,
    WorkerRecycled,
    WorkerRetired,
    WorkerStarted,
)
from .._outcome import Attempt, Outcome, Status

if TYPE_CHECKING:
    from .report import Report


class WorkerSpan(NamedTuple):
    """One worker process's life in a slot, as the coordinator saw it.

    ``started``/``ended``: ``time.time()`` when the coordinator started it and when it learnt
    it ended (None: still alive when the report was made). ``how``: ``"retired"``,
    ``"recycled"``, ``"died"``, ``"killed: timeout"``, ``"killed: cancelled"``, or None.
    ``exitcode``/``signal``: for a worker that died.
    """

    worker: int
    pid: int | None
    started: float
    ended: float | None = None
    how: str | None = None
    exitcode: int | None = None
    signal: int | None = None


class Happening(NamedTuple):
    """Any other rare event (``ServiceStarted``, ...): its type's name, when the coordinator
    heard it, and its fields."""

    kind: str
    when: float
    fields: dict[str, Any]


class WorkerStartup(NamedTuple):
    """How long a worker process took from being started to running its first task."""

    worker: int
    pid: int | None
    started: float
    ready: float | None  # the first attempt's start on this process; None: it ran none
    seconds: float | None


class WorkerLog:
    """The workers' lives in one Pool, from its event stream (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[WorkerSpan] = []
        self._open: dict[int, int] = {}  # worker slot -> index of its live span
        self._happenings: list[Happening] = []

    def on_event(self, event: Any) -> None:
        if isinstance(event, TASK_EVENTS):
            return
        now = time.time()
        with self._lock:
            if isinstance(event, WorkerStarted):
                self._end(event.worker, now, "replaced")  # if no end was heard
                self._open[event.worker] = len(self._spans)
                self._spans.append(WorkerSpan(event.worker, event.pid, now))
            elif isinstance(event, WorkerDied):
                self._end(event.worker, now, "died", event.exitcode, event.signal)
            elif isinstance(event, WorkerKilled):
                self._end(event.worker, now, f"killed: {event.reason}")
            elif isinstance(event, WorkerRecycled):
                self._end(event.worker, now, "recycled")
            elif isinstance(event, WorkerRetired):
                self._end(event.worker, now, "retired")
            else:
                asdict = getattr(event, "_asdict", None)  # the events are NamedTuples
                fields = dict(asdict()) if asdict is not None else dict(vars(event))
                self._happenings.append(Happening(type(event).__name__, now, fields))

    def _end(
        self,
        worker: int,
        now: float,
        how: str,
        exitcode: int | None = None,
        signal: int | None = None,
    ) -> None:
        at = self._open.pop(worker, None)
        if at is not None:
            span = self._spans[at]
            if exitcode is not None and exitcode < 0:
                exitcode = None
            self._spans[at] = span._replace(ended=now, how=how, exitcode=exitcode, signal=signal)

    def spans(self, start: float, end: float) -> tuple[WorkerSpan, ...]:
        """The worker lives that overlap ``[start, end]``."""
        with self._lock:
            return tuple(
                s for s in self._spans if s.started <= end and (s.ended is None or s.ended >= start)
            )

    def happenings(self, start: float, end: float) -> tuple[Happening, ...]:
        with self._lock:
            return tuple(h for h in self._happenings if start <= h.when <= end)


# -- the run's figures, from a Report ------------------------------------------------------


def attempts(outcomes: Sequence[Outcome]) -> Iterator[tuple[Outcome, int, Attempt]]:
    """Every attempt of every outcome, with its number (1 for the first)."""
    for outcome in outcomes:
        for number, attempt in enumerate(outcome.history, 1):
            yield outcome, number, attempt


def timed(outcomes: Sequence[Outcome]) -> Iterator[tuple[Outcome, int, Attempt, float, float]]:
    """The attempts whose start and end are known, with them."""
    for outcome, number, attempt in attempts(outcomes):
        started, finished = attempt.started, attempt.finished
        if started is not None and finished is not None:
            yield outcome, number, attempt, started, max(started, finished)


def busy_seconds(report: Report) -> float:
    return math.fsum(f - s for _, _, _, s, f in report._timed)


def busy_by_worker(report: Report) -> dict[int, float]:
    busy: dict[int, float] = {}
    for _, _, attempt, s, f in report._timed:
        if attempt.worker is not None:
            busy[attempt.worker] = busy.get(attempt.worker, 0.0) + f - s
    return busy


def tasks_run(report: Report) -> int:
    """Tasks that ran at least once in this run (not cached, not skipped or cancelled
    before they started)."""
    return sum(1 for o in report.outcomes if o.history and o.status is not Status.CACHED)


def worker_startup(report: Report) -> list[WorkerStartup]:
    """Each worker process of the run: when it was started, when it first ran a task."""
    first: dict[int | None, float] = {}
    for _, _, attempt, s, _ in report._timed:
        if attempt.pid not in first or s < first[attempt.pid]:
            first[attempt.pid] = s
    out = []
    for span in report.worker_spans:
        ready = first.get(span.pid)
        if ready is not None and ready < span.started:
            ready = None  # a pid reused by the OS, from an earlier process
        seconds = ready - span.started if ready is not None else None
        out.append(WorkerStartup(span.worker, span.pid, span.started, ready, seconds))
    return out


def run_window(report: Report) -> tuple[float, float]:
    """``(start, end)`` of the run in ``time.time()``: from its submission for ``wall``."""
    start = report.started
    if start is None:
        times = [s for _, _, _, s, _ in report._timed]
        start = min(times) if times else 0.0
    return start, start + report.wall_seconds


def idle_seconds(report: Report) -> dict[int, float]:
    """For each worker slot: seconds of the run it was neither running a task nor starting."""
    start, end = run_window(report)
    busy = busy_by_worker(report)
    starting: dict[int, float] = {}
    for s in report._startups:
        if s.ready is not None:
            overlap = min(s.ready, end) - max(s.started, start)
            starting[s.worker] = starting.get(s.worker, 0.0) + max(0.0, overlap)
    slots = sorted(set(busy) | set(starting) | set(range(report.workers)))
    wall = end - start
    return {w: max(0.0, wall - busy.get(w, 0.0) - starting.get(w, 0.0)) for w in slots}


def concurrency(report: Report, bins: int | None = None) -> list[tuple[float, float]]:
    """How many tasks ran at once over the run, time in seconds from the run's start.

    ``bins=None``: the exact step function, ``[(t, running from t on), ...]`` at every
    change. ``bins=n``: ``n`` equal slices of the run, ``[(slice start, mean running), ...]``.
    """
    start, end = run_window(report)
    edges: list[tuple[float, int]] = []
    for _, _, _, s, f in report._timed:
        if f > s:
            edges.append((s - start, 1))
            edges.append((f - start, -1))
    edges.sort()
    steps: list[tuple[float, float]] = []
    running = 0
    for t, delta in edges:
        running += delta
        if steps and steps[-1][0] == t:
            steps[-1] = (t, running)
        else:
            steps.append((t, running))
    if bins is None:
        return steps
    return _binned(steps, max(end - start, steps[-1][0] if steps else 0.0), bins)


def _binned(steps: list[tuple[float, float]], span: float, bins: int) -> list[tuple[float, float]]:
    """The mean of a step function over ``bins`` equal slices of ``[0, span]``."""
    if bins < 1:
        raise ValueError(f"bins must be a positive integer, not {bins!r}")
    width = span / bins if span > 0 else 1.0
    area = [0.0] * bins
    for (t, level), (t_next, _) in zip(steps, [*steps[1:], (span, 0.0)], strict=False):
        if level <= 0 or t_next <= t:
            continue
        first, last = int(t / width), min(bins - 1, int(t_next / width))
        for b in range(max(0, first), last + 1):
            lo, hi = max(t, b * width), min(t_next, (b + 1) * width)
            if hi > lo:
                area[b] += level * (hi - lo)
    return [(b * width, area[b] / width) for b in range(bins)]


def slowest(report: Report, n: int = 10) -> list[Outcome]:
    """The ``n`` tasks whose last attempt took longest, longest first."""
    timed_outcomes = [o for o in report.outcomes if o.duration is not None]
    timed_outcomes.sort(key=lambda o: o.duration or 0.0, reverse=True)
    return timed_outcomes[:n]
