"""The coordinator: decides what runs where, and turns what comes back into outcomes.

    caller threads              engine thread (this module and its collaborators)          backend
    ──────────────              ─────────────────────────────────────────────────          ───────
    submit(batch) ──► inbox (deque) + wakeup pipe byte
    cancel(batch) ──►      │   (``_submissions`` posts one flush for many submitted tasks:
                           │    ``accept``/``extend`` of shared batches; ``after_dispatch``:
                           │    a caller's barrier, due once the step has handed out work)
                           ▼
                     _run_inbox ─► Dispatcher (_dispatch): idle slot k ◄─ batch.take()
                           │          record slot k → InFlight, then send ─────────────► worker k
                           ▼
                     backend.wait(timeout = next deadline) ◄──── Message / Undecodable / Died
                           │                 (typed events: the contract in ``_backends``)
                           ├─ Result      → outcomes to the batch's sink; Crew: recycle if due
                           ├─ CallFailed  → Failures.failed_at_edge (unpickling, pickling the
                           │                result): one task fails, several run again one by one
                           ├─ Undecodable → Failures.failed_at_edge (the result edge)
                           ├─ Died        → Crew.on_died: item running at death: WorkerCrashed;
                           │                rest requeued; at an edge of the Call: as CallFailed
                           ├─ Handover    → Crew.end_handover: (Ctrl-C) the finished part of a
                           │                cancelled Call
                           ├─ Logged      → Forwarding.deliver: a task's log record, to this
                           │                process's logger of its name (``_forwarding``)
                           ├─ Ready       → Crew.ready: WorkerReady
                           └─ deadlines   → Crew: timeout: its stacks (backend.dump_stack),
                                            kill worker, TaskTimeout;
                                            Failures: retry back-off ends
    batch.done_event ◄─────┘ (set when every position of the batch is final)

Who does what on the engine thread (each module's docstring has its own picture):

- ``Engine`` (here): the loop, the inbox, the batches (accept, extend, cancel, completion),
  reading answers (``_on_message``, ``_on_result``), giving up when workers cannot start.
- ``Dispatcher`` (``_dispatch``): choosing work, building Calls (the backend encodes them),
  prefetch.
- ``Crew`` (``_crew``): workers' (re)starts, deaths, timeouts, hand-over, recycling.
- ``Failures`` (``_failures``): a failed attempt retried after back-off or final; a Call lost.
- ``Slot``/``InFlight`` (``_slots``): the record of each worker and the Calls it holds; the
  slot's life is drawn there.
- ``Events`` (``_events``): the event stream. Each of the above emits the typed event of a
  transition where it makes it (tasks queued here; started in ``Dispatcher``; retried in
  ``Failures``; finished in ``Batch``; workers in ``Crew``), to ``pool._events`` subscribers.

They are parts of one thread's work, not separate actors: the Engine builds them and hands
each exactly the state it uses (the slot list, the batches to read, the deadlines) and the
engine actions it needs as callables (``complete``, ``settle``, ``wanted``, ``give_up``).

Ownership. The engine thread is the only writer of slots, batches, deadlines and the backend.
Caller threads talk to it only through ``_post`` (inbox + one byte on the wakeup pipe) and
read a batch's sink only after its ``done_event`` is set. With a backend that
``runs_in_caller_thread`` (serial) there is no thread: the caller drives ``step`` itself until
its batch is done (``_drivers.SerialDriver``). What differs between backends is asked of their
``capabilities``, never of their kind.

Invariant: a slot's ``InFlight`` is recorded before its Call is sent, so a death or a timeout
is always attributed to the Call the worker really had (no acknowledgement race).

Nothing may end the engine thread: user code that runs on it (pickling arguments, unpickling
results, a future's done callbacks) has every exception caught where it runs. If the thread
fails anyway (a bug), ``_fail_everything`` fails every unfinished task with a ``CorralError``
caused by it and wakes every waiter; from then on (and after a normal close) ``post`` runs
actions on the caller's thread, so a batch posted late fails at once instead of waiting for a
thread that is gone.

A worker slot's life (the moves, and who makes each, in ``_slots``)::

    IDLE ──send──► BUSY ──Result──► IDLE
      ▲              │ died / killed (timeout, cancel)
      └─ restart ◄───┘           BUSY/IDLE ──recycle (max tasks, memory)──► retire, restart

Ctrl-C (``cancel(batch, harvest=True)``): waiting positions are cancelled at once; each
worker running a Call of the batch is asked to hand over the finished part of it
(``_crew``), and stopped when it has answered, or died, or after ``HANDOVER_WAIT``. Its
finished items end ``ok`` (or failed, as they did), the running one ``cancelled`` after one
attempt, the ones after it ``cancelled`` with no attempt.

A position's life is drawn in ``_positions`` (``Positions``, one per batch: the only writer of
position states). Attempts that fail are retried (after back-off) while ``attempts <= retries``
and the error matches ``retry_on``; a position's final outcome is given exactly once, through
``Positions.finish`` (from ``Failures.finish_failed``, ``Batch.finish_ok``, or, for positions
given up front, ``Batch.settle_given`` when the batch is accepted).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from . import _codec
from ._backends import Backend, Died, Message, Undecodable
from ._batch import Batch, OkRecord, item_times
from ._crew import Crew
from ._deadlines import Deadlines
from ._dispatch import Dispatcher
from ._errors import CorralError, SerializationError, TaskTimeout, WorkerStartError
from ._events import BatchFinished, BatchStarted, Events, TaskQueued
from ._failures import EDGE_ERRORS, Failures, FixtureGuard, edge_error, unwrap, worker_index
from ._forwarding import Forwarding
from ._functions import FunctionTable
from ._messages import NO_OUTPUT, RESULT, CallFailed, Handover, InitFailed, Logged, Ready, Result
from ._options import PoolOptions
from ._outcome import Status
from ._report import story
from ._scheduler import Ledger
from ._slots import InFlight, Slot
from ._survival import Survival, learn_relative

log = logging.getLogger("corral")


class Engine:
    def __init__(
        self, backend: Backend, functions: FunctionTable, options: PoolOptions, wakeup: int
    ) -> None:
        self.backend = backend
        self.functions = functions
        self.options = options
        self.capabilities = backend.capabilities
        self.slots = [Slot() for _ in range(backend.slots)]
        self._batches: deque[Batch] = deque()
        self._inbox: deque[Callable[[], None]] = deque()
        self._wakeup = wakeup
        self._deadlines = Deadlines()
        self._ledger = Ledger()  # locks and resources held by scheduled tasks, Pool-wide
        self.events = Events()  # the event stream (``_events``): subscribers, in order
        # tasks' log records from the workers, to this process's loggers (``_forwarding``)
        self._forwarding = Forwarding(
            self.slots, self.events, self.capabilities.shares_memory_with_coordinator
        )
        self._accepted: dict[int, float] = {}  # id(batch) → when accepted, for BatchFinished
        if story.wanted():  # corral's logger at INFO: it tells the run (``_report.story``)
            self.events.subscribe(story.Story())
        # counts failed fixture set-ups; past the limit, tasks needing one are failed
        fixture_guard = FixtureGuard(options.fixtures, options.fixture_failures, functions.function)
        complete = self._complete_if_done
        self._failures = Failures(
            self.slots,
            self.capabilities.shares_memory_with_coordinator,
            self._deadlines,
            fixture_guard,
            complete,
            self.events,
        )
        self._crew = Crew(
            backend,
            options,
            self.slots,
            self._deadlines,
            self._failures,
            complete,
            settle=self._split_result,
            wanted=self._wants_workers,
            give_up=self._break,
            events=self.events,
        )
        self._dispatcher = Dispatcher(
            backend,
            functions,
            options,
            self.slots,
            self._batches,
            fixture_guard,
            self._failures,
            complete,
            self._crew.arm_timeout,
            self.events,
        )
        # -- survival hook: the memory floor and draining (``_survival``)
        self.survival = Survival(
            self.slots,
            self._batches,
            self._deadlines,
            self._crew.evict,
            lambda batch, running: self.cancel(batch, running=running),
        )
        self._crew.explain_death = self.survival.oom_cause
        self.broken: BaseException | None = None
        self.fatal: BaseException | None = None
        self._closing = False
        # Re-entrant: an action run by ``post`` after the stop may complete a future whose
        # done callback posts again.
        self._post_lock = threading.RLock()
        self._stopped = False  # the engine thread has ended: posts run on the caller's thread
        # The tests set CORRAL_VALIDATE=1: every batch's position invariants are checked after
        # each step and when it completes, and each transition checks its "from" state.
        self._validate = os.environ.get("CORRAL_VALIDATE", "") not in ("", "0")

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

    def after_dispatch(self, action: Callable[[], None]) -> None:
        """Run ``action`` once this step has handed out what it can (posted: a caller's
        barrier, ``_submissions.Submissions.sync``). Runs at once when the engine has stopped."""
        if self._stopped:
            action()
            return
        self._deadlines.add(time.monotonic(), action)  # due at this step's end

    # -- engine thread ----------------------------------------------------------------------
    def start_workers(self) -> None:
        self._crew.start_all()

    def loop(self) -> None:
        """The engine thread's body: step until closed and idle."""
        try:
            while not (self._closing and not self._batches):
                self.step()
        except BaseException as exc:  # a bug in corral: fail every waiter, loudly
            log.exception("corral engine thread failed")
            self._fail_everything(exc)
        finally:
            if self.events.rare:  # the pool closes: each live worker is retired
                _run_logged(self._crew.retired_all, "telling subscribers the workers retire")
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
                self._failures.finish_failed(batch, pos, Status.FAILED, error(), slot_id, None)

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
        if self.broken is None and self._batches and self.survival.may_dispatch():
            self._dispatcher.dispatch()
        for event in self.backend.wait(self._wait_timeout()):
            if type(event) is Message:
                self._on_message(event.slot, event.message)
            elif type(event) is Died:
                self._crew.on_died(
                    event.slot, event.exitcode, event.call_id, event.index, event.begun
                )
            elif type(event) is Undecodable:
                self._on_undecodable(event.slot, event.error)
        self._run_inbox()
        for action in self._deadlines.pop_due(time.monotonic()):
            action()
        if self._validate:
            for batch in self._batches:
                self._check(batch, full=False)

    def _wait_timeout(self) -> float | None:
        if self._inbox or (self._closing and not self._batches):
            return 0.0
        when = self._deadlines.next_time()
        if when is None:
            if self.capabilities.runs_in_caller_thread and not any(s.call for s in self.slots):
                return 0.0
            return None
        return max(0.0, when - time.monotonic())

    def _run_inbox(self) -> None:
        while self._inbox:
            self._inbox.popleft()()

    # -- accepting and cancelling -----------------------------------------------------------
    def accept(self, batch: Batch) -> None:
        batch.positions.strict = self._validate
        batch.events = self.events
        if self.events.rare:
            self._accepted[id(batch)] = time.monotonic()
            workers, method = len(self.slots), self.backend.start_method
            self.events.emit(BatchStarted(id(batch), batch.n, workers, method))
        batch.call_floor = max(batch.call_floor, self.capabilities.call_floor_seconds)
        if self.events.active:
            self._queued(batch, range(batch.n))
        batch.settle_given()  # before anything runs, or fails: those are final already
        if self.broken is not None:
            self._failures.fail_all(batch, self.broken)
            return
        if batch.scheduler is not None:
            batch.scheduler.share_ledger(self._ledger)
        self._batches.append(batch)
        self.survival.accept(batch)  # survival hook: deadline=, min_free_memory=
        self._complete_if_done(batch)

    def extend(self, batch: Batch, items: list[Any], close: bool) -> None:
        n = batch.n
        batch.extend(items, close)
        if self.events.active:
            self._queued(batch, range(n, batch.n))
        self._complete_if_done(batch)

    def _queued(self, batch: Batch, positions: range) -> None:
        emit, ident, given = self.events.emit, id(batch), batch.given
        for pos in positions:
            if pos not in given:  # given up front: finished (cached), never queued
                emit(TaskQueued(ident, pos, batch.key_of(pos)))

    def cancel(self, batch: Batch, harvest: bool = False, running: bool = True) -> None:
        """Cancel what has not finished: waiting positions now, running ones by killing their
        workers (SIGTERM, SIGKILL after the grace period). Their outcome: ``cancelled``.

        ``harvest`` (Ctrl-C): first ask each busy worker for the items of its Call that have
        finished, which end ``ok``; see the module docstring. ``running=False`` (a drain's
        grace, ``_survival``): the running ones go on."""
        if batch.done:
            return
        for pos in batch.stop():
            self._failures.finish_cancelled(batch, pos, None)
        for slot_id, slot in enumerate(self.slots):
            if not running:
                break
            if any(flight.batch is batch for flight in slot.calls):
                self._crew.cancel(slot_id, harvest)
        self._complete_if_done(batch)

    def close(self, cancel: bool) -> None:
        self._closing = True
        if cancel:
            for batch in list(self._batches):
                self.cancel(batch)

    # -- results ----------------------------------------------------------------------------
    def _on_undecodable(self, slot_id: int, exc: BaseException) -> None:
        """The worker's answer did not unpickle (a result's own ``__setstate__`` raised): its
        running Call fails at the result edge."""
        slot = self.slots[slot_id]
        flight = slot.calls.popleft() if slot.calls else None
        if flight is None:
            return
        if flight.deadline is not None:
            flight.deadline.cancel()
        what = _codec.describe_error(exc)
        self._failures.failed_at_edge(
            slot_id,
            flight,
            RESULT,
            lambda key: SerializationError(f"cannot unpickle the result of task {key!r}: {what}"),
        )

    def _on_message(self, slot_id: int, message: Any) -> None:
        if isinstance(message, InitFailed):
            self._crew.init_failed(slot_id, message)
        elif isinstance(message, Result):
            self._on_result(slot_id, message)
        elif isinstance(message, CallFailed):
            self._on_call_failed(slot_id, message)
        elif isinstance(message, Logged):
            self._forwarding.deliver(slot_id, message)
        elif isinstance(message, Ready):
            self._crew.ready(slot_id, message)
        elif isinstance(message, Handover) and self.slots[slot_id].handover is not None:
            self._crew.end_handover(slot_id, message)

    def _answered(self, slot_id: int, call_id: int) -> InFlight | None:
        """The slot's running Call, taken off the slot now that the worker answered it; None
        for an answer to a Call that was abandoned (cancelled) before the kill landed."""
        slot = self.slots[slot_id]
        flight = slot.call
        if flight is None or flight.call_id != call_id:
            return None
        slot.calls.popleft()
        if flight.deadline is not None:
            flight.deadline.cancel()
        self._crew.answered()
        return flight

    def _on_call_failed(self, slot_id: int, failed: CallFailed) -> None:
        """The worker could not run or answer its Call and is still fine: the Call's tasks
        fail (or run again one by one, to find the one at fault), the worker goes on."""
        flight = self._answered(slot_id, failed.call_id)
        if flight is None:
            return
        if failed.edge not in EDGE_ERRORS:  # CALL: corral's own code around the tasks
            log.error("corral: a worker failed around the tasks of a Call:\n%s", failed.traceback)
        self._failures.failed_at_edge(
            slot_id,
            flight,
            failed.edge,
            lambda key: edge_error(failed.edge, key, failed.error),
            tb=failed.traceback,
        )

    def _on_result(self, slot_id: int, result: Result) -> None:
        flight = self._answered(slot_id, result.call_id)
        if flight is None:
            return
        slot = self.slots[slot_id]
        batch, positions = flight.batch, flight.positions
        slot.tasks_done += len(positions)
        batch.learn_duration(result)
        if batch.relative is not None:  # survival hook: timeout="3x" learns from successes
            learn_relative(batch.relative, result)
        if not batch.star:
            self.functions.learn(batch.fn_id, result.ended - result.started, len(result.values))
        errors = result.errors
        attempts = batch.attempts_snapshot(positions)
        if not errors:
            batch.finish_ok(
                positions,
                result.values,
                OkRecord(
                    positions,
                    None,
                    result,
                    worker_index(self.capabilities.shares_memory_with_coordinator, slot_id),
                    slot.pid,
                    attempts,
                ),
            )
        else:
            self._split_result(slot_id, batch, positions, result, errors, attempts)
        self._complete_if_done(batch)
        self._crew.recycle_if_due(slot_id, result.rss)

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
        n = len(result.values) or 1
        for offset, pos in enumerate(positions):
            if offset not in errors:
                ok_pos.append(pos)
                ok_off.append(offset)
                ok_val.append(result.values[offset])
                continue
            error, tb = unwrap(errors[offset])
            status = Status.FAILED
            if not self.capabilities.can_kill_one_call and isinstance(error, TaskTimeout):
                status = Status.TIMEOUT
                error = TaskTimeout(batch.key_of(pos), error.timeout, pid=os.getpid())
            times = item_times(result, offset)
            usage = ((result.cpu + result.child_cpu) / n, result.peak_rss or result.max_rss)
            output = result.output.get(offset, NO_OUTPUT) if result.output is not None else None
            self._failures.attempt_failed(
                batch, pos, status, error, slot_id, times, tb, usage, output
            )
        if ok_pos:
            batch.finish_ok(
                ok_pos,
                ok_val,
                OkRecord(
                    ok_pos,
                    ok_off,
                    result,
                    worker_index(self.capabilities.shares_memory_with_coordinator, slot_id),
                    self.slots[slot_id].pid,
                    attempts,
                ),
            )

    # -- workers cannot be started ---------------------------------------------------------
    def _wants_workers(self) -> bool:
        """Whether a worker that stopped is replaced (not once closed and idle, or broken)."""
        return not (self._closing and not self._batches) and self.broken is None

    def _break(self, error: WorkerStartError) -> None:
        """Workers cannot be started: fail every unfinished task with ``error``."""
        self.broken = error
        self._crew.stop_all()
        for batch in list(self._batches):
            self._failures.fail_all(batch, error)

    # -- completion -----------------------------------------------------------------------------
    def _complete_if_done(self, batch: Batch) -> None:
        if not batch.done or batch.done_event.is_set():
            return
        if self._validate:
            self._check(batch, full=True)
        with contextlib.suppress(ValueError):
            self._batches.remove(batch)
        if batch.scheduler is not None:
            batch.scheduler.detach()
        for fn_id in batch.fn_ids:
            self.functions.release(fn_id)
        self._forget_functions()
        batch.sink.close()
        accepted = self._accepted.pop(id(batch), None)
        if accepted is not None and self.events.rare:
            self.events.emit(BatchFinished(id(batch), batch.n, time.monotonic() - accepted))
        batch.done_event.set()

    def _check(self, batch: Batch, full: bool) -> None:
        """Raise if ``batch``'s position invariants do not hold (``Positions.validate``)."""
        in_flight = [f.positions for slot in self.slots for f in slot.calls if f.batch is batch]
        batch.validate(in_flight, full)

    def _forget_functions(self) -> None:
        """The functions the table forgot (``_functions``): the backend tells the workers
        that hold one to drop it."""
        for gone in self.functions.forgotten():
            self.backend.forget(gone)

    # -- read from other threads ----------------------------------------------------------------
    def running_now(self, batch: Batch) -> list[tuple[Any, float]]:
        """``(key, seconds running)`` of each item of ``batch`` running now, for progress.

        Called from the progress renderer's thread: it reads one attribute per slot (an
        InFlight is never mutated after dispatch except its deadline) and the shared stamps.
        """
        running = []
        now = time.monotonic()
        stamped = self.capabilities.has_running_stamp
        for slot_id, slot in enumerate(self.slots):
            flight = slot.call
            if flight is None or flight.batch is not batch:
                continue
            call_id, index, started = (
                self.backend.running_item(slot_id) if stamped else (-1, -1, 0.0)
            )
            if call_id == flight.call_id and 0 <= index < len(flight.positions):
                running.append((batch.key_of(flight.positions[index]), now - started))
            else:
                running.append((batch.key_of(flight.positions[0]), time.time() - flight.started))
        return running


def _run_logged(action: Callable[[], Any], what: str) -> None:
    """Run ``action``, where nothing may escape (the engine is failing or has stopped)."""
    try:
        action()
    except BaseException:
        log.exception("corral: %s failed", what)
