"""The workers' lives as the engine sees them: (re)starts, deaths, timeouts, hand-over, recycling.

Engine thread only. The engine owns one ``Crew`` and calls it when a worker dies, when a
deadline it armed comes due, on Ctrl-C and on close; the Crew settles the Calls the worker had
(through ``Failures``) and starts its replacement::

    died (sentinel k) ──► on_died ─┬─ between Calls ───────────► its Calls requeued
                                   ├─ between items: b begun ──► Failures.lost (b), rest requeued
                                   ├─ at an edge of the Call ──► Failures.failed_at_edge (crashed)
                                   └─ on item i ───────────────► Failures.lose: WorkerCrashed
                                   then restart k, or give up after START_FAILURE_LIMIT
    deadline ──► check_timeout ──► still running item i past its limit: kill k,
                                   Failures.lose: TaskTimeout, restart k
    cancel ──► stop (kill k; cancelled positions end cancelled, the others requeued), restart
           └─ harvest (Ctrl-C) ──► ask_handover (SIGUSR1) ──► HANDING OVER
                 ──Handover / died / HANDOVER_WAIT──► end_handover: finished items settled
                                                      as a Result (``settle``), then stop
    Result with the worker past max tasks / memory ──► recycle_if_due: retire, restart
    memory short (min_free_memory) ──► evict: kill k, its Calls requeued, restart

Whenever a worker is killed or dies with Calls on it, the items of its running Call that had
begun (the stamp's running item, or ``Died.begun``) ran: their attempts are recorded, free of
retries (``Failures.lost``, ``_requeue``); the rest, and every Call queued behind, never
started and are requeued with no attempt.

The hand-over, in the slot's life (``_slots``)::

    BUSY ──hand_over──► HANDING OVER ──Handover / died / HANDOVER_WAIT──► killed, restart
                           │ (a Result that arrives meanwhile is taken as usual)

What it owns: the count of workers in a row that died before running anything
(``START_FAILURE_LIMIT``), and a slot's life fields (``pid``, ``alive``, ``tasks_done`` reset,
``last_words``, ``handover``); the Call deadlines it arms. It kills and starts workers through
the backend. What the engine decides, it asks for: whether workers are still wanted
(``wanted``: not closed and idle, not broken), what to do when they cannot be started
(``give_up``), how a handed-over Result is settled (``settle``, the engine's result path) and
a batch's completion (``complete``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._backends import Backend
from ._batch import Batch
from ._deadlines import Deadlines
from ._errors import TaskTimeout, WorkerCrashed, WorkerStartError
from ._events import (
    Events,
    WorkerDied,
    WorkerKilled,
    WorkerReady,
    WorkerRecycled,
    WorkerRetired,
    WorkerStarted,
)
from ._failures import DIED_DURING, Failures, unwrap, worker_index
from ._messages import BETWEEN, EDGE_OF_PHASE, SENDING, Handover, InitFailed, Ready, Result
from ._options import PoolOptions
from ._outcome import Status
from ._slots import InFlight, Slot
from ._survival import timeout_basis

log = logging.getLogger("corral")

START_FAILURE_LIMIT = 3
"""Workers in a row that die before running anything before the pool gives up on them."""


UNTIMED_RECHECK = 1.0
"""While an item without a timeout runs in a batch with timeouts, how often the timeout check
looks whether the next item (which may have one) has started (see ``_check_timeout``)."""

Settle = Callable[[int, Batch, Sequence[int], Result, dict[int, Any], dict[int, int] | None], None]
"""How the engine settles a Result (here: the finished part of a handed-over Call)."""


class Crew:
    def __init__(
        self,
        backend: Backend,
        options: PoolOptions,
        slots: list[Slot],
        deadlines: Deadlines,
        failures: Failures,
        complete: Callable[[Batch], None],
        settle: Settle,
        wanted: Callable[[], bool],
        give_up: Callable[[WorkerStartError], None],
        events: Events | None = None,
    ) -> None:
        self._events = events if events is not None else Events()
        self._in_caller = backend.capabilities.shares_memory_with_coordinator
        self._backend = backend
        self._options = options
        self._recycles = backend.capabilities.can_kill_one_call
        # HANDOVER_WAIT in the diagrams: how long a worker gets to hand over after Ctrl-C.
        self._handover_wait = backend.capabilities.handover_seconds
        self._slots = slots
        self._deadlines = deadlines
        self._failures = failures
        self._complete = complete
        self._settle = settle
        self._wanted = wanted
        self._give_up = give_up
        self._start_failures = 0
        self._started_at = [0.0] * len(slots)  # monotonic, per slot: for WorkerReady
        # why a worker died, when something outside it knows (the engine sets it: _survival)
        self.explain_death: Callable[[int | None], str | None] = lambda exitcode: None

    # -- starts -----------------------------------------------------------------------------
    def start_all(self) -> None:
        for slot_id in range(len(self._slots)):
            self._start(slot_id)

    def _start(self, slot_id: int) -> None:
        slot = self._slots[slot_id]
        began = self._started_at[slot_id] = time.monotonic()
        slot.pid = self._backend.start_worker(slot_id)
        slot.alive = True
        slot.tasks_done = 0
        slot.last_words = None
        if self._events.rare:
            worker, seconds = worker_index(self._in_caller, slot_id), time.monotonic() - began
            self._events.emit(WorkerStarted(worker, slot.pid, seconds))
            if self._in_caller:  # the caller itself: ready at once
                self._events.emit(WorkerReady(worker, slot.pid, seconds))

    def ready(self, slot_id: int, message: Ready) -> None:
        """The slot's worker started up (its ``Ready`` message)."""
        if self._events.rare:
            seconds = time.monotonic() - self._started_at[slot_id]
            worker = worker_index(self._in_caller, slot_id)
            self._events.emit(WorkerReady(worker, message.pid, seconds))

    def restart(self, slot_id: int) -> None:
        if not self._wanted():
            return
        try:
            self._start(slot_id)
        except Exception as exc:
            log.warning("corral: could not start a worker for slot %d: %s", slot_id, exc)
            self._start_failures += 1
            if self._start_failures >= START_FAILURE_LIMIT or not any(s.alive for s in self._slots):
                self._give_up(WorkerStartError(f"could not start worker processes: {exc}"))

    def answered(self) -> None:
        """A worker answered a Call: workers can start, the count of failures in a row ends."""
        self._start_failures = 0

    def init_failed(self, slot_id: int, message: InitFailed) -> None:
        exc, tb = unwrap(message.error)
        why = f"{type(exc).__name__}: {exc}\n{tb or ''}"
        if message.stage == "loop":  # the worker dies next; its death says the rest
            self._slots[slot_id].last_words = why
            return
        what = "initializer failed" if message.stage == "initializer" else "could not start"
        self._give_up(WorkerStartError(f"worker {what}: {why}"))

    def stop_all(self) -> None:
        """Workers cannot be started (the engine gives up): stop every worker; the positions
        of their Calls go back to their batches, which the engine then fails."""
        for slot_id, slot in enumerate(self._slots):
            if self._events.rare and slot.alive:
                worker = worker_index(self._in_caller, slot_id)
                self._events.emit(WorkerRetired(worker, slot.pid))
            if slot.calls:
                begun = self._ran(slot_id, None, None)
                self._requeue(slot_id, self._abandon(slot_id), begun,
                              "its worker was stopped: workers cannot be started")  # fmt: skip
            elif slot.alive:
                self._backend.retire(slot_id)
                slot.alive = False

    def retired_all(self) -> None:
        """The pool closes (the engine loop ends): ``WorkerRetired`` for each live worker."""
        for slot_id, slot in enumerate(self._slots):
            if slot.alive and self._events.rare:
                worker = worker_index(self._in_caller, slot_id)
                self._events.emit(WorkerRetired(worker, slot.pid))

    def recycle_if_due(self, slot_id: int, rss: int) -> None:
        opts, slot = self._options, self._slots[slot_id]
        too_many = (
            opts.max_tasks_per_worker is not None and slot.tasks_done >= opts.max_tasks_per_worker
        )
        too_big = opts.max_worker_memory is not None and rss > opts.max_worker_memory
        if not (too_many or too_big) or not self._recycles or slot.handover is not None:
            return  # (a worker handing over is stopped once it has answered)
        if self._events.rare:
            worker = worker_index(self._in_caller, slot_id)
            self._events.emit(WorkerRecycled(worker, slot.pid, rss))
        if slot.calls:
            # A Call was already queued behind the one that just ended: the old worker would
            # run it and nobody would read the answer. Take it back and stop the worker now
            # (it may have begun it).
            begun = self._ran(slot_id, None, None)
            self._requeue(slot_id, self._abandon(slot_id), begun,
                          "its worker was stopped to be recycled")  # fmt: skip
        else:
            self._backend.retire(slot_id)
        self.restart(slot_id)

    def evict(self, slot_id: int) -> None:
        """Memory is short (``min_free_memory``, ``_survival``): stop the slot's worker; its
        Calls go back to their queues. The tasks that had started have an attempt on record,
        not charged to their retries (``Failures.lost``)."""
        self._killed(slot_id, "memory")
        begun = self._ran(slot_id, None, None)
        self._requeue(slot_id, self._abandon(slot_id), begun,
                      "its worker was stopped: memory was short (min_free_memory)")  # fmt: skip
        self.restart(slot_id)

    def _requeue(self, slot_id: int, flights: list[InFlight], begun: int, why: str) -> None:
        """Put the positions of the slot's abandoned ``flights`` (oldest first) back in their
        queues: the first ``begun`` of the running one had started (their results are lost,
        ``why``: attempts on record, free), the others never did."""
        for i, flight in enumerate(flights):
            ran = begun if i == 0 else 0
            if ran > 0:
                self._failures.lost(
                    slot_id, flight, ran, Status.CANCELLED, lambda key: why, requeue=True
                )
            flight.batch.requeue(flight.positions[ran:])

    # -- deaths -----------------------------------------------------------------------------
    def on_died(
        self, slot_id: int, exitcode: int | None, call_id: int, index: int, begun: int = -1
    ) -> None:
        """The slot's worker died on its own, at ``index`` of Call ``call_id`` (the stamp;
        ``BETWEEN``: in no item); ``begun``: how many items of that Call had begun (-1:
        unknown), which tells a death between two items which of them ran."""
        remains = self._backend.remains(slot_id)  # its fatal signal's traceback, its output
        if remains.stack:
            log.debug("corral: worker pid %s died; its faulthandler said:\n%s",
                      self._slots[slot_id].pid, remains.stack)  # fmt: skip
        if self._events.rare:
            sig = -exitcode if exitcode is not None and exitcode < 0 else None
            worker = worker_index(self._in_caller, slot_id)
            self._events.emit(WorkerDied(worker, self._slots[slot_id].pid, exitcode, sig))
        if self._slots[slot_id].handover is not None:  # asked to hand over; gone instead
            self._slots[slot_id].alive = False  # (died, not killed: no WorkerKilled)
            self._stop(slot_id, 0, self._ran(slot_id, None, (call_id, index, begun)))
            return
        slot = self._slots[slot_id]
        slot.alive = False
        flights = list(slot.calls)
        slot.calls.clear()
        flight = flights[0] if flights else None
        for queued in flights[1:]:
            queued.batch.requeue(queued.positions)
        pid = slot.pid
        if flight is not None and flight.call_id != call_id:
            index, begun = BETWEEN, 0  # the worker died before it started this Call
        if flight is not None and flight.deadline is not None:
            flight.deadline.cancel()
        never_ran = slot.tasks_done == 0 and (flight is None or (index == BETWEEN and begun <= 0))
        if never_ran:
            self._start_failures += 1
        if flight is not None:
            batch = flight.batch
            if index == BETWEEN:  # before its first item, between two, or after its last
                self._failures.died_between(slot_id, flight, begun, pid, exitcode)
            elif index in EDGE_OF_PHASE:  # at an edge of the Call: unpickling, or answering
                during = DIED_DURING[EDGE_OF_PHASE[index]]
                self._failures.failed_at_edge(
                    slot_id,
                    flight,
                    EDGE_OF_PHASE[index],
                    lambda key: WorkerCrashed(
                        key, pid=pid, exitcode=exitcode, during=during, stack=remains.stack
                    ),
                    Status.CRASHED,
                )
            else:
                error = WorkerCrashed(
                    batch.key_of(flight.positions[index]),
                    pid=pid,
                    exitcode=exitcode,
                    stack=remains.stack,
                    cause=self.explain_death(exitcode),  # survival hook: the OOM killer
                )
                output = (remains.stdout, remains.stderr)
                self._failures.lose(slot_id, flight, index, Status.CRASHED, error, output)
        if self._start_failures >= START_FAILURE_LIMIT:
            how = (
                f"exit code {exitcode}"
                if exitcode is None or exitcode >= 0
                else f"signal {-exitcode}"
            )
            why = slot.last_words or "no reason was sent back; see the workers' stderr\n"
            self._give_up(
                WorkerStartError(
                    f"{self._start_failures} worker processes in a row died before running a task "
                    f"(last: pid {pid}, {how}):\n{why}"
                )
            )
            return
        self.restart(slot_id)

    def _killed(self, slot_id: int, reason: str) -> None:
        if self._events.rare and self._slots[slot_id].alive:
            worker = worker_index(self._in_caller, slot_id)
            self._events.emit(WorkerKilled(worker, self._slots[slot_id].pid, reason))

    def _abandon(self, slot_id: int) -> list[InFlight]:
        """Kill the slot's worker and forget its Calls, which are returned, oldest first:
        the caller settles their positions."""
        slot = self._slots[slot_id]
        flights = list(slot.calls)
        slot.calls.clear()
        for flight in flights:
            if flight.deadline is not None:
                flight.deadline.cancel()
        if slot.handover is not None:
            slot.handover.cancel()
            slot.handover = None
        slot.alive = False
        self._backend.kill(slot_id)
        return flights

    # -- timeouts ---------------------------------------------------------------------------
    def arm_timeout(self, slot_id: int, flight: InFlight, when_from: float) -> None:
        limit = flight.batch.timeout_of(flight.positions[0]) or UNTIMED_RECHECK
        flight.deadline = self._deadlines.add(
            when_from + limit, lambda: self._check_timeout(slot_id, flight)
        )

    def _check_timeout(self, slot_id: int, flight: InFlight) -> None:
        """Time out the item the slot's worker runs now, or look again when it could be due.

        Which item of a Call runs, and since when, is known only from the backend's
        ``running_item`` (the worker writes it in shared memory; no message per item). A Call
        of several items (an explicit ``chunksize`` with ``Task(timeout=...)`` on some tasks)
        may run one without a timeout before one with: so while an untimed item runs, the
        check looks again every ``UNTIMED_RECHECK`` seconds, to see the next item start and
        give it its own deadline from its start. Only batches with timeouts arm this."""
        if self._slots[slot_id].call is not flight:
            return
        if self._slots[slot_id].handover is not None:  # settled when the hand-over ends
            flight.deadline = self._deadlines.add(
                time.monotonic() + self._handover_wait, lambda: self._check_timeout(slot_id, flight)
            )
            return
        call_id, index, started = self._backend.running_item(slot_id)
        now = time.monotonic()
        if (
            index < 0 or call_id != flight.call_id
        ):  # not started yet (a fresh worker still starting): give it the full time
            self.arm_timeout(slot_id, flight, now)
            return
        pos = flight.positions[index]
        limit = flight.batch.timeout_of(pos)
        if limit is None or now < started + limit:
            when = started + limit if limit is not None else now + UNTIMED_RECHECK
            flight.deadline = self._deadlines.add(
                when, lambda: self._check_timeout(slot_id, flight)
            )
            return
        pid = self._slots[slot_id].pid
        # Where it hung, asked before the kill (a short wait: ``_backends.remains``), and
        # what it wrote so far.
        stack = self._backend.dump_stack(slot_id)
        remains = self._backend.remains(slot_id)
        self._killed(slot_id, "timeout")
        for queued in self._abandon(slot_id)[1:]:
            queued.batch.requeue(queued.positions)
        basis = timeout_basis(flight.batch, pos)  # survival hook: how timeout="3x" got there
        error = TaskTimeout(flight.batch.key_of(pos), limit, pid=pid, stack=stack, basis=basis)
        output = (remains.stdout, remains.stderr)
        self._failures.lose(slot_id, flight, index, Status.TIMEOUT, error, output)
        self.restart(slot_id)

    # -- cancel and hand-over (Ctrl-C) ------------------------------------------------------
    def cancel(self, slot_id: int, harvest: bool) -> None:
        """The slot runs a Call of a cancelled batch: stop its worker now, or (``harvest``)
        first ask it for the finished part of that Call."""
        if not harvest:
            self._stop(slot_id, 0, self._ran(slot_id, None, None))
        elif self._slots[slot_id].handover is None:
            self._ask_handover(slot_id)

    def _ask_handover(self, slot_id: int) -> None:
        answer = self._backend.hand_over(slot_id)
        if answer is not None:  # the Call ran in this process: the answer is at hand
            self.end_handover(slot_id, answer)
            return
        self._slots[slot_id].handover = self._deadlines.add(
            time.monotonic() + self._handover_wait, lambda: self.end_handover(slot_id, None)
        )

    def end_handover(self, slot_id: int, answer: Handover | None) -> None:
        """The worker answered (or did not, in time): take what finished of a cancelled Call,
        then stop the worker if it still has Calls of a cancelled batch."""
        slot = self._slots[slot_id]
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
            self._stop(slot_id, done, self._ran(slot_id, answer, None))

    def _take_finished(self, slot_id: int, flight: InFlight, result: Result) -> int:
        """Settle the first items of ``flight``, which ``result`` reports finished; their
        number."""
        done = min(len(result.values), len(flight.positions))
        if done:
            positions = flight.positions[:done]
            attempts = flight.batch.attempts_snapshot(positions)
            errors = result.errors or {}
            self._settle(slot_id, flight.batch, positions, result, errors, attempts)
            self._complete(flight.batch)
        return done

    def _ran(
        self, slot_id: int, answer: Handover | None, died_at: tuple[int, int, int] | None
    ) -> int:
        """How many items of the slot's running Call had started (their attempt counts).
        ``died_at``: ``(call_id, index, begun)`` of a death; else the stamp is read now."""
        flight = self._slots[slot_id].call
        if flight is None:
            return 0
        if answer is not None:  # the worker said where it was
            if answer.call_id != flight.call_id or answer.result is None:
                return 0
            return min(len(answer.result.values) + 1, len(flight.positions))
        call_id, index, begun = died_at or (*self._backend.running_item(slot_id)[:2], -1)
        if call_id != flight.call_id:
            return 0
        if index == SENDING:  # answering: every item ran
            return len(flight.positions)
        if index < 0:  # in no item: between two (a death says how many had begun), or loading
            return min(begun, len(flight.positions)) if index == BETWEEN and begun > 0 else 0
        return min(index + 1, len(flight.positions))

    def _stop(self, slot_id: int, done: int, ran: int) -> None:
        """Kill the slot's worker and settle its Calls: positions of cancelled batches end
        ``cancelled`` (after the ``done`` finished ones of the running Call; an attempt is
        counted for its ``ran`` first items, which had started), the others go back to their
        queue."""
        self._killed(slot_id, "cancelled")
        for i, flight in enumerate(self._abandon(slot_id)):
            batch = flight.batch
            if not batch.cancelled:  # another batch's Call: back to its queue
                why = "its worker was stopped to cancel another batch's tasks"
                self._requeue(slot_id, [flight], ran if i == 0 else 0, why)
                continue
            started = ran if i == 0 else 0
            for offset in range(done if i == 0 else 0, len(flight.positions)):
                ran_here = slot_id if offset < started else None
                self._failures.finish_cancelled(batch, flight.positions[offset], ran_here)
            self._complete(batch)
        self.restart(slot_id)
