"""How a failed attempt ends: retried after back-off, or final; and a Call lost as a whole.

Engine thread only. The engine owns one ``Failures``; it, the dispatcher (``_dispatch``) and the
crew (``_crew``) call it whenever an attempt fails or a position must end without a result::

    attempt failed (error, timeout, crash) ──► attempt_failed
        │ retries left and retry_on matches ──► back_off (a deadline) ──► retry
        └ otherwise ───────────────────────────► finish_failed ──► batch.finish_failed (final)
    cancelled ──► finish_cancelled ──► finish_failed
    Call failed at an edge (CallFailed, died while unpickling/answering) ──► failed_at_edge:
        one task: its attempt fails; several: requeued one by one (after answering: each
        ran, ``lost``; before: none did, no attempt)
    worker gone while running item i ──► lose: item i's attempt fails; the items before it
        ran, their results died with the worker (``lost``); those after it never started
    worker gone in no item of its Call, b items begun ──► died_between: b ``lost``, the rest
        requeued
    a Call's started items whose results are lost (a death or stop not theirs) ──► lost:
        each an attempt on record, not charged to retries, requeued

Attempts (``docs/failures.md``): every start of a task in a worker is an attempt, counted in
``Outcome.attempts`` and recorded in its ``history``. ``retries`` is charged only for the
attempts that failed through the task's own run (it raised, timed out, its worker died while
it ran); an attempt whose result was lost for another reason is free (``lost``). A task
that never started (queued behind, or after the item that ended its Call) has no attempt.

What it owns: nothing of its own but the back-off timers it adds to the engine's
``Deadlines``. It reads the slots (the pid an Outcome names), counts failed fixture set-ups
(``FixtureGuard.observe``), and moves positions only through the batch's ``Positions``
(``requeue``, ``back_off``, ``retry``, with the record of each failed attempt) and
``Batch.finish_failed``, so a position's final outcome is given exactly once (``_positions``).
After settling, it hands the batch to ``complete`` (the engine's ``_complete_if_done``).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._batch import Batch
from ._deadlines import Deadlines
from ._errors import (
    CorralError,
    ExceptionWithTraceback,
    FixtureError,
    RemoteTraceback,
    SerializationError,
    TaskCancelled,
    WorkerCrashed,
)
from ._events import Events, TaskRetried
from ._fixtures import FixtureSet
from ._messages import ARGUMENTS, FUNCTION, RESULT
from ._outcome import Attempt, Outcome, Status
from ._reasons import reason_lines
from ._slots import InFlight, Slot

MAX_BACKOFF = 60.0

EDGE_ERRORS = {
    ARGUMENTS: "cannot unpickle the arguments of task {key!r} in the worker: {what}",
    FUNCTION: "cannot unpickle the function of task {key!r} in the worker: {what}",
    RESULT: "cannot pickle the result of task {key!r}: {what}",
}


def edge_error(edge: str, key: Any, what: str) -> CorralError:
    """The error of task ``key``, whose Call failed at ``edge`` (a worker's CallFailed)."""
    if edge in EDGE_ERRORS:
        return SerializationError(EDGE_ERRORS[edge].format(key=key, what=what))
    return CorralError(f"the worker failed around task {key!r} (a bug in corral): {what}")


DIED_DURING = {
    ARGUMENTS: "while unpickling the task's arguments",
    FUNCTION: "while unpickling the task's function",
    RESULT: "while pickling or sending the task's result",
}


def worker_index(in_caller: bool, slot_id: int) -> int:
    """What an Outcome says ran the task: the slot, or -1 for the calling process (a backend
    that ``shares_memory_with_coordinator``)."""
    return -1 if in_caller else slot_id


class Failures:
    def __init__(
        self,
        slots: list[Slot],
        in_caller: bool,
        deadlines: Deadlines,
        fixture_guard: FixtureGuard,
        complete: Callable[[Batch], None],
        events: Events | None = None,
    ) -> None:
        self.events = events if events is not None else Events()
        self._slots = slots
        self._in_caller = in_caller
        self._deadlines = deadlines
        self._fixture_guard = fixture_guard
        self._complete = complete

    def attempt_failed(
        self,
        batch: Batch,
        pos: int,
        status: Status,
        error: BaseException,
        slot_id: int | None,
        times: tuple[float | None, float | None],
        tb: str | None = None,
        usage: Usage | None = None,
        output: tuple[str | None, str | None] | None = None,
    ) -> None:
        """An attempt of ``pos`` ended with ``error``: retried (after back-off) or final.
        ``usage``: its share of its Call's ``(cpu, peak_rss)`` when its Result came back;
        ``output``: the attempt's captured (stdout, stderr) (``capture_output``): the Outcome
        keeps the last attempt's."""
        self._fixture_guard.observe(error)  # count failed fixture set-ups
        attempts = batch.attempts_of(pos)
        charged = batch.positions.charged(pos)  # free attempts (``lost``) left out
        retry = (
            not batch.cancelled
            and charged <= batch.retries_of(pos)
            and isinstance(error, batch.options.retry_on)
        )
        if not retry:
            self.finish_failed(batch, pos, status, error, slot_id, times, tb, usage, output)
            return
        attempt = self._attempt(batch, pos, status, error, slot_id, times, usage)
        delay = min(batch.options.backoff * 2 ** (charged - 1), MAX_BACKOFF)
        batch.retry_queued[pos] = time.time() + max(delay, 0.0)
        positions = batch.positions
        if self.events.rare:
            self.events.emit(
                TaskRetried(id(batch), pos, batch.key_of(pos), attempts, error, max(delay, 0.0))
            )
        if delay <= 0:
            positions.count_attempt(pos, attempt)
            positions.requeue([pos])
            return
        positions.back_off(pos, attempt)
        self._deadlines.add(time.monotonic() + delay, lambda: positions.retry(pos))

    def _attempt(
        self,
        batch: Batch,
        pos: int,
        status: Status,
        error: BaseException,
        slot_id: int | None,
        times: tuple[float | None, float | None] | None,
        usage: Usage | None = None,
    ) -> Attempt:
        """The record of an attempt that ran on ``slot_id`` and ended with ``error``."""
        cpu, peak_rss = usage or (None, None)
        # an attempt whose Result came back ran in a worker that lived on
        exit = _exit_of(status, error) if usage is None else (None, None)
        reason = next(iter(reason_lines(error, 1)), None)
        return self._record(
            batch, pos, slot_id, status, reason, times or (None, None), exit, cpu, peak_rss
        )

    def _record(
        self,
        batch: Batch,
        pos: int,
        slot_id: int | None,
        status: Status,
        error: str | None,
        times: tuple[float | None, float | None],
        exit: tuple[int | None, int | None],
        cpu: float | None = None,
        peak_rss: int | None = None,
    ) -> Attempt:
        started, finished = times
        exitcode, sig = exit
        slot = self._slots[slot_id] if slot_id is not None else None
        return Attempt(
            worker=worker_index(self._in_caller, slot_id) if slot_id is not None else None,
            pid=slot.pid if slot is not None else None,
            started=started,
            finished=finished,
            status=status,
            error=error,
            queued=batch.queued_of(pos),
            cpu=cpu,
            peak_rss=peak_rss,
            exitcode=exitcode,
            signal=sig,
        )

    def finish_failed(
        self,
        batch: Batch,
        pos: int,
        status: Status,
        error: BaseException,
        slot_id: int | None,
        times: tuple[float | None, float | None] | None,
        tb: str | None = None,
        usage: Usage | None = None,
        output: tuple[str | None, str | None] | None = None,
    ) -> None:
        started, finished = times or (None, None)
        stdout, stderr = output or (None, None)
        slot = self._slots[slot_id] if slot_id is not None else None
        # A position that never started its current attempt (cancelled while waiting, or
        # failed before dispatch) has made one attempt fewer than attempts_of counts.
        attempts = batch.attempts_of(pos) - (0 if slot is not None else 1)
        history = batch.positions.history(pos)
        if slot_id is not None:
            history = (*history, self._attempt(batch, pos, status, error, slot_id, times, usage))
        outcome = Outcome(
            key=batch.key_of(pos),
            status=status,
            error=error,
            attempts=attempts,
            worker=worker_index(self._in_caller, slot_id) if slot_id is not None else None,
            pid=slot.pid if slot is not None else None,
            started=started,
            finished=finished,
            cpu_seconds=usage[0] if usage is not None else None,
            max_rss=usage[1] if usage is not None else None,
            traceback=tb,
            group=batch.group_of(pos),
            history=history,
            stdout=stdout,
            stderr=stderr,
        )
        batch.finish_failed(pos, outcome)

    def finish_cancelled(self, batch: Batch, pos: int, slot_id: int | None) -> None:
        drained = f": the run drained ({batch.drained})" if batch.drained else ""
        error = TaskCancelled(
            f"task {batch.key_of(pos)!r} was cancelled{drained}", key=batch.key_of(pos)
        )
        self.finish_failed(batch, pos, Status.CANCELLED, error, slot_id, None)

    def fail_all(self, batch: Batch, error: BaseException) -> None:
        """Every position of ``batch`` not yet final fails with ``error`` (no attempt)."""
        for pos in batch.stop():
            self.finish_failed(batch, pos, Status.FAILED, error, None, None)
        self._complete(batch)

    def failed_at_edge(
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
            if edge == RESULT:  # every task ran; their results are what failed to travel
                self.lost(slot_id, flight, len(positions), status, error_for)
            batch.requeue_one_by_one(positions)
            return
        times = (flight.started, time.time())
        for pos in positions:
            error = error_for(batch.key_of(pos))
            self.attempt_failed(batch, pos, status, error, slot_id, times, tb)
        self._complete(batch)

    def lose(
        self,
        slot_id: int,
        flight: InFlight,
        index: int,
        status: Status,
        error: BaseException,
        output: tuple[str | None, str | None] | None = None,
    ) -> None:
        """The worker of ``flight`` is gone while running item ``index``: that item's attempt
        ends with ``error``; items before it (their results died with the worker) and after it
        (never started) go back to the queue without counting an attempt."""
        batch, positions = flight.batch, flight.positions
        if index > 0:
            self.lost(slot_id, flight, index, status, lambda key: error, requeue=True)
        if index + 1 < len(positions):
            batch.requeue(positions[index + 1 :])
        started = flight.started if index == 0 else None
        times = (started, time.time())
        self.attempt_failed(
            batch, positions[index], status, error, slot_id, times, None, None, output
        )
        self._complete(batch)

    def died_between(
        self, slot_id: int, flight: InFlight, begun: int, pid: int | None, exitcode: int | None
    ) -> None:
        """The worker of ``flight`` died in none of its items: its first ``begun`` had run
        (before a death between two items, or after the last: their results are lost with
        it, ``lost``); the others never started."""

        def error(key: Any) -> BaseException:
            during = "between two tasks of its Call, after this one had finished"
            return WorkerCrashed(key, pid=pid, exitcode=exitcode, during=during)

        ran = min(max(begun, 0), len(flight.positions))
        self.lost(slot_id, flight, ran, Status.CRASHED, error, requeue=True)
        flight.batch.requeue(flight.positions[ran:])

    def lost(
        self,
        slot_id: int | None,
        flight: InFlight,
        begun: int,
        status: Status,
        why: Callable[[Any], BaseException | str],
        requeue: bool = False,
    ) -> None:
        """The first ``begun`` tasks of ``flight`` had started, and their results are lost
        with their worker, for ``why(key)`` (the error that ended the Call, or a sentence): each
        run is an attempt on record, not charged to retries. Its status says how the worker
        ended: ``crashed`` (it died) or ``cancelled`` (corral stopped it: another task's
        timeout, memory, recycling); a ``failed`` Call (its answer did not travel) stays so.
        ``requeue``: those tasks go back to the queue now (``Positions.requeue_lost``);
        otherwise only recorded, and the caller requeues (one by one)."""
        batch, positions = flight.batch, flight.positions[: max(0, begun)]
        if not positions:
            return
        kind = Status.CRASHED if status is Status.CRASHED else (
            Status.FAILED if status is Status.FAILED else Status.CANCELLED)  # fmt: skip
        records = []
        for i, pos in enumerate(positions):
            error = why(batch.key_of(pos))
            if isinstance(error, BaseException):
                exit = _exit_of(status, error)
                reason = next(iter(reason_lines(error, 1)), "")
            else:
                exit, reason = (None, None), error
            times = (flight.started if i == 0 else None, None)
            text = f"the result was lost: {reason}"
            records.append(self._record(batch, pos, slot_id, kind, text, times, exit))
        if requeue:
            batch.positions.requeue_lost(positions, records)
            return
        for pos, record in zip(positions, records, strict=True):
            batch.positions.count_attempt(pos, record, charged=False)


Usage = tuple[float, int]
"""An attempt's ``(cpu, peak_rss)``, from its Call's Result (``Attempt.cpu``, ``.peak_rss``)."""


def _exit_of(status: Status, error: BaseException) -> tuple[int | None, int | None]:
    """``(exitcode, signal)`` of the worker an attempt ended with: how it died (crashed), or
    the signal corral stopped it with (timeout: SIGTERM, then SIGKILL past ``kill_grace``);
    ``(None, None)`` otherwise."""
    if isinstance(error, WorkerCrashed) and error.exitcode is not None:
        code = error.exitcode
        return (None, -code) if code < 0 else (code, None)
    if status is Status.TIMEOUT and not isinstance(error, WorkerCrashed):
        return None, int(signal.SIGTERM)
    return None, None


def unwrap(error: Any) -> tuple[BaseException, str | None]:
    """An exception from a Result (or an InitFailed) and its worker traceback text."""
    if isinstance(error, ExceptionWithTraceback):
        return error.exc, error.tb
    cause = getattr(error, "__cause__", None)
    return error, (cause.tb if isinstance(cause, RemoteTraceback) else None)


class FixtureGuard:
    """The engine's memory of failed set-ups: stops dispatching tasks whose fixture keeps
    failing. Engine thread only.

    Each ``FixtureError`` from a worker names its fixture and the set-up attempt it comes
    from; tasks failed by the same attempt count once. After ``limit`` distinct failed
    attempts the fixture is broken for the rest of the Pool's life, and every task that needs
    it (directly or through another fixture) fails with a FixtureError when its turn comes.
    """

    def __init__(
        self,
        fixtures: FixtureSet,
        limit: int | None,
        function: Callable[[int], Callable[..., Any]],
    ) -> None:
        self._fixtures = fixtures
        self._limit = limit
        self._function = function
        self._attempts: dict[str, set[str]] = {}
        self._broken: dict[str, FixtureError] = {}
        self._needs: dict[int, set[str]] = {}

    def observe(self, error: BaseException) -> None:
        if not isinstance(error, FixtureError) or error.attempt is None or self._limit is None:
            return
        if error.fixture in self._broken:
            return
        seen = self._attempts.setdefault(error.fixture, set())
        seen.add(error.attempt)
        if len(seen) >= self._limit or getattr(error.cause, "permanent", False):
            self._broken[error.fixture] = error

    def blocked(self, batch: Batch, positions: Sequence[int]) -> dict[int, FixtureError]:
        """The positions that must not be dispatched, each with its own error."""
        if not self._broken:
            return {}
        blocked: dict[int, FixtureError] = {}
        for pos in positions:
            if batch.star:
                fn_id, _, kwargs = batch.payload([pos])[0]
                broken = self._broken_for(fn_id, kwargs)
            else:
                broken = self._broken_for(batch.fn_id, ())
            if broken is not None:
                blocked[pos] = self._refusal(broken, batch.key_of(pos))
        return blocked

    def _broken_for(self, fn_id: int, supplied: Iterable[str]) -> str | None:
        needs = self._needs.get(fn_id) if not supplied else None
        if needs is None:
            injected = self._fixtures.injectable(self._function(fn_id))
            names = [n for n in injected if n not in supplied]
            needs = self._fixtures.closure(names)
            if not supplied:
                self._needs[fn_id] = needs
        for name in sorted(needs):
            if name in self._broken:
                return name
        return None

    def _refusal(self, name: str, key: Any) -> FixtureError:
        last = self._broken[name]
        cause = last.cause
        reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(last)
        if getattr(cause, "permanent", False):
            why = "failed to set up, and would fail the same way again"
        else:
            why = f"failed to set up {len(self._attempts[name])} times"
        error = FixtureError(
            f"task {key!r} was not run: fixture {name!r} {why} "
            f"(fixture_failures={self._limit}); "
            f"last error: {reason}",  # whole: a ServiceError says why on its later lines
            fixture=name,
            key=key,
            cause=cause,
        )
        error.__cause__ = last
        return error


# -- signatures ---------------------------------------------------------------------------------
