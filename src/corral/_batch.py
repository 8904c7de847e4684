"""The coordinator's record of one submitted group of tasks, and where its results go.

A ``Batch`` is what ``map``, ``imap``, ``run`` and ``submit`` each hand to the engine. It holds the
items, hands out chunks of positions to dispatch, counts attempts, and knows when it is done.
Where finished results go is the batch's ``Sink`` (the kinds are in ``_sinks``).

Owned by the engine thread (the only writer once submitted). The caller's thread only waits on
``done_event`` and reads the sink after it is set.

Where each position is in its life (new, waiting, running, backing off, final) and which run
next is owned by the batch's ``Positions`` (``_positions``, where the transitions are drawn);
the batch decides how many go together (chunk sizes, from measured durations) and turns each
final state into an outcome for its sink and observer. A batch whose tasks declare locks,
resources, memory, dependencies or cost has a ``Scheduler`` (``_scheduler``), which
``Positions`` asks what may start. Positions given up front (``given``: an earlier run's
outcomes) end ``cached`` when the engine accepts the batch, before anything is dispatched.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from ._errors import TaskSkipped
from ._events import Events, TaskFinished
from ._items import GrowingItems
from ._messages import Result
from ._options import RunOptions
from ._outcome import Outcome, Status
from ._positions import CACHED, CANCELLED, FAILED, OK, Positions
from ._reasons import ended
from ._record import Record
from ._scheduler import Scheduler
from ._survival import relative_limit

CHUNK_TARGET_SECONDS = 0.1
"""Longest a chunk should take once task durations are known: short enough to balance the
last tasks across workers, long enough that the pipe round trip (~100 µs) stays negligible."""

CHUNK_FLOOR_SECONDS = 0.0005
"""Shortest worthwhile chunk, a few round trips' worth: below it the pipe costs more than
the tasks, so the tail of a batch is not split further."""

SCHEDULED_CHUNK_SECONDS = 0.005
"""Longest a Call of scheduled tasks may take. The tasks of one Call hold their locks and
resources until the whole Call returns, so only tasks far shorter than a round trip's worth
of coordinator work are grouped (one by one otherwise)."""


class OkRecord(Record):
    """Successful items of one Result: ``positions[i]`` is the item at ``offsets[i]``.
    ``worker``: what ``Outcome.worker`` says: the slot that ran them, or -1 in the calling
    process."""

    __slots__ = ("positions", "offsets", "result", "worker", "pid", "attempts")  # noqa: RUF023

    def __init__(
        self,
        positions: Sequence[int],
        offsets: Sequence[int] | None,
        result: Result,
        worker: int,
        pid: int | None,
        attempts: dict[int, int] | None,
    ) -> None:
        self.positions = positions
        self.offsets = offsets
        self.result = result
        self.worker = worker
        self.pid = pid
        self.attempts = attempts


class Sink(Protocol):
    def claim(self, pos: int) -> bool:
        """Whether ``pos`` may start (False: it was cancelled by its caller)."""
        ...

    def ok(self, positions: Sequence[int], values: list[Any], record: OkRecord) -> None: ...

    def failed(self, pos: int, outcome: Outcome) -> None: ...

    def given(self, pos: int, outcome: Outcome) -> None:
        """``pos`` is ``cached``: its outcome was given up front."""
        ...

    def close(self) -> None:
        """The batch is done: every position is final."""
        ...


class Observer(Protocol):
    """Told as a batch's tasks reach their final state (progress). Called on the engine thread;
    must be quick and must not raise. ``groups``: each finished task's group, when the batch
    has groups. ``n_failed`` counts every unsuccessful end except ``cancelled`` (Ctrl-C,
    close), which is ``n_cancelled``: those tasks did not run to an end. ``n_cached``: taken
    from an earlier run (``given``), told before anything runs."""

    def advance(
        self,
        n_ok: int,
        n_failed: int,
        groups: list[str | None] | None,
        n_cancelled: int = 0,
        n_cached: int = 0,
    ) -> None: ...


class Batch:
    def __init__(
        self,
        items: list[Any] | dict[int, Any],
        *,
        fn_ids: frozenset[int],
        fn_id: int,
        star: bool,
        options: RunOptions,
        sink: Sink,
        keys: Sequence[Any] | None = None,
        timeouts: Sequence[float | None] | None = None,
        retries: Sequence[int | None] | None = None,
        closed: bool = True,
        observer: Observer | None = None,
        scheduler: Scheduler | None = None,
        groups: Sequence[str | None] | None = None,
        given: Mapping[int, Outcome] | None = None,
    ) -> None:
        # a growing batch's items (given as a dict by position): by part (``_items``)
        self.items: list[Any] | GrowingItems = (
            items if isinstance(items, list) else GrowingItems([items[p] for p in sorted(items)])
        )
        self.fn_ids = fn_ids
        self.fn_id = fn_id
        self.star = star
        self.options = options
        self.sink = sink
        self.keys = keys
        self.timeouts = timeouts
        self.retries = retries
        self.observer = observer
        self.scheduler = scheduler
        self.groups = groups
        self.has_timeouts = options.timeout is not None or (
            timeouts is not None and any(t is not None for t in timeouts)
        )
        self.positions = Positions(len(items), scheduler)
        self.has_ready = self.positions.has_ready  # asked once per dispatch: no extra call
        self.given = self._cached(given or {})
        for pos in self.given:
            self.positions.give(pos)
        self.closed = closed
        self.sink_claims: bool = getattr(sink, "claims", False)
        self.delivered = 0  # final outcomes handed to the sink: one per final position
        self.one_per_call = False  # set by requeue_one_by_one
        self.done_event = threading.Event()
        self._work_seconds = 0.0
        self._work_items = 0
        self.events: Events | None = None  # the engine's, set when it accepts the batch
        # When positions became ready (Attempt.queued): the batch's submission; for an
        # imap's later input, when each part was read; for a retry, when its back-off ends.
        self.queued_at = time.time()
        self._parts: list[tuple[int, float]] | None = None  # (first position, when)
        self.retry_queued: dict[int, float] = {}
        # Pickled argument bytes of the Calls sent so far, and their items (engine thread;
        # imap's feeder reads them to size its window: see ``_streaming._imap_window``).
        self.argument_bytes = 0
        self.argument_items = 0
        # the shortest worthwhile chunk, in seconds: raised by the engine for backends whose
        # round trip is longer than a pipe's (``Capabilities.call_floor_seconds``)
        self.call_floor = CHUNK_FLOOR_SECONDS
        # survival (``_survival``): timeout="3x"'s median; why it drained (``Survival.drain``)
        self.relative = relative_limit(options.timeout, options.timeout_floor)
        self.drained: str | None = None

    @property
    def n(self) -> int:
        return self.positions.n

    @property
    def cancelled(self) -> bool:
        return self.positions.stopped

    # -- what each position is ------------------------------------------------------------
    def key_of(self, pos: int) -> Any:
        if self.keys is None:
            return pos
        key = self.keys[pos]
        return pos if key is None else key

    def timeout_of(self, pos: int) -> float | None:
        if self.timeouts is not None and self.timeouts[pos] is not None:
            return self.timeouts[pos]
        if self.relative is not None:
            return self.relative.limit()
        timeout = self.options.timeout  # seconds or None (a relative one is ``self.relative``)
        return timeout if isinstance(timeout, (int, float)) else None

    def retries_of(self, pos: int) -> int:
        if self.retries is not None and self.retries[pos] is not None:
            return self.retries[pos]  # type: ignore[return-value]
        return self.options.retries

    def group_of(self, pos: int) -> str | None:
        return self.groups[pos] if self.groups is not None else None

    def queued_of(self, pos: int) -> float:
        """When position ``pos`` became ready for its current attempt (``Attempt.queued``)."""
        if self.retry_queued:
            when = self.retry_queued.get(pos)
            if when is not None:
                return when
        parts = self._parts
        if parts is None or pos < parts[0][0]:
            return self.queued_at
        return parts[bisect_right(parts, (pos, math.inf)) - 1][1]

    def attempts_of(self, pos: int) -> int:
        return self.positions.attempts(pos)

    def _cached(self, given: Mapping[int, Outcome]) -> dict[int, Outcome]:
        """The outcomes given up front, as ``cached`` ones with this batch's key and group
        (an earlier run's ``ok`` or failure; not ``cancelled``: that task did not end)."""
        cached = {}
        n, CACHED_ = self.n, Status.CACHED
        for pos, outcome in given.items():
            if not 0 <= pos < n:
                raise ValueError(f"an outcome given for position {pos}; the batch has {n}")
            if outcome.status is Status.CANCELLED:
                raise ValueError(f"position {pos}: a cancelled outcome cannot be given")
            key, group = self.key_of(pos), self.group_of(pos)
            if outcome.status is CACHED_ and outcome.key == key and outcome.group == group:
                cached[pos] = outcome  # built cached already (a journal's resume: 1M of them)
                continue
            cached[pos] = replace(outcome, status=CACHED_, key=key, group=group)
        return cached

    # -- growing (imap) -------------------------------------------------------------------
    def extend(self, new_items: list[Any], close: bool) -> None:
        items = self.items
        assert isinstance(items, GrowingItems)
        n = self.n
        if new_items and n:  # the first part's time is queued_at, the batch's own
            self._parts = [*(self._parts or ()), (n, time.time())]
        items.extend(new_items)
        self.positions.extend(len(new_items))
        self.closed = self.closed or close

    # -- handing out work -----------------------------------------------------------------

    @property
    def prefetchable(self) -> bool:
        """Whether a Call may wait in a worker's pipe behind another: not when timeouts run
        from dispatch, nor when the scheduler must know what truly runs (locks, resources)."""
        return not self.has_timeouts and self.scheduler is None

    def untaken(self) -> int:
        """How many positions were never handed out (requeued ones aside)."""
        return self.positions.n - self.positions.cursor

    def take(self, workers: int) -> Sequence[int]:
        """The next positions to dispatch together: requeued ones first, else a new chunk;
        with a scheduler, what it picks, or nothing when no ready task fits now."""
        positions = self.positions
        if self.scheduler is not None:  # one, or for very short tasks several that fit
            return positions.pick(self._scheduled_chunk(workers))
        if positions.queue:
            return positions.take(0)
        remaining = positions.n - positions.cursor
        return positions.take(min(self.chunk_size(workers, remaining), remaining))

    def _scheduled_chunk(self, workers: int) -> int:
        mean = self.mean_duration()
        if self.one_per_call or self.has_timeouts or mean is None:
            return 1
        if mean * 2 > SCHEDULED_CHUNK_SECONDS:
            return 1
        size = self.chunk_size(workers, self.positions.remaining())
        if mean > 0:
            size = min(size, int(SCHEDULED_CHUNK_SECONDS / mean))
        return max(1, size)

    def chunk_size(self, workers: int, remaining: int) -> int:
        """Guided self-scheduling: a quarter of the per-worker share of what remains, bounded
        by measured task duration so chunks are neither too long to balance nor too short to
        amortise the round trip. Chunks carry timeouts: each item's deadline runs from its
        own start, which the worker stamps (``Crew._check_timeout``)."""
        if self.options.chunksize != "auto":
            return self.options.chunksize
        size = math.ceil(remaining / (4 * workers))
        if self._work_items:
            mean = self._work_seconds / self._work_items
            ceiling = max(1, int(CHUNK_TARGET_SECONDS / mean)) if mean > 0 else remaining
            floor = max(1, int(self.call_floor / mean)) if mean > 0 else remaining
            size = max(min(size, ceiling), floor)
        # Never more than a fair share, or one worker could be left with all that remains,
        # but not split below the floor either.
        size = min(size, math.ceil(remaining / workers))
        if self._work_items:
            size = max(size, min(floor, remaining))
        return max(1, size)

    def payload(self, positions: Sequence[int]) -> list[Any]:
        items = self.items
        if isinstance(items, GrowingItems):
            return items.take(positions)
        if isinstance(positions, range):
            return items[positions.start : positions.stop]
        return list(map(items.__getitem__, positions))

    def note_arguments(self, items: int, nbytes: int) -> None:
        self.argument_bytes += nbytes
        self.argument_items += items

    def mean_duration(self) -> float | None:
        """Mean seconds per task measured so far (or assumed from earlier batches)."""
        return self._work_seconds / self._work_items if self._work_items else None

    def assume_duration(self, mean: float | None) -> None:
        """Start from what earlier batches of the same function measured."""
        if mean is not None:
            self._work_seconds, self._work_items = mean, 1

    def learn_duration(self, result: Result) -> None:
        self._work_seconds += result.ended - result.started
        self._work_items += len(result.values)

    # -- finishing ------------------------------------------------------------------------
    def requeue(self, positions: Sequence[int]) -> None:
        self.positions.requeue(positions)

    def requeue_one_by_one(self, positions: Sequence[int]) -> None:
        """Requeue ``positions`` to run one per Call: a Call of them broke as a whole (its
        arguments or results would not travel), and only the culprit must fail. A scheduled
        batch, which would group them again, sends one task per Call from now on."""
        if self.scheduler is not None:
            self.one_per_call = True
            self.requeue(positions)
            return
        for pos in positions:
            self.requeue([pos])

    def attempts_snapshot(self, positions: Sequence[int]) -> dict[int, int] | None:
        extra = self.positions.extra
        if not extra:
            return None
        return {p: 1 + extra[p] for p in positions if p in extra} or None

    # -- finishing: every final outcome goes through _finish ----------------------------------
    def finish_ok(self, positions: Sequence[int], values: list[Any], record: OkRecord) -> None:
        # _finish's work for successes, inline: this runs once per Call of trivial tasks.
        self.positions.finish(positions, OK)  # a success skips no dependant
        self.delivered += len(positions)
        events = self.events
        if events is not None and events.active:
            for pos in positions:
                events.emit(TaskFinished(id(self), pos, self.key_of(pos), Status.OK, None))
        if isinstance(self.items, GrowingItems):
            self._forget(positions)
        self.sink.ok(positions, values, record)
        if self.observer is not None:
            self.observer.advance(len(positions), 0, self._groups_of(positions))

    def finish_failed(self, pos: int, outcome: Outcome) -> None:
        final = CANCELLED if outcome.status is Status.CANCELLED else FAILED
        self._finish((pos,), final, outcome)

    def settle_given(self) -> None:
        """End the positions given up front ``cached`` (the engine, on accepting the batch):
        the successes first, so that a dependant of a success and of a failure given later
        is skipped for the failure, never for the success."""
        given = self.given
        order = sorted(given, key=lambda p: (not given[p].ok, p))
        if self.scheduler is None and order:  # no dependants: the successes all at once
            ok = [p for p in order if given[p].ok]
            order = order[len(ok) :]
            self._settle_given_ok(ok)
        for pos in order:
            self._finish((pos,), CACHED, given[pos])

    def _settle_given_ok(self, positions: list[int]) -> None:
        """``_finish`` of successes given up front, for many at once (a journal's resume
        gives up to millions): one ``Positions.finish``, one observer call."""
        if not positions:
            return
        self.positions.finish(positions, CACHED, True)
        self.delivered += len(positions)
        self._forget(positions)
        given, sink_given = self.given, self.sink.given
        events = self.events
        if events is not None and events.active:
            for pos in positions:
                outcome = given[pos]
                events.emit(TaskFinished(id(self), pos, outcome.key, outcome.status, None))
        for pos in positions:
            sink_given(pos, given[pos])
        if self.observer is not None:
            self.observer.advance(0, 0, self._groups_of(positions), n_cached=len(positions))

    def _finish(self, positions: Sequence[int], final: int, outcome: Outcome | None) -> None:
        """Every final outcome but a success (``finish_ok``, the same steps inline):
        ``Positions.finish``, the sink, the observer; then the dependants that can now never
        run, skipped the same way."""
        succeeded = outcome.ok if final == CACHED and outcome is not None else None
        skipped = self.positions.finish(positions, final, succeeded)
        self.delivered += len(positions)
        if outcome is not None:
            pos = positions[0]
            events = self.events
            if events is not None and events.active:  # before _forget: a subscriber may read
                # the item (error reports)
                events.emit(
                    TaskFinished(id(self), pos, outcome.key, outcome.status, outcome.error, outcome)
                )
            if final == CACHED:
                self.sink.given(pos, outcome)
            else:
                self.sink.failed(pos, outcome)
            if self.observer is not None:
                groups = self._groups_of(positions)
                if final == CACHED:
                    self.observer.advance(0, 0, groups, n_cached=1)
                elif final == CANCELLED:
                    self.observer.advance(0, 0, groups, n_cancelled=1)
                else:
                    self.observer.advance(0, 1, groups)
        self._forget(positions)
        for pos, because in skipped:
            failed = outcome if because == positions[0] else None
            self._finish((pos,), FAILED, self._skipped(pos, because, positions[0], failed))

    def _skipped(self, pos: int, because: int, failed_pos: int, failed: Outcome | None) -> Outcome:
        """The outcome of ``pos``, which can never run: its dependency ``because`` failed
        (it is ``failed_pos``) or was itself skipped."""
        dep = self.key_of(because)
        how = (
            ended(failed.status) if failed is not None and because == failed_pos else "was skipped"
        )
        error = TaskSkipped(
            f"task {self.key_of(pos)!r} skipped: its dependency {dep!r} {how}",
            key=self.key_of(pos),
            dependency=dep,
        )
        return Outcome(
            key=self.key_of(pos), status=Status.SKIPPED, error=error, group=self.group_of(pos)
        )

    def _groups_of(self, positions: Sequence[int]) -> list[str | None] | None:
        if self.groups is None:
            return None
        return [self.groups[p] for p in positions]

    def _forget(self, positions: Sequence[int]) -> None:
        if isinstance(self.items, GrowingItems):
            self.items.forget(positions)

    def stop(self) -> list[int]:
        """Take no more work, and no more input (an imap's iterator is not read further).

        Returns the positions that are neither running nor final: never dispatched,
        requeued, or waiting out a retry back-off. The caller gives each its final outcome.
        """
        self.closed = True
        return self.positions.stop()

    @property
    def done(self) -> bool:
        return self.closed and self.positions.n_final >= self.positions.n

    def validate(self, in_flight: Iterable[Sequence[int]], full: bool = True) -> None:
        """Check the invariants of the positions (``Positions.validate``), and that each
        final position was handed to the sink exactly once (by count; a collecting sink by
        position too)."""
        self.positions.validate(in_flight, full)
        if self.delivered != self.positions.n_final:
            raise AssertionError(
                f"{self.delivered} outcomes delivered for {self.positions.n_final} final positions"
            )
        check = getattr(self.sink, "validate", None) if full else None
        if check is not None:  # a collecting sink checks its positions too
            check(self)


def item_times(result: Result, offset: int) -> tuple[float, float]:
    """When item ``offset`` of a Result started and finished (interpolated for long chunks)."""
    if result.finished is None:
        step = (result.ended - result.started) / max(1, len(result.values))
        return result.started + offset * step, result.started + (offset + 1) * step
    started = result.started if offset == 0 else result.finished[offset - 1]
    return started, result.finished[offset]
