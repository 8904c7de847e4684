"""Where each position of a batch is in its life, and which positions run next: one owner.

A pure state machine (no I/O, no clock), owned by one ``Batch`` and driven by the engine
thread. Every position is in exactly one state, kept in ``state`` (one byte per position)::

    NEW ──take/pick──► RUNNING ──finish──► OK | FAILED | CANCELLED
     │                  │  ▲  │
     │                  │  │  └─back_off──► BACKOFF ──retry──► WAITING
     │           requeue│  └──────take/pick───────────────────────┘
     │                  └──────────────────────────────────────► WAITING
     ├─given (created already final, settled when the batch is accepted)──► CACHED
     └─finish (never ran: cancelled, a fixture broken, skipped, the engine failed)──► final

The transition table (each row is one method; nothing else writes ``state``):

    =============  =====================  =========  ==========================================
    method         from                   to         when
    =============  =====================  =========  ==========================================
    take / pick    NEW, WAITING           RUNNING    handed out for a Call
    requeue        RUNNING, BACKOFF       WAITING    never started: queued behind a lost Call,
                                                     after the item that ended its Call, a
                                                     Call split one by one before it ran
    requeue_lost   RUNNING                WAITING    started, but its result was lost with its
                                                     worker (another item of its Call crashed
                                                     or timed out, the worker was stopped):
                                                     an attempt recorded, not charged
    back_off       RUNNING                BACKOFF    a failed attempt waits out its retry delay
    retry          BACKOFF                WAITING    the delay is over
    finish         any but a final one    final      the one path to OK, FAILED (failed,
                                                     timeout, crashed, skipped), CANCELLED,
                                                     CACHED (given up front)
    =============  =====================  =========  ==========================================

``stop`` (cancel) changes no state: it ends hand-outs and returns the positions that are
neither running nor final, which the caller then finishes (cancelled).

What runs next is chosen here only: ``take`` for a plain batch (a requeued chunk first, else
the next ``size`` new positions from ``cursor``), ``pick`` for a batch with a ``Scheduler``
(which keeps its own finer states — ready, parked on a gate — of the positions that are NEW
or WAITING here, and is told of every move). The sizes are the batch's policy (``_batch``).

Attempts: an attempt is one start of a position in a worker. ``extra`` counts the earlier
attempts (those that ended without the position's final outcome); ``earlier`` keeps their
records (``Attempt``) for the Outcome's ``history``; ``free`` counts those of them that are not
charged to the task's ``retries`` (``requeue_lost``: the run's end was not the task's doing).
All three only for positions that ran more than once.

``validate`` checks the invariants (the tests call it after every engine step and batch:
``CORRAL_VALIDATE=1``): the counts agree with the states, the running positions are the
ones in flight, the queue holds only waiting ones, a scheduler agrees on every position.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from ._outcome import Attempt
from ._scheduler import BACKOFF as S_BACKOFF
from ._scheduler import DONE as S_DONE
from ._scheduler import PARKED as S_PARKED
from ._scheduler import READY as S_READY
from ._scheduler import RUNNING as S_RUNNING
from ._scheduler import WAITING as S_WAITING
from ._scheduler import Scheduler

NEW, WAITING, RUNNING, BACKOFF, OK, FAILED, CANCELLED, CACHED = range(8)
FINAL = (OK, FAILED, CANCELLED, CACHED)
NAMES = ("new", "waiting", "running", "backing-off", "ok", "failed", "cancelled", "cached")

SMALL = 16
"""Up to this many positions change state one by one; more, as one slice of ``state``."""

_BYTE = [bytes((s,)) for s in range(len(NAMES))]
_RUNNING_BYTE = _BYTE[RUNNING]
_NONE: list[tuple[int, int]] = []  # finish's answer without a scheduler (never appended to)

# What a scheduler may say of a position in each state here.
_AGREES = {
    NEW: (S_WAITING, S_READY, S_PARKED),
    WAITING: (S_READY, S_PARKED),
    RUNNING: (S_RUNNING,),
    BACKOFF: (S_BACKOFF,),
}


class InvalidState(AssertionError):
    """A position state invariant does not hold: a bug in corral."""


class Positions:
    def __init__(self, n: int, scheduler: Scheduler | None = None) -> None:
        self.n = n
        self.state = bytearray(n)  # all NEW
        self.scheduler = scheduler
        # Plain batches: positions from here on were never handed out (a scheduler hands
        # out a scheduled batch's positions: none is the cursor's).
        self.cursor = n if scheduler is not None else 0
        self.queue: deque[Sequence[int]] = deque()  # plain batches: WAITING chunks, in order
        self.n_final = 0
        self.stopped = False
        self.extra: dict[int, int] = {}
        self.earlier: dict[int, list[Attempt]] = {}
        self.free: dict[int, int] = {}  # earlier attempts not charged to retries
        self.strict = False  # check each transition's "from" state (tests: CORRAL_VALIDATE)
        self._sparse = False  # some positions past the cursor are final already (given)

    # -- reading -----------------------------------------------------------------------------
    def attempts(self, pos: int) -> int:
        """The number of the attempt that runs (or would run) now."""
        return 1 + self.extra.get(pos, 0)

    def charged(self, pos: int) -> int:
        """The attempt that runs now, counted against ``retries``: the free ones left out."""
        return 1 + self.extra.get(pos, 0) - self.free.get(pos, 0)

    def history(self, pos: int) -> tuple[Attempt, ...]:
        """The records of the earlier, failed attempts of ``pos``."""
        earlier = self.earlier.get(pos)
        return tuple(earlier) if earlier else ()

    def has_ready(self) -> bool:
        if self.stopped:
            return False
        if self.scheduler is not None:
            return self.scheduler.has_work()
        return bool(self.queue) or self.cursor < self.n

    def remaining(self) -> int:
        """Positions never handed out (an estimate for chunk sizes)."""
        if self.scheduler is not None:
            return self.n - self.n_final
        return self.n - self.cursor

    # -- growing (imap) ----------------------------------------------------------------------
    def extend(self, k: int) -> None:
        self.state.extend(bytes(k))
        self.n += k

    # -- transitions -------------------------------------------------------------------------
    def take(self, size: int) -> Sequence[int]:
        """Plain batches: a requeued chunk if any, else up to ``size`` new positions."""
        state = self.state
        if self.queue:
            chunk = self.queue.popleft()
            for pos in chunk:
                self._expect(pos, WAITING)
                state[pos] = RUNNING
            return chunk
        start = self.cursor
        if not self._sparse:
            stop = min(self.n, start + size)
            if size == 1 and stop > start:  # a task per Call (timeouts, chunksize=1)
                state[start] = RUNNING
            elif stop - start > SMALL:
                state[start:stop] = _RUNNING_BYTE * (stop - start)
            else:  # a few: cheaper one by one than a slice
                for pos in range(start, stop):
                    state[pos] = RUNNING
            self.cursor = stop
            return range(start, stop)
        picked: list[int] = []
        pos = start
        while pos < self.n and len(picked) < size:
            if state[pos] == NEW:
                state[pos] = RUNNING
                picked.append(pos)
            pos += 1
        self.cursor = pos
        return picked

    def pick(self, limit: int) -> list[int]:
        """Scheduled batches: up to ``limit`` positions the scheduler says may start now."""
        assert self.scheduler is not None
        picked: list[int] = []
        state = self.state
        while len(picked) < limit:
            pos = self.scheduler.pick()
            if pos is None:
                break
            if self.strict and state[pos] not in (NEW, WAITING):
                raise InvalidState(f"picked position {pos} is {NAMES[state[pos]]}")
            state[pos] = RUNNING
            picked.append(pos)
        return picked

    def requeue(self, positions: Sequence[int]) -> None:
        """Running (or backing-off) positions wait to be handed out again."""
        if self.stopped or not positions:
            return
        state = self.state
        for pos in positions:
            if self.strict and state[pos] not in (RUNNING, BACKOFF):
                raise InvalidState(f"requeued position {pos} is {NAMES[state[pos]]}")
            state[pos] = WAITING
        if self.scheduler is not None:
            for pos in positions:
                self.scheduler.requeue(pos)
        else:
            self.queue.append(positions)

    def requeue_lost(self, positions: Sequence[int], attempts: Sequence[Attempt]) -> None:
        """Running positions whose attempt started but whose result was lost, through no
        fault of theirs: each attempt (``attempts``, in the same order) is recorded, not
        charged to retries, and the positions wait to be handed out again."""
        if self.stopped or not positions:
            return
        for pos, attempt in zip(positions, attempts, strict=True):
            self._expect(pos, RUNNING)
            self.count_attempt(pos, attempt, charged=False)
        self.requeue(positions)

    def back_off(self, pos: int, attempt: Attempt) -> None:
        """A failed attempt (recorded) waits out its retry delay."""
        self._expect(pos, RUNNING)
        self.count_attempt(pos, attempt)
        self.state[pos] = BACKOFF
        if self.scheduler is not None:
            self.scheduler.back_off(pos)

    def count_attempt(self, pos: int, attempt: Attempt, charged: bool = True) -> None:
        """An attempt of ``pos`` that ended without its final outcome (it runs again);
        ``charged``: counted against ``retries`` (not when its result was lost, not failed)."""
        self.extra[pos] = self.extra.get(pos, 0) + 1
        self.earlier.setdefault(pos, []).append(attempt)
        if not charged:
            self.free[pos] = self.free.get(pos, 0) + 1

    def retry(self, pos: int) -> None:
        """The back-off of ``pos`` is over (a no-op once it was finished: cancelled)."""
        if self.state[pos] == BACKOFF:
            self.requeue([pos])

    def finish(
        self, positions: Sequence[int], final: int, succeeded: bool | None = None
    ) -> list[tuple[int, int]]:
        """The one path to a final state. ``succeeded``: what dependants see (by default,
        whether ``final`` is OK; a CACHED position says). Returns ``(position, failed
        dependency)`` for every position that can now never run (scheduled dependants of a
        failure), in order."""
        state = self.state
        n = len(positions)
        if (
            n > SMALL
            and isinstance(positions, range)
            and positions.step == 1
            and state.count(RUNNING, positions.start, positions.stop) == n
        ):  # a whole chunk came back: one slice, not a loop (200,000 trivial tasks)
            state[positions.start : positions.stop] = _BYTE[final] * n
        elif n == 1 and not self.strict:
            state[positions[0]] = final
        elif self.strict:
            for pos in positions:
                if state[pos] in FINAL:
                    raise InvalidState(f"position {pos} finished twice")
                state[pos] = final
        else:
            for pos in positions:
                state[pos] = final
        self.n_final += n
        if self.scheduler is None:
            return _NONE
        ok = final == OK if succeeded is None else succeeded
        skipped: list[tuple[int, int]] = []
        for pos in positions:
            skipped.extend(self.scheduler.finished(pos, ok))
        return skipped

    def give(self, pos: int) -> None:
        """``pos`` is final already (cached): never hand it out."""
        if self.scheduler is None and pos >= self.cursor:
            self._sparse = True

    def stop(self) -> list[int]:
        """Hand out nothing more. Returns the positions neither running nor final (waiting,
        never handed out, backing off); the caller finishes each."""
        self.stopped = True
        state = self.state
        waiting = [p for chunk in self.queue for p in chunk]
        self.queue.clear()
        waiting.extend(p for p in range(self.cursor, self.n) if state[p] == NEW)
        self.cursor = self.n
        if self.scheduler is not None:
            waiting.extend(self.scheduler.stop())
        waiting.extend(p for p in range(self.n) if state[p] == BACKOFF)
        return waiting

    def _expect(self, pos: int, expected: int) -> None:
        if self.strict and self.state[pos] != expected:
            raise InvalidState(
                f"position {pos} is {NAMES[self.state[pos]]}, expected {NAMES[expected]}"
            )

    # -- invariants --------------------------------------------------------------------------
    def validate(self, in_flight: Iterable[Sequence[int]], full: bool = True) -> None:
        """Raise ``InvalidState`` unless every invariant holds. ``in_flight``: the positions
        of this batch's Calls that workers hold. ``full`` adds the checks that cost a pass
        over every position in Python (scheduler agreement)."""
        state = self.state

        def fail(why: str) -> None:
            raise InvalidState(f"position state: {why}")

        if len(state) != self.n:
            fail(f"{len(state)} states for {self.n} positions")
        counts = [state.count(s) for s in range(len(NAMES))]
        if sum(counts) != self.n:
            fail(f"states outside {NAMES}")
        if sum(counts[s] for s in FINAL) != self.n_final:
            fail(f"{self.n_final} counted final, {sum(counts[s] for s in FINAL)} are")
        flying = [p for positions in in_flight for p in positions]
        if len(set(flying)) != len(flying):
            fail("a position is in two Calls")
        if any(state[p] != RUNNING for p in flying):
            fail(f"positions in flight not running: {[p for p in flying if state[p] != RUNNING]}")
        if counts[RUNNING] != len(flying):
            fail(f"{counts[RUNNING]} running, {len(flying)} in flight")
        for pos, attempts in self.extra.items():
            if len(self.earlier.get(pos, ())) != attempts:
                fail(f"position {pos}: {attempts} earlier attempts, {len(self.earlier[pos])} kept")
        for pos, free in self.free.items():
            if not 0 < free <= self.extra.get(pos, 0):
                fail(f"position {pos}: {free} free attempts of {self.extra.get(pos, 0)} earlier")
        if self.scheduler is None:
            queued = [p for chunk in self.queue for p in chunk]
            if len(queued) != counts[WAITING] or any(state[p] != WAITING for p in queued):
                fail(f"{counts[WAITING]} waiting, the queue holds {len(queued)}")
            if not self.stopped:
                fresh = state.count(NEW, self.cursor) + state.count(CACHED, self.cursor)
                if fresh != self.n - self.cursor:
                    fail("a position past the cursor was handed out")
                if state.count(NEW, 0, self.cursor) and not self._sparse:
                    fail("a position before the cursor was never handed out")
        elif full:
            sched = self.scheduler
            for pos in range(self.n):
                s, theirs = state[pos], sched._state[pos]
                allowed = (S_DONE,) if s in FINAL else _AGREES[s]
                if sched.stopped and s in (NEW, WAITING):
                    allowed = (*allowed, S_DONE)
                if theirs not in allowed:
                    fail(f"position {pos} is {NAMES[s]}, its scheduler's state {theirs}")
