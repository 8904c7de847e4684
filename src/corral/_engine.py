"""The coordinator: decides what runs where, and turns what comes back into outcomes.

    caller threads              engine thread (this module)                 backend
    ──────────────              ───────────────────────────                 ───────
    submit(batch) ──► inbox (deque) + wakeup pipe byte
    cancel(batch) ──►      │
                           ▼
                     _run_inbox ─► _dispatch: idle slot k ◄─ batch.take() (FIFO over batches)
                           │          record slot k → InFlight, then send ─────► worker k
                           ▼
                     backend.wait(timeout = next deadline) ◄── message / died ── worker k
                           │
                           ├─ Result      → outcomes to the batch's sink, recycle worker if due
                           ├─ CallFailed  → failed at an edge (unpickling, pickling the result):
                           │                one task fails, several run again one by one
                           ├─ died        → item running at death: WorkerCrashed; rest requeued;
                           │                at an edge of the Call: as CallFailed, crashed
                           ├─ Handover    → (Ctrl-C) the finished part of a cancelled Call
                           └─ deadlines   → timeout: kill worker, TaskTimeout; retry back-off ends
    batch.done_event ◄─────┘ (set when every position of the batch is final)

Ownership. The engine thread is the only writer of slots, batches, deadlines and the backend.
Caller threads talk to it only through ``_post`` (inbox + one byte on the wakeup pipe) and
read a batch's sink only after its ``done_event`` is set. With the serial backend there is no
thread: the caller drives ``step`` itself until its batch is done.

Invariant: a slot's ``InFlight`` is recorded before its Call is sent, so a death or a timeout
is always attributed to the Call the worker really had (no acknowledgement race).

Nothing may end the engine thread: user code that runs on it (pickling arguments, unpickling
results, a future's done callbacks) has every exception caught where it runs. If the thread
fails anyway (a bug), ``_fail_everything`` fails every unfinished task with a ``CorralError``
caused by it and wakes every waiter; from then on (and after a normal close) ``post`` runs
actions on the caller's thread, so a batch posted late fails at once instead of waiting for a
thread that is gone.

A worker slot's life::

    IDLE ──send──► BUSY ──Result──► IDLE
      ▲              │ died / killed (timeout, cancel)
      └─ restart ◄───┘           BUSY/IDLE ──recycle (max tasks, memory)──► retire, restart

Ctrl-C (``cancel(batch, harvest=True)``): waiting positions are cancelled at once; each
worker running a Call of the batch is asked to hand over the finished part of it
(``_handover``), and stopped when it has answered, or died, or after ``HANDOVER_WAIT``::

    BUSY ──hand_over──► HANDING OVER ──Handover / died / HANDOVER_WAIT──► killed, restart
                           │ (a Result that arrives meanwhile is taken as usual)

Its finished items end ``ok`` (or failed, as they did), the running one ``cancelled`` after one
attempt, the ones after it ``cancelled`` with no attempt.

A position's life is drawn in ``_batch``. Attempts that fail are retried (after back-off) while
``attempts <= retries`` and the error matches ``retry_on``; a position's final outcome is given
exactly once, in ``_finish_failed`` or ``Batch.finish_ok``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _codec
from ._backends import Backend
from ._batch import Batch, OkRecord, item_times
from ._deadlines import Deadline, Deadlines
from ._errors import (
    CorralError,
    ExceptionWithTraceback,
    RemoteTraceback,
    SerializationError,
    TaskCancelled,
    TaskTimeout,
    WorkerCrashed,
    WorkerStartError,
)
from ._fixtures import FixtureGuard
from ._functions import FunctionTable
from ._messages import (
    ARGUMENTS,
    BETWEEN,
    EDGE_OF_PHASE,
    FUNCTION,
    RESULT,
    Call,
    CallFailed,
    Handover,
    InitFailed,
    Result,
)
from ._options import PoolOptions
from ._outcome import Outcome, Status
from ._scheduler import Ledger

log = logging.getLogger("corral")

MAX_BACKOFF = 60.0
START_FAILURE_LIMIT = 3
"""Workers in a row that die before running anything before the pool gives up on them."""

_EDGE_ERRORS = {
    ARGUMENTS: "cannot unpickle the arguments of task {key!r} in the worker: {what}",
    FUNCTION: "cannot unpickle the function of task {key!r} in the worker: {what}",
    RESULT: "cannot pickle the result of task {key!r}: {what}",
}


def _edge_error(edge: str, key: Any, what: str) -> CorralError:
    """The error of task ``key``, whose Call failed at ``edge`` (a worker's CallFailed)."""
    if edge in _EDGE_ERRORS:
        return SerializationError(_EDGE_ERRORS[edge].format(key=key, what=what))
    return CorralError(f"the worker failed around task {key!r} (a bug in corral): {what}")


_DIED_DURING = {
    ARGUMENTS: "while unpickling the task's arguments",
    FUNCTION: "while unpickling the task's function",
    RESULT: "while pickling or sending the task's result",
}

PREFETCH_SECONDS = 0.05
"""A worker is sent its next Call before it answers the current one when the current one is
expected to take less than this. Short Calls then flow without a gap even when the
coordinator waits for a CPU (all cores busy with workers); longer ones are not prefetched,
so that a task never waits behind another while some worker is idle."""

HANDOVER_WAIT = 2.0
"""After Ctrl-C, how long a busy worker may take to hand over the finished part of its Call
before it is stopped without it (a task inside C code that holds the GIL cannot answer)."""


@dataclass
class InFlight:
    call_id: int
    batch: Batch
    positions: Sequence[int]
    started: float
    expected: float | None = None
    deadline: Deadline | None = None
    fns: frozenset[int] = frozenset()  # functions whose bytes the Call carried
    drop: Sequence[int] = ()  # functions the Call told the worker to forget


@dataclass
class Slot:
    """The engine's handle on one worker. ``calls`` are the Calls sent and not yet answered,
    oldest (running) first; a second one is queued in the worker's pipe ahead of time when
    calls are short, so the worker never waits for a coordinator that the OS has not yet
    scheduled (see ``PREFETCH_SECONDS``)."""

    pid: int | None = None
    calls: deque[InFlight] = field(default_factory=deque)
    alive: bool = False
    tasks_done: int = 0
    fn_ids: set[int] = field(default_factory=set)
    drop: list[int] = field(default_factory=list)
    last_words: str | None = None  # why the worker's loop ended, if it said (InitFailed)
    handover: Deadline | None = None
    """Set while the worker is asked to hand over its finished items (Ctrl-C): the bound."""

    @property
    def call(self) -> InFlight | None:
        return self.calls[0] if self.calls else None


class Engine:
    def __init__(
        self, backend: Backend, functions: FunctionTable, options: PoolOptions, wakeup: int
    ) -> None:
        self.backend = backend
        self.functions = functions
        self.options = options
        self.in_process: bool = getattr(backend, "in_process", False)
        self.slots = [Slot() for _ in range(backend.slots)]
        self._batches: deque[Batch] = deque()
        self._inbox: deque[Callable[[], None]] = deque()
        self._wakeup = wakeup
        self._deadlines = Deadlines()
        self._ledger = Ledger()  # locks and resources held by scheduled tasks, Pool-wide
        self._call_ids = itertools.count()
        self._start_failures = 0
        # counts failed fixture set-ups; past the limit, tasks needing one are failed
        self._fixture_guard = FixtureGuard(
            options.fixtures, options.fixture_failures, functions.function
        )
        self.broken: BaseException | None = None
        self.fatal: BaseException | None = None
        self._closing = False
        self.closed = threading.Event()
        # Re-entrant: an action run by ``post`` after the stop may complete a future whose
        # done callback posts again.
        self._post_lock = threading.RLock()
        self._stopped = False  # the engine thread has ended: posts run on the caller's thread

    # -- caller side (any thread) ---------------------------------------------------------
    def post(self, action: Callable[[], None], wake: Callable[[], None]) -> None:
        """Hand ``action`` to the engine thread. Once that thread has ended (closed, or
        failed) the action runs here instead, with no other writer left: a batch accepted
        then fails at once (``broken``) instead of waiting forever for a thread that is gone."""
        with self._post_lock:
            if not self._stopped:
                self._inbox.append(action)
                wake()
                return
            _run_logged(action, "an action posted after the engine stopped")

    # -- engine thread ----------------------------------------------------------------------
    def start_workers(self) -> None:
        for slot in range(len(self.slots)):
            self._start(slot)

    def loop(self) -> None:
        """The engine thread's body: step until closed and idle."""
        try:
            while not (self._closing and not self._batches):
                self.step()
        except BaseException as exc:  # a bug in corral: fail every waiter, loudly
            log.exception("corral engine thread failed")
            self._fail_everything(exc)
        finally:
            _run_logged(
                lambda: self.backend.close(timeout=self.options.kill_grace + 2.0),
                "stopping the workers",
            )
            with self._post_lock:
                self._stopped = True
                if self.broken is None:
                    self.broken = CorralError("this Pool is closed")
                while self._inbox:
                    _run_logged(self._inbox.popleft(), "an action posted as the engine stopped")
            self.closed.set()

    def _fail_everything(self, exc: BaseException) -> None:
        """The engine thread failed (a bug in corral, or an exception nobody expected): every
        task not yet final fails with a CorralError caused by ``exc`` (one per task), every
        waiter wakes, and later batches fail at once (``broken``)."""
        self.fatal = exc

        def error() -> CorralError:
            failure = CorralError(f"the corral engine failed: {exc!r}")
            failure.__cause__ = exc
            return failure

        def fail(batch: Batch, positions: Sequence[int], slot_id: int | None) -> None:
            for pos in positions:
                self._finish_failed(batch, pos, Status.FAILED, error(), slot_id, None)

        self.broken = error()
        for slot_id, slot in enumerate(self.slots):
            flights = list(slot.calls)
            slot.calls.clear()
            for flight in flights:
                _run_logged(
                    functools.partial(fail, flight.batch, flight.positions, slot_id),
                    "failing the running tasks",
                )
        for batch in list(self._batches):
            _run_logged(functools.partial(fail, batch, batch.stop(), None), "failing a batch")
            _run_logged(batch.sink.close, "closing a batch's sink")
            batch.done_event.set()
        self._batches.clear()

    def step(self) -> None:
        self._run_inbox()
        self._dispatch()
        events = self.backend.wait(self._wait_timeout())
        for kind, slot, data in events:
            if kind == "message":
                self._on_message(slot, data)
            elif kind == "died":
                self._on_died(slot, *data)
        self._run_inbox()
        for action in self._deadlines.pop_due(time.monotonic()):
            action()

    def _wait_timeout(self) -> float | None:
        if self._inbox or (self._closing and not self._batches):
            return 0.0
        when = self._deadlines.next_time()
        if when is None:
            if self.in_process and not any(s.call for s in self.slots):
                return 0.0
            return None
        return max(0.0, when - time.monotonic())

    def _run_inbox(self) -> None:
        while self._inbox:
            self._inbox.popleft()()

    # -- accepting and cancelling -----------------------------------------------------------
    def accept(self, batch: Batch) -> None:
        if self.broken is not None:
            self._fail_all(batch, self.broken)
            return
        if batch.scheduler is not None:
            batch.scheduler.share_ledger(self._ledger)
        self._batches.append(batch)
        self._complete_if_done(batch)

    def extend(self, batch: Batch, items: list[Any], close: bool) -> None:
        batch.extend(items, close)
        self._complete_if_done(batch)

    def cancel(self, batch: Batch, harvest: bool = False) -> None:
        """Cancel what has not finished: waiting positions now, running ones by killing their
        workers (SIGTERM, SIGKILL after the grace period). Their outcome: ``cancelled``.

        ``harvest`` (Ctrl-C): first ask each busy worker for the items of its Call that have
        finished, which end ``ok``; see the module docstring."""
        if batch.done:
            return
        for pos in batch.stop():
            self._finish_cancelled(batch, pos, None)
        for slot_id, slot in enumerate(self.slots):
            if not any(flight.batch is batch for flight in slot.calls):
                continue
            if not harvest:
                self._stop_slot(slot_id, 0, self._ran(slot_id, None, None))
            elif slot.handover is None:
                self._ask_handover(slot_id)
        self._complete_if_done(batch)

    def close(self, cancel: bool) -> None:
        self._closing = True
        if cancel:
            for batch in list(self._batches):
                self.cancel(batch)

    # -- dispatching ------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Give every idle worker a Call, then queue a second one behind short running ones."""
        if self.broken is not None or not self._batches:
            return
        for prefetch in (False, True) if not self.in_process else (False,):
            for slot_id, slot in enumerate(self.slots):
                if not slot.alive or len(slot.calls) != int(prefetch):
                    continue
                if prefetch and not (self._short(slot.calls[0]) and self._keeps(slot)):
                    continue
                if not self._fill(slot_id, prefetch):
                    return

    def _fill(self, slot_id: int, prefetch: bool) -> bool:
        """Send one Call to the slot; False when there is nothing (suitable) left to send."""
        depth = len(self.slots[slot_id].calls)
        while len(self.slots[slot_id].calls) == depth:
            work = self._next_work(prefetch)
            if work is None:
                return False
            batch, positions = work
            positions = self._skip_broken_fixtures(batch, positions)
            if not positions:
                continue
            if batch.sink_claims and not batch.sink.claim(positions[0]):
                self._finish_cancelled(batch, positions[0], None)
                self._complete_if_done(batch)
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
            self._finish_failed(batch, pos, Status.FAILED, error, None, None)
        self._complete_if_done(batch)
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
            positions = batch.take(len(self.slots))
            if positions:
                return batch, positions
        return None

    def _worker_index(self, slot_id: int) -> int:
        """What an Outcome says ran the task: the slot, or -1 for the calling process."""
        return -1 if self.in_process else slot_id

    def _keeps(self, slot: Slot) -> bool:
        """Whether the slot's worker will still be there after its running Call."""
        limit = self.options.max_tasks_per_worker
        return limit is None or slot.tasks_done + len(slot.calls[0].positions) < limit

    @staticmethod
    def _short(flight: InFlight) -> bool:
        return flight.expected is not None and flight.expected < PREFETCH_SECONDS

    def _send(self, slot_id: int, batch: Batch, positions: Sequence[int]) -> None:
        slot = self.slots[slot_id]
        items = batch.payload(positions)
        needed = {batch.fn_id} if not batch.star else {item[0] for item in items}
        timeouts = [batch.timeout_of(p) for p in positions] if batch.has_timeouts else None
        call = Call(next(self._call_ids), {}, batch.fn_id, items, batch.star, slot.drop, timeouts)
        payload: Any = call
        if not self.in_process:
            call.fns = {f: self.functions.blob(f) for f in needed - slot.fn_ids}
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
        slot.calls.append(flight)
        if batch.has_timeouts and not self.in_process and len(slot.calls) == 1:
            self._arm_timeout(slot_id, flight, time.monotonic())
        self.backend.send(slot_id, payload)

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
            self.functions.sizes.arguments(
                batch, call.items, call.star, len(data) - shipped,
                lambda offset: _item_name(batch, positions[offset]),
            )  # fmt: skip
            return data, positions
        bad = _codec.unpicklable(call.items)
        for offset, error in bad.items():
            error.key = batch.key_of(positions[offset])  # type: ignore[attr-defined]
            self._finish_failed(batch, positions[offset], Status.FAILED, error, None, None)
        keep = [i for i in range(len(positions)) if i not in bad]
        positions = [positions[i] for i in keep]
        call.items = [call.items[i] for i in keep]
        if call.timeouts is not None:
            call.timeouts = [call.timeouts[i] for i in keep]
        self._complete_if_done(batch)
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
                self._finish_failed(batch, pos, Status.FAILED, error, None, None)
            self._complete_if_done(batch)
            return None

    # -- results ----------------------------------------------------------------------------
    def _on_message(self, slot_id: int, data: Any) -> None:
        slot = self.slots[slot_id]
        try:
            message = _codec.loads(data) if isinstance(data, bytes) else data
        except BaseException as exc:  # a result's own code (__setstate__) may raise anything
            flight = slot.calls.popleft() if slot.calls else None
            if flight is None:
                return
            if flight.deadline is not None:
                flight.deadline.cancel()
            what = _codec.describe_error(exc)
            self._failed_at_edge(
                slot_id,
                flight,
                RESULT,
                lambda key: SerializationError(
                    f"cannot unpickle the result of task {key!r}: {what}"
                ),
            )
            return
        if isinstance(message, InitFailed):
            self._on_init_failed(slot_id, message)
        elif isinstance(message, Result):
            self._on_result(slot_id, message)
        elif isinstance(message, CallFailed):
            self._on_call_failed(slot_id, message)
        elif isinstance(message, Handover) and self.slots[slot_id].handover is not None:
            self._end_handover(slot_id, message)

    def _on_call_failed(self, slot_id: int, failed: CallFailed) -> None:
        """The worker could not run or answer its Call and is still fine: the Call's tasks
        fail (or run again one by one, to find the one at fault), the worker goes on."""
        slot = self.slots[slot_id]
        flight = slot.call
        if flight is None or flight.call_id != failed.call_id:
            return  # answer to a call that was abandoned (cancelled) before the kill landed
        slot.calls.popleft()
        if flight.deadline is not None:
            flight.deadline.cancel()
        self._start_failures = 0
        if failed.edge in (ARGUMENTS, FUNCTION):  # the worker did not keep the Call's functions
            slot.fn_ids -= flight.fns
            if failed.edge == ARGUMENTS:
                slot.drop.extend(flight.drop)
        if failed.edge not in _EDGE_ERRORS:  # CALL: corral's own code around the tasks
            log.error("corral: a worker failed around the tasks of a Call:\n%s", failed.traceback)
        self._failed_at_edge(
            slot_id,
            flight,
            failed.edge,
            lambda key: _edge_error(failed.edge, key, failed.error),
            tb=failed.traceback,
        )

    def _on_result(self, slot_id: int, result: Result) -> None:
        slot = self.slots[slot_id]
        flight = slot.call
        if flight is None or flight.call_id != result.call_id:
            return  # answer to a call that was abandoned (cancelled) before the kill landed
        slot.calls.popleft()
        if flight.deadline is not None:
            flight.deadline.cancel()
        self._start_failures = 0
        batch, positions = flight.batch, flight.positions
        slot.tasks_done += len(positions)
        batch.learn_duration(result)
        if not batch.star:
            self.functions.learn(batch.fn_id, result.ended - result.started, len(result.values))
        errors = result.errors
        attempts = batch.attempts_snapshot(positions)
        if not errors:
            batch.finish_ok(
                positions,
                result.values,
                OkRecord(positions, None, result, self._worker_index(slot_id), slot.pid, attempts),
            )
        else:
            self._split_result(slot_id, batch, positions, result, errors, attempts)
        self._complete_if_done(batch)
        self._maybe_recycle(slot_id, result.rss)

    def _split_result(
        self,
        slot_id: int,
        batch: Batch,
        positions: Sequence[int],
        result: Result,
        errors: dict[int, Any],
        attempts: dict[int, int] | None,
    ) -> None:
        ok_pos, ok_off, ok_val = [], [], []
        for offset, pos in enumerate(positions):
            if offset not in errors:
                ok_pos.append(pos)
                ok_off.append(offset)
                ok_val.append(result.values[offset])
                continue
            error, tb = _unwrap(errors[offset])
            status = Status.FAILED
            if self.in_process and isinstance(error, TaskTimeout):
                status = Status.TIMEOUT
                error = TaskTimeout(batch.key_of(pos), error.timeout, pid=os.getpid())
            times = item_times(result, offset)
            self._attempt_failed(batch, pos, status, error, slot_id, times, tb)
        if ok_pos:
            batch.finish_ok(
                ok_pos,
                ok_val,
                OkRecord(
                    ok_pos,
                    ok_off,
                    result,
                    self._worker_index(slot_id),
                    self.slots[slot_id].pid,
                    attempts,
                ),
            )

    def _maybe_recycle(self, slot_id: int, rss: int) -> None:
        opts, slot = self.options, self.slots[slot_id]
        too_many = (
            opts.max_tasks_per_worker is not None and slot.tasks_done >= opts.max_tasks_per_worker
        )
        too_big = opts.max_worker_memory is not None and rss > opts.max_worker_memory
        if not (too_many or too_big) or self.in_process or slot.handover is not None:
            return  # (a worker handing over is stopped once it has answered)
        if slot.calls:
            # A Call was already queued behind the one that just ended: the old worker would
            # run it and nobody would read the answer. Take it back and stop the worker now.
            for flight in self._abandon(slot_id):
                flight.batch.requeue(flight.positions)
        else:
            self.backend.retire(slot_id)
        self._restart(slot_id)

    # -- failures -------------------------------------------------------------------------------
    def _attempt_failed(
        self,
        batch: Batch,
        pos: int,
        status: Status,
        error: BaseException,
        slot_id: int | None,
        times: tuple[float | None, float | None],
        tb: str | None = None,
    ) -> None:
        self._fixture_guard.observe(error)  # count failed fixture set-ups
        attempts = batch.attempts_of(pos)
        retry = (
            not batch.cancelled
            and attempts <= batch.retries_of(pos)
            and isinstance(error, batch.options.retry_on)
        )
        if not retry:
            self._finish_failed(batch, pos, status, error, slot_id, times, tb)
            return
        batch.count_failed_attempt(pos)
        delay = min(batch.options.backoff * 2 ** (attempts - 1), MAX_BACKOFF)
        if delay <= 0:
            batch.requeue([pos])
            return
        batch.back_off(pos)

        def retry_now() -> None:
            if pos in batch.backing_off:
                batch.backing_off.discard(pos)
                batch.requeue([pos])

        self._deadlines.add(time.monotonic() + delay, retry_now)

    def _finish_failed(
        self,
        batch: Batch,
        pos: int,
        status: Status,
        error: BaseException,
        slot_id: int | None,
        times: tuple[float | None, float | None] | None,
        tb: str | None = None,
    ) -> None:
        started, finished = times or (None, None)
        slot = self.slots[slot_id] if slot_id is not None else None
        # A position that never started its current attempt (cancelled while waiting, or
        # failed before dispatch) has made one attempt fewer than attempts_of counts.
        attempts = batch.attempts_of(pos) - (0 if slot is not None else 1)
        outcome = Outcome(
            key=batch.key_of(pos),
            status=status,
            error=error,
            attempts=attempts,
            worker=self._worker_index(slot_id) if slot_id is not None else None,
            pid=slot.pid if slot is not None else None,
            started=started,
            finished=finished,
            traceback=tb,
            group=batch.group_of(pos),
        )
        batch.finish_failed(pos, outcome)

    def _finish_cancelled(self, batch: Batch, pos: int, slot_id: int | None) -> None:
        error = TaskCancelled(f"task {batch.key_of(pos)!r} was cancelled", key=batch.key_of(pos))
        self._finish_failed(batch, pos, Status.CANCELLED, error, slot_id, None)

    def _fail_all(self, batch: Batch, error: BaseException) -> None:
        for pos in batch.stop():
            self._finish_failed(batch, pos, Status.FAILED, error, None, None)
        self._complete_if_done(batch)

    # -- worker deaths and timeouts -------------------------------------------------------------
    def _on_died(self, slot_id: int, exitcode: int | None, call_id: int, index: int) -> None:
        if self.slots[slot_id].handover is not None:  # asked to hand over; gone instead
            self._stop_slot(slot_id, 0, self._ran(slot_id, None, (call_id, index)))
            return
        slot = self.slots[slot_id]
        slot.alive = False
        flights = list(slot.calls)
        slot.calls.clear()
        flight = flights[0] if flights else None
        for queued in flights[1:]:
            queued.batch.requeue(queued.positions)
        pid = slot.pid
        if flight is not None and flight.call_id != call_id:
            index = BETWEEN  # the worker died before it started this Call
        if flight is not None and flight.deadline is not None:
            flight.deadline.cancel()
        never_ran = slot.tasks_done == 0 and (flight is None or index == BETWEEN)
        if never_ran:
            self._start_failures += 1
        if flight is not None:
            batch = flight.batch
            if index == BETWEEN:
                batch.requeue(flight.positions)
            elif index in EDGE_OF_PHASE:  # at an edge of the Call: unpickling, or answering
                edge = EDGE_OF_PHASE[index]
                during = _DIED_DURING[edge]
                self._failed_at_edge(
                    slot_id,
                    flight,
                    edge,
                    lambda key: WorkerCrashed(key, pid=pid, exitcode=exitcode, during=during),
                    Status.CRASHED,
                )
            else:
                error = WorkerCrashed(
                    batch.key_of(flight.positions[index]), pid=pid, exitcode=exitcode
                )
                self._lose(slot_id, flight, index, Status.CRASHED, error)
        if self._start_failures >= START_FAILURE_LIMIT:
            how = (
                f"exit code {exitcode}"
                if exitcode is None or exitcode >= 0
                else f"signal {-exitcode}"
            )
            why = slot.last_words or "no reason was sent back; see the workers' stderr\n"
            self._break(
                WorkerStartError(
                    f"{self._start_failures} worker processes in a row died before running a task "
                    f"(last: pid {pid}, {how}):\n{why}"
                )
            )
            return
        self._restart(slot_id)

    def _failed_at_edge(
        self,
        slot_id: int,
        flight: InFlight,
        edge: str,
        error_for: Callable[[Any], BaseException],
        status: Status = Status.FAILED,
        tb: str | None = None,
    ) -> None:
        """``flight``'s Call failed at ``edge``, outside its tasks (``_messages``). One task:
        its attempt ends with ``error_for(its key)``. Several: whose argument or result is at
        fault is unknowable from one broken stream, so they run again one by one (without
        counting an attempt) and only the culprit fails; except when the function of a
        ``map`` chunk cannot be loaded, which every task of the chunk needs."""
        batch, positions = flight.batch, flight.positions
        if len(positions) > 1 and (edge != FUNCTION or batch.star):
            batch.requeue_one_by_one(positions)
            return
        times = (flight.started, time.time())
        for pos in positions:
            error = error_for(batch.key_of(pos))
            self._attempt_failed(batch, pos, status, error, slot_id, times, tb)
        self._complete_if_done(batch)

    def _lose(
        self, slot_id: int, flight: InFlight, index: int, status: Status, error: BaseException
    ) -> None:
        """The worker of ``flight`` is gone while running item ``index``: that item's attempt
        ends with ``error``; items before it (their results died with the worker) and after it
        (never started) go back to the queue without counting an attempt."""
        batch, positions = flight.batch, flight.positions
        if index > 0:
            batch.requeue(positions[:index])
        if index + 1 < len(positions):
            batch.requeue(positions[index + 1 :])
        started = flight.started if index == 0 else None
        self._attempt_failed(
            batch, positions[index], status, error, slot_id, (started, time.time())
        )
        self._complete_if_done(batch)

    def _arm_timeout(self, slot_id: int, flight: InFlight, when_from: float) -> None:
        limit = flight.batch.timeout_of(flight.positions[0]) or 1.0
        flight.deadline = self._deadlines.add(
            when_from + limit, lambda: self._check_timeout(slot_id, flight)
        )

    def _check_timeout(self, slot_id: int, flight: InFlight) -> None:
        if self.slots[slot_id].call is not flight:
            return
        if self.slots[slot_id].handover is not None:  # settled when the hand-over ends
            flight.deadline = self._deadlines.add(
                time.monotonic() + HANDOVER_WAIT, lambda: self._check_timeout(slot_id, flight)
            )
            return
        call_id, index, started = self.backend.running_item(slot_id)
        now = time.monotonic()
        if (
            index < 0 or call_id != flight.call_id
        ):  # not started yet (a fresh worker still starting): give it the full time
            self._arm_timeout(slot_id, flight, now)
            return
        pos = flight.positions[index]
        limit = flight.batch.timeout_of(pos)
        if limit is None or now < started + limit:
            when = started + limit if limit is not None else now + 1.0
            flight.deadline = self._deadlines.add(
                when, lambda: self._check_timeout(slot_id, flight)
            )
            return
        pid = self.slots[slot_id].pid
        for queued in self._abandon(slot_id)[1:]:
            queued.batch.requeue(queued.positions)
        error = TaskTimeout(flight.batch.key_of(pos), limit, pid=pid)
        self._lose(slot_id, flight, index, Status.TIMEOUT, error)
        self._restart(slot_id)

    def _abandon(self, slot_id: int) -> list[InFlight]:
        """Kill the slot's worker and forget its Calls, which are returned, oldest first:
        the caller settles their positions."""
        slot = self.slots[slot_id]
        flights = list(slot.calls)
        slot.calls.clear()
        for flight in flights:
            if flight.deadline is not None:
                flight.deadline.cancel()
        if slot.handover is not None:
            slot.handover.cancel()
            slot.handover = None
        slot.alive = False
        self.backend.kill(slot_id)
        return flights

    def _on_init_failed(self, slot_id: int, message: InitFailed) -> None:
        exc, tb = _unwrap(message.error)
        why = f"{type(exc).__name__}: {exc}\n{tb or ''}"
        if message.stage == "loop":  # the worker dies next; its death says the rest
            self.slots[slot_id].last_words = why
            return
        what = "initializer failed" if message.stage == "initializer" else "could not start"
        self._break(WorkerStartError(f"worker {what}: {why}"))

    # -- hand-over (Ctrl-C) ---------------------------------------------------------------------
    def _ask_handover(self, slot_id: int) -> None:
        answer = self.backend.hand_over(slot_id)
        if answer is not None:  # the Call ran in this process: the answer is at hand
            self._end_handover(slot_id, answer)
            return
        self.slots[slot_id].handover = self._deadlines.add(
            time.monotonic() + HANDOVER_WAIT, lambda: self._end_handover(slot_id, None)
        )

    def _end_handover(self, slot_id: int, answer: Handover | None) -> None:
        """The worker answered (or did not, in time): take what finished of a cancelled Call,
        then stop the worker if it still has Calls of a cancelled batch."""
        slot = self.slots[slot_id]
        if slot.handover is not None:
            slot.handover.cancel()
            slot.handover = None
        flight = slot.call
        done = 0
        if (
            answer is not None
            and answer.result is not None
            and flight is not None
            and flight.call_id == answer.call_id
            and flight.batch.cancelled
        ):
            done = self._take_finished(slot_id, flight, answer.result)
        if any(f.batch.cancelled for f in slot.calls):
            self._stop_slot(slot_id, done, self._ran(slot_id, answer, None))

    def _take_finished(self, slot_id: int, flight: InFlight, result: Result) -> int:
        """Settle the first items of ``flight``, which ``result`` reports finished; their
        number."""
        done = min(len(result.values), len(flight.positions))
        if done:
            positions = flight.positions[:done]
            attempts = flight.batch.attempts_snapshot(positions)
            errors = result.errors or {}
            self._split_result(slot_id, flight.batch, positions, result, errors, attempts)
            self._complete_if_done(flight.batch)
        return done

    def _ran(self, slot_id: int, answer: Handover | None, died_at: tuple[int, int] | None) -> int:
        """How many items of the slot's running Call had started (their attempt counts)."""
        flight = self.slots[slot_id].call
        if flight is None:
            return 0
        if answer is not None:  # the worker said where it was
            if answer.call_id != flight.call_id or answer.result is None:
                return 0
            return min(len(answer.result.values) + 1, len(flight.positions))
        call_id, index = died_at or self.backend.running_item(slot_id)[:2]
        if call_id != flight.call_id or index < 0:
            return 0
        return min(index + 1, len(flight.positions))

    def _stop_slot(self, slot_id: int, done: int, ran: int) -> None:
        """Kill the slot's worker and settle its Calls: positions of cancelled batches end
        ``cancelled`` (after the ``done`` finished ones of the running Call; an attempt is
        counted for its ``ran`` first items, which had started), the others go back to their
        queue."""
        for i, flight in enumerate(self._abandon(slot_id)):
            batch = flight.batch
            if not batch.cancelled:
                batch.requeue(flight.positions)
                continue
            started = ran if i == 0 else 0
            for offset in range(done if i == 0 else 0, len(flight.positions)):
                ran_here = slot_id if offset < started else None
                self._finish_cancelled(batch, flight.positions[offset], ran_here)
            self._complete_if_done(batch)
        self._restart(slot_id)

    # -- worker (re)starts ----------------------------------------------------------------------
    def _start(self, slot_id: int) -> None:
        slot = self.slots[slot_id]
        slot.pid = self.backend.start_worker(slot_id)
        slot.alive = True
        slot.tasks_done = 0
        slot.fn_ids = set()
        slot.drop = []
        slot.last_words = None

    def _restart(self, slot_id: int) -> None:
        if (self._closing and not self._batches) or self.broken is not None:
            return
        try:
            self._start(slot_id)
        except Exception as exc:
            log.warning("corral: could not start a worker for slot %d: %s", slot_id, exc)
            self._start_failures += 1
            if self._start_failures >= START_FAILURE_LIMIT or not any(s.alive for s in self.slots):
                self._break(WorkerStartError(f"could not start worker processes: {exc}"))

    def _break(self, error: WorkerStartError) -> None:
        """Workers cannot be started: fail every unfinished task with ``error``."""
        self.broken = error
        for slot_id, slot in enumerate(self.slots):
            if slot.calls:
                for flight in self._abandon(slot_id):
                    flight.batch.requeue(flight.positions)
            elif slot.alive:
                self.backend.retire(slot_id)
                slot.alive = False
        for batch in list(self._batches):
            self._fail_all(batch, error)

    # -- completion -----------------------------------------------------------------------------
    def _complete_if_done(self, batch: Batch) -> None:
        if not batch.done or batch.done_event.is_set():
            return
        with contextlib.suppress(ValueError):
            self._batches.remove(batch)
        if batch.scheduler is not None:
            batch.scheduler.detach()
        for fn_id in batch.fn_ids:
            self.functions.release(fn_id)
        self._forget_functions()
        batch.sink.close()
        batch.done_event.set()

    def _forget_functions(self) -> None:
        """The functions the table forgot (``_functions``): a worker that has one drops it
        with its next Call. ``slot.fn_ids`` mirrors what each worker holds."""
        for gone in self.functions.forgotten():
            for slot in self.slots:
                if gone in slot.fn_ids:
                    slot.fn_ids.discard(gone)
                    slot.drop.append(gone)

    # -- read from other threads ----------------------------------------------------------------
    def running_now(self, batch: Batch) -> list[tuple[Any, float]]:
        """``(key, seconds running)`` of each item of ``batch`` running now, for progress.

        Called from the progress renderer's thread: it reads one attribute per slot (an
        InFlight is never mutated after dispatch except its deadline) and the shared stamps.
        """
        running = []
        now = time.monotonic()
        for slot_id, slot in enumerate(self.slots):
            flight = slot.call
            if flight is None or flight.batch is not batch:
                continue
            call_id, index, started = self.backend.running_item(slot_id)
            if call_id == flight.call_id and 0 <= index < len(flight.positions):
                running.append((batch.key_of(flight.positions[index]), now - started))
            else:
                running.append((batch.key_of(flight.positions[0]), time.time() - flight.started))
        return running


def _item_name(batch: Batch, pos: int) -> str:
    """How a size warning names the task at ``pos``: ``item 3`` of a map, ``task 'k'``."""
    return f"task {batch.key_of(pos)!r}" if batch.star else f"item {batch.key_of(pos)!r}"


def _run_logged(action: Callable[[], Any], what: str) -> None:
    """Run ``action``, where nothing may escape (the engine is failing or has stopped)."""
    try:
        action()
    except BaseException:
        log.exception("corral: %s failed", what)


def _unwrap(error: Any) -> tuple[BaseException, str | None]:
    """An exception from a Result and its worker traceback text."""
    if isinstance(error, ExceptionWithTraceback):
        return error.exc, error.tb
    cause = getattr(error, "__cause__", None)
    return error, (cause.tb if isinstance(cause, RemoteTraceback) else None)
