"""Dispatching: which work goes to which idle worker, as which Call, and when ahead of time.

Engine thread only. The engine calls ``Dispatcher.dispatch`` once per step, before it waits::

    dispatch ─► each idle slot k:  next_work ◄─ batch.take() (oldest batch that may start)
                                      │ skip positions whose fixture is broken, unclaimed ones
                                      ▼
                                   send: build Call (function bytes the worker lacks, drops)
                                      │ encode (pickle; unpicklable items fail alone)
                                      │ record slot k → InFlight, arm its timeout
                                      └─ backend.send(k, bytes) ─────────────────► worker k
             then each busy slot whose running Call is short (prefetch): the same, once

What it owns: the Call ids, and the prefetch policy (``PREFETCH_SECONDS``). It reads the
engine's batches, and writes a slot's ``calls``, ``fn_ids`` and ``drop`` only when sending
(the IDLE → BUSY move of the slot's life in ``_slots``). Positions that cannot be sent (their
fixture failed too often, an unpicklable argument, a claim refused) end through ``Failures``;
the batch is then handed to ``complete``. Timeouts are armed by ``arm_timeout`` (``_crew``).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from . import _codec
from ._backends import Backend
from ._batch import Batch
from ._errors import SerializationError
from ._failures import Failures
from ._fixtures import FixtureGuard
from ._functions import FunctionTable
from ._messages import Call
from ._options import PoolOptions
from ._outcome import Status
from ._slots import InFlight, Slot

PREFETCH_SECONDS = 0.05
"""A worker is sent its next Call before it answers the current one when the current one is
expected to take less than this. Short Calls then flow without a gap even when the
coordinator waits for a CPU (all cores busy with workers); longer ones are not prefetched,
so that a task never waits behind another while some worker is idle."""


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
    ) -> None:
        self._backend = backend
        self._functions = functions
        self._max_tasks = options.max_tasks_per_worker
        self._in_process: bool = getattr(backend, "in_process", False)
        self._slots = slots
        self._batches = batches  # read only: the engine adds and removes batches
        self._fixture_guard = fixture_guard
        self._failures = failures
        self._complete = complete
        self._arm_timeout = arm_timeout
        self._call_ids = itertools.count()

    def dispatch(self) -> None:
        """Give every idle worker a Call, then queue a second one behind short running ones."""
        for prefetch in (False, True) if not self._in_process else (False,):
            for slot_id, slot in enumerate(self._slots):
                if not slot.alive or len(slot.calls) != int(prefetch):
                    continue
                if prefetch and not (self._short(slot.calls[0]) and self._keeps(slot)):
                    continue
                if not self._fill(slot_id, prefetch):
                    return

    def _fill(self, slot_id: int, prefetch: bool) -> bool:
        """Send one Call to the slot; False when there is nothing (suitable) left to send."""
        depth = len(self._slots[slot_id].calls)
        while len(self._slots[slot_id].calls) == depth:
            work = self._next_work(prefetch)
            if work is None:
                return False
            batch, positions = work
            positions = self._skip_broken_fixtures(batch, positions)
            if not positions:
                continue
            if batch.sink_claims and not batch.sink.claim(positions[0]):
                self._failures.finish_cancelled(batch, positions[0], None)
                self._complete(batch)
                continue
            self._send(slot_id, batch, positions)
        return True

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

    def _next_work(self, prefetch: bool) -> tuple[Batch, Sequence[int]] | None:
        """Positions to send next, from the oldest batch that has something that may start
        now; a batch whose ready tasks are all blocked (locks, resources) does not hold back
        the ones after it."""
        for batch in self._batches:
            if not batch.has_ready():
                continue
            if prefetch and not batch.prefetchable:
                return None
            positions = batch.take(len(self._slots))
            if positions:
                return batch, positions
        return None

    def _keeps(self, slot: Slot) -> bool:
        """Whether the slot's worker will still be there after its running Call."""
        limit = self._max_tasks
        return limit is None or slot.tasks_done + len(slot.calls[0].positions) < limit

    @staticmethod
    def _short(flight: InFlight) -> bool:
        return flight.expected is not None and flight.expected < PREFETCH_SECONDS

    def _send(self, slot_id: int, batch: Batch, positions: Sequence[int]) -> None:
        slot = self._slots[slot_id]
        items = batch.payload(positions)
        needed = {batch.fn_id} if not batch.star else {item[0] for item in items}
        timeouts = [batch.timeout_of(p) for p in positions] if batch.has_timeouts else None
        call = Call(next(self._call_ids), {}, batch.fn_id, items, batch.star, slot.drop, timeouts)
        payload: Any = call
        if not self._in_process:
            call.fns = {f: self._functions.blob(f) for f in needed - slot.fn_ids}
            encoded = self._encode(batch, call, positions)
            if encoded is None:
                return
            payload, positions = encoded
            slot.fn_ids |= needed
        slot.drop = []
        mean = batch.mean_duration()
        expected = mean * len(positions) if mean is not None else None
        flight = InFlight(
            call.call_id,
            batch,
            positions,
            time.time(),
            expected,
            fns=frozenset(call.fns),
            drop=call.drop,
        )
        slot.calls.append(flight)  # before sending: see the invariant in _slots
        if batch.has_timeouts and not self._in_process and len(slot.calls) == 1:
            self._arm_timeout(slot_id, flight, time.monotonic())
        self._backend.send(slot_id, payload)

    def _encode(
        self, batch: Batch, call: Call, positions: Sequence[int]
    ) -> tuple[bytes, Sequence[int]] | None:
        """Pickle the Call; items whose arguments do not pickle fail alone, the rest go.
        (Pickling runs the arguments' own code, which may raise anything: SystemExit too.)"""
        try:
            data = _codec.dumps_call(call)
        except BaseException:
            pass
        else:
            shipped = sum(len(blob) for blob in call.fns.values())  # warned about at acquire
            self._functions.sizes.arguments(
                batch, call.items, call.star, len(data) - shipped,
                lambda offset: _item_name(batch, positions[offset]),
            )  # fmt: skip
            return data, positions
        bad = _codec.unpicklable(call.items)
        for offset, error in bad.items():
            error.key = batch.key_of(positions[offset])  # type: ignore[attr-defined]
            self._failures.finish_failed(batch, positions[offset], Status.FAILED, error, None, None)
        keep = [i for i in range(len(positions)) if i not in bad]
        positions = [positions[i] for i in keep]
        call.items = [call.items[i] for i in keep]
        if call.timeouts is not None:
            call.timeouts = [call.timeouts[i] for i in keep]
        self._complete(batch)
        if not positions:
            return None
        try:
            return _codec.dumps_call(call), positions
        except BaseException as exc:  # the function's bytes or the whole Call: fail them all
            for pos in positions:
                error = SerializationError(
                    f"cannot pickle the call for task {batch.key_of(pos)!r}: "
                    f"{_codec.describe_error(exc)}"
                )
                self._failures.finish_failed(batch, pos, Status.FAILED, error, None, None)
            self._complete(batch)
            return None


def _item_name(batch: Batch, pos: int) -> str:
    """How a size warning names the task at ``pos``: ``item 3`` of a map, ``task 'k'``."""
    return f"task {batch.key_of(pos)!r}" if batch.star else f"item {batch.key_of(pos)!r}"
