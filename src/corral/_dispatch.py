"""Dispatching: which work goes to which idle worker, as which Call, and when ahead of time.

Engine thread only. The engine calls ``Dispatcher.dispatch`` once per step, before it waits::

    dispatch ─► each idle slot k:  next_work ◄─ batch.take() (oldest batch that may start)
                                      │ skip positions whose fixture is broken, unclaimed ones
                                      ▼
                                   send: build Call (function ids, items, timeouts)
                                      │ backend.prepare(k, Call): the backend encodes it,
                                      │   with the function bytes worker k lacks (its own
                                      │   record); items it could not encode fail alone
                                      │ record slot k → InFlight, arm its timeout
                                      └─ backend.send(k, prepared) ──────────────► worker k
             then, round by round, each busy slot whose queued Calls are short (prefetch):
             one more, while they add up to less than PREFETCH_SECONDS (at most QUEUE_DEPTH)

What it owns: the Call ids, and the prefetch policy (``PREFETCH_SECONDS``, where the backend
``can_queue_calls``). It reads the engine's batches, and writes a slot's ``calls`` only when
sending (the IDLE → BUSY move of the slot's life in ``_slots``). Which function bytes travel
is the backend's business (``_backends``). Positions that cannot be sent (their
fixture failed too often, an unpicklable argument, a claim refused) end through ``Failures``;
the batch is then handed to ``complete``. Timeouts are armed by ``arm_timeout`` (``_crew``).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence

from . import _codec
from ._backends import Backend, Prepared
from ._batch import Batch
from ._errors import SerializationError
from ._events import CallStarted, Events, TaskStarted
from ._failures import Failures, FixtureGuard, worker_index
from ._functions import FunctionTable
from ._messages import Call
from ._options import PoolOptions
from ._outcome import Status
from ._slots import InFlight, Slot

PREFETCH_SECONDS = 0.05
"""A worker is sent its next Call before it answers the current one when the Calls it holds
are expected to take less than this, together. Short Calls then flow without a gap even when
the coordinator waits for a CPU (all cores busy with workers); longer ones are not prefetched,
so that a task never waits behind another while some worker is idle."""

QUEUE_DEPTH = 16
"""At most this many one-task Calls per worker (the running one included; Calls of several
tasks: two). Several queued Calls let one wake-up of the coordinator answer many short ones
(``chunksize=1``), and they leave in one write (``_backends.outbox``, which also keeps a
queued Call from ever blocking the coordinator)."""


class Dispatcher:
    def __init__(
        self,
        backend: Backend,
        functions: FunctionTable,
        options: PoolOptions,
        slots: list[Slot],
        batches: deque[Batch],
        fixture_guard: FixtureGuard,
        failures: Failures,
        complete: Callable[[Batch], None],
        arm_timeout: Callable[[int, InFlight, float], None],
        events: Events | None = None,
    ) -> None:
        self._events = events if events is not None else Events()
        self._backend = backend
        self._functions = functions
        self._max_tasks = options.max_tasks_per_worker
        caps = backend.capabilities
        self._queues = caps.can_queue_calls
        self._times_calls = caps.can_kill_one_call  # else the backend times items itself
        self._in_caller = caps.shares_memory_with_coordinator
        self._slots = slots
        self._batches = batches  # read only: the engine adds and removes batches
        self._fixture_guard = fixture_guard
        self._failures = failures
        self._complete = complete
        self._arm_timeout = arm_timeout
        self._call_ids = itertools.count()

    def dispatch(self) -> None:
        """Give every idle worker a Call, then queue more behind short running ones: one per
        worker per round, so that workers share what is left evenly."""
        for slot_id, slot in enumerate(self._slots):
            if slot.alive and not slot.calls and not self._fill(slot_id, False):
                return
        if not self._queues:
            return
        # the slots that may queue more, with what their Calls are expected to take
        open_ = {k: _expected(s.calls) for k, s in enumerate(self._slots) if s.alive and s.calls}
        while open_:
            for slot_id, total in list(open_.items()):
                slot = self._slots[slot_id]
                calls = slot.calls
                depth = len(calls)
                if depth >= QUEUE_DEPTH or total >= PREFETCH_SECONDS or not self._keeps(slot):
                    del open_[slot_id]
                    continue
                if depth > 1 and len(calls[-1].positions) > 1:  # deep: one-task Calls only
                    del open_[slot_id]
                    continue
                if not self._fill(slot_id, True, deep=depth > 1):
                    return
                if len(calls) > depth:
                    added = calls[-1].expected
                    open_[slot_id] = total + added if added is not None else PREFETCH_SECONDS

    def _fill(self, slot_id: int, prefetch: bool, deep: bool = False) -> bool:
        """Send one Call to the slot; False when there is nothing (suitable) left to send.
        ``deep``: a third Call or more, behind one-task Calls (``chunksize=1``), queued only
        from a batch that has ``QUEUE_DEPTH`` tasks per worker still to hand out, so the end
        of a batch is never queued up behind one worker's running task while another worker
        idles. Chunks are never queued deep: guided self-scheduling sizes them to balance the
        workers (a worker the OS holds back would sit on several), and what is in flight
        (what a journaled run may run again after an interruption) stays two Calls a worker."""
        depth = len(self._slots[slot_id].calls)
        while len(self._slots[slot_id].calls) == depth:
            work = self._next_work(prefetch, len(self._slots) * QUEUE_DEPTH if deep else 0)
            if work is None:
                return False
            batch, positions = work
            positions = self._skip_broken_fixtures(batch, positions)
            if not positions:
                continue
            if batch.sink_claims:
                positions = self._claimed(batch, positions)
                if not positions:
                    continue
            self._send(slot_id, batch, positions)
        return True

    def _claimed(self, batch: Batch, positions: Sequence[int]) -> Sequence[int]:
        """The positions whose sink lets them start (a future sets itself running); those
        refused (their future was cancelled by its caller) end ``cancelled``."""
        claim = batch.sink.claim
        refused = [pos for pos in positions if not claim(pos)]
        if not refused:
            return positions
        for pos in refused:
            self._failures.finish_cancelled(batch, pos, None)
        self._complete(batch)
        return [pos for pos in positions if pos not in refused]

    def _skip_broken_fixtures(self, batch: Batch, positions: Sequence[int]) -> Sequence[int]:
        """Fail, instead of dispatching, the positions that need a fixture whose
        set-up failed ``fixture_failures`` times; the rest of ``positions`` go on."""
        blocked = self._fixture_guard.blocked(batch, positions)
        if not blocked:
            return positions
        for pos, error in blocked.items():
            self._failures.finish_failed(batch, pos, Status.FAILED, error, None, None)
        self._complete(batch)
        return [p for p in positions if p not in blocked]

    def _next_work(self, prefetch: bool, plenty: int = 0) -> tuple[Batch, Sequence[int]] | None:
        """Positions to send next, from the oldest batch that has something that may start
        now; a batch whose ready tasks are all blocked (locks, resources) does not hold back
        the ones after it. ``plenty``: only from a batch with that many tasks untaken."""
        for batch in self._batches:
            if not batch.has_ready():
                continue
            if prefetch and not batch.prefetchable:
                return None
            if plenty and batch.untaken() < plenty:
                return None
            positions = batch.take(len(self._slots))
            if positions:
                return batch, positions
        return None

    def _keeps(self, slot: Slot) -> bool:
        """Whether the slot's worker will still be there after the Calls it holds."""
        limit = self._max_tasks
        if limit is None:
            return True
        return slot.tasks_done + sum(len(f.positions) for f in slot.calls) < limit

    def _send(self, slot_id: int, batch: Batch, positions: Sequence[int]) -> None:
        slot = self._slots[slot_id]
        items = batch.payload(positions)
        timeouts = [batch.timeout_of(p) for p in positions] if batch.has_timeouts else None
        call = Call(next(self._call_ids), {}, batch.fn_id, items, batch.star, [], timeouts)
        prepared = self._backend.prepare(slot_id, call)
        if prepared.rejected or prepared.failed is not None:
            positions = self._rejected(batch, positions, prepared)
            if not positions:
                return
        elif prepared.argument_bytes is not None:  # warned about once, with the item named
            batch.note_arguments(len(call.items), prepared.argument_bytes)
            if prepared.argument_bytes > _codec.WARN_BYTES:
                self._functions.sizes.arguments(
                    batch, call.items, call.star, prepared.argument_bytes,
                    lambda offset: _item_name(batch, positions[offset]),
                )  # fmt: skip
        mean = batch.mean_duration()
        expected = mean * len(positions) if mean is not None else None
        flight = InFlight(call.call_id, batch, positions, time.time(), expected)
        slot.calls.append(flight)  # before sending: see the invariant in _slots
        if batch.has_timeouts and self._times_calls and len(slot.calls) == 1:
            self._arm_timeout(slot_id, flight, time.monotonic())
        if self._events.active:
            self._started(slot_id, batch, positions)
        if self._events.calls_active:  # one event per Call (the journal records starts)
            self._call_started(slot_id, batch, positions, flight.started)
        self._backend.send(slot_id, prepared)

    def _started(self, slot_id: int, batch: Batch, positions: Sequence[int]) -> None:
        events, ident, pid = self._events, id(batch), self._slots[slot_id].pid
        worker = worker_index(self._in_caller, slot_id)
        for pos in positions:
            attempt = batch.attempts_of(pos)
            events.emit(TaskStarted(ident, pos, batch.key_of(pos), worker, pid, attempt))

    def _call_started(
        self, slot_id: int, batch: Batch, positions: Sequence[int], when: float
    ) -> None:
        worker = worker_index(self._in_caller, slot_id)
        attempts = batch.attempts_snapshot(positions)
        self._events.emit_call(
            CallStarted(id(batch), positions, worker, self._slots[slot_id].pid, attempts, when)
        )

    def _rejected(
        self, batch: Batch, positions: Sequence[int], prepared: Prepared
    ) -> Sequence[int]:
        """Fail the items the backend could not encode (each alone; all of them when the Call
        as a whole failed); the positions that are still sent."""
        for offset, error in prepared.rejected.items():
            error.key = batch.key_of(positions[offset])  # type: ignore[attr-defined]
            self._failures.finish_failed(batch, positions[offset], Status.FAILED, error, None, None)
        kept = [p for i, p in enumerate(positions) if i not in prepared.rejected]
        if prepared.failed is not None:  # the function's bytes or the whole Call
            what = _codec.describe_error(prepared.failed)
            for pos in kept:
                error = SerializationError(
                    f"cannot pickle the call for task {batch.key_of(pos)!r}: {what}"
                )
                self._failures.finish_failed(batch, pos, Status.FAILED, error, None, None)
            kept = []
        self._complete(batch)
        return kept


def _expected(calls: deque[InFlight]) -> float:
    """Seconds the Calls a worker holds are expected to take (PREFETCH_SECONDS when any
    is unknown: nothing is queued behind a Call of unknown length)."""
    total = 0.0
    for flight in calls:
        if flight.expected is None:
            return PREFETCH_SECONDS
        total += flight.expected
    return total


def _item_name(batch: Batch, pos: int) -> str:
    """How a size warning names the task at ``pos``: ``item 3`` of a map, ``task 'k'``."""
    return f"task {batch.key_of(pos)!r}" if batch.star else f"item {batch.key_of(pos)!r}"
