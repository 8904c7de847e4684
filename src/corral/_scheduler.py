"""Which task of a batch starts next: locks, counted resources, memory, dependencies, order.

A pure state machine, owned by one ``Batch`` and driven by the engine thread; it knows
positions, not workers, processes or time. The engine asks ``pick()`` whenever a worker is
idle and reports back how each started position ended (``finished``, ``requeue``,
``back_off``). A position's life::

    waiting for deps ──all succeeded──► ready ──pick: fits──► running ──► done
          │                              │  ▲                  │   │
          │ a dependency failed          │  │ its gate opens   │   └─ requeue / back-off
          ▼                              ▼  │                  │      (resources released,
       skipped                         parked on a gate        │       ready again later)
                                                               └─ finished: released once

Ready tasks sit in a heap ordered by (-priority, -rank, position): rank is the task's cost
plus the costliest chain waiting on it (``_needs._upward_rank``), so ties keep submission
order. ``pick`` pops the best ready task; if something blocks it, the task is *parked* on a
gate for the first thing that blocks it (a held lock, a resource short by a given amount,
memory short by a given amount, or a reservation) and the next one is tried. Parked tasks
are not looked at again until their gate opens, so a lock with 100 waiters costs nothing per
pick. When a release opens a gate, only the best waiter of that gate goes back to the heap;
if it then parks elsewhere, the next one follows. Hence:

Work-conserving: ``pick`` returns None only when every ready task is blocked by what is
running (or by a reservation, below): a blocked task never holds back a later one that fits.

No starvation: a parked task counts the tasks started while it waits. Past
``STARVATION_LIMIT`` starts, the longest-waiting one gets a *reservation*: no other task may
take its locks, the resources it uses, or memory (if it needs memory) until it has started.
What it waits for is then only released, never re-taken, so it starts once the tasks
running now finish. One reservation at a time, in order of first blocking: every blocked task
eventually gets one. While a reservation stands, tasks that overlap it wait even if they
would fit; that is the only exception to work conservation.

Deterministic: every choice depends on the heap order and the sequence of calls, never on
time or on hashing, so the same completion order gives the same dispatch order.

What running tasks hold is kept on a ``Ledger`` shared by all scheduled batches of one engine
(one Pool): a lock is never held twice in the Pool, even by two runs going on at once, and a
release wakes the gates of every batch on the ledger. Capacities and the memory budget stay
each run's own, checked against the Pool-wide use.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._needs import Plan

EPSILON = 1e-9
"""Slack for float capacities (three tasks using 0.1 of a resource with capacity 0.3 fit)."""

STARVATION_LIMIT = 64
"""Task starts a blocked task lets pass before it gets a reservation."""

# Position states.
WAITING, READY, PARKED, RUNNING, BACKOFF, DONE = range(6)


class Gate:
    """Waiters blocked by one thing; ``kind`` is "lock", "uses", "memory" or "reserved"."""

    __slots__ = ("amount", "kind", "name", "opened", "pending", "waiters")

    def __init__(self, kind: str, name: str = "", amount: float = 0.0) -> None:
        self.kind = kind
        self.name = name
        self.amount = amount
        self.waiters: list[tuple[int, float, int]] = []
        self.pending: int | None = None  # the waiter sent back to the ready heap, not yet popped
        self.opened = False  # a reservation gate, once its reservation is over


class Reservation:
    __slots__ = ("gate", "locks", "memory", "pos", "uses")

    def __init__(self, pos: int, locks: tuple[str, ...], uses: Any, memory: int) -> None:
        self.pos = pos
        self.locks = frozenset(locks)
        self.uses = frozenset(name for name, _ in uses)
        self.memory = memory > 0
        self.gate = Gate("reserved")


class Ledger:
    """What running tasks hold, shared by the scheduled batches of one engine: locks are the
    Pool's, so two runs going on at once in one Pool never run two holders of a lock
    together; each run checks its own capacities and memory budget against the Pool-wide
    use. A release re-examines the gates of every scheduler on the ledger."""

    __slots__ = ("held", "memory_used", "schedulers", "used")

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.used: defaultdict[str, float] = defaultdict(float)
        self.memory_used = 0
        self.schedulers: list[Scheduler] = []


class Scheduler:
    def __init__(self, plan: Plan, *, starvation_limit: int = STARVATION_LIMIT) -> None:
        needs = plan.needs
        n = len(needs)
        self.n = n
        self._locks = [nd.locks for nd in needs]
        self._uses = [nd.uses for nd in needs]
        self._memory = [nd.memory for nd in needs]
        self._order = [(-needs[p].priority, -plan.rank[p], p) for p in range(n)]
        self._missing = [len(d) for d in plan.deps]
        self._dependants: list[list[int]] = [[] for _ in range(n)]
        for pos, deps in enumerate(plan.deps):
            for dep in deps:
                self._dependants[dep].append(pos)
        self._state = bytearray(n)
        self._ready = [self._order[p] for p in range(n) if not self._missing[p]]
        heapq.heapify(self._ready)
        for _, _, pos in self._ready:
            self._state[pos] = READY
        self.capacity = plan.capacities
        self.budget = plan.memory_budget
        self.ledger = Ledger()
        self.ledger.schedulers.append(self)
        self._lock_gates: dict[str, Gate] = {}
        self._use_gates: dict[str, dict[float, Gate]] = {}
        self._memory_gates: dict[int, Gate] = {}
        self._dirty: dict[Gate, None] = {}  # gates to look at: they may have opened
        self._pending: dict[int, Gate] = {}
        self._limit = starvation_limit
        self._started = 0
        self._blocked_since: dict[int, int] = {}
        self._blocked_fifo: deque[tuple[int, int]] = deque()
        self.reservation: Reservation | None = None
        self.stopped = False

    def share_ledger(self, ledger: Ledger) -> None:
        """Count what this batch's tasks hold on ``ledger`` (the engine's) from now on; called
        when the batch is accepted, before anything of it runs."""
        self.detach()
        self.ledger = ledger
        ledger.schedulers.append(self)

    def detach(self) -> None:
        """The batch is done: its gates need no more news of releases."""
        if self in self.ledger.schedulers:
            self.ledger.schedulers.remove(self)

    # -- the engine's questions ---------------------------------------------------------------
    def has_work(self) -> bool:
        """Whether ``pick`` may find something (cheap; ``pick`` decides)."""
        return not self.stopped and bool(self._ready or self._dirty)

    def pick(self) -> int | None:
        """The best ready task that fits now, marked running with what it needs taken."""
        if self.stopped:
            return None
        if self._dirty:
            self._pump()
        ready = self._ready
        while ready:
            pos = heapq.heappop(ready)[2]
            if self._state[pos] == DONE:
                continue  # final before it ran: given up front (cached)
            gate = self._pending.pop(pos, None)
            if gate is not None:
                gate.pending = None
                if gate.waiters:
                    self._dirty[gate] = None  # still open? its next waiter may follow
            blocker = self._blocker(pos)
            if blocker is None:
                self._acquire(pos)
                return pos
            self._park(pos, blocker)
            if self._dirty:
                self._pump()
        return None

    # -- what the engine reports ----------------------------------------------------------------
    def finished(self, pos: int, ok: bool) -> list[tuple[int, int]]:
        """``pos`` reached its final state (having run, or not: a cached position, told
        before any pick, is left in the ready heap and passed over there). Returns
        ``(position, failed dependency)`` for every task that can now never run (dependants
        of a failure, transitively), in order."""
        self._release(pos)
        self._state[pos] = DONE
        if self.stopped:
            return []
        if ok:
            for dep in self._dependants[pos]:
                self._missing[dep] -= 1
                if not self._missing[dep] and self._state[dep] == WAITING:
                    self._state[dep] = READY
                    heapq.heappush(self._ready, self._order[dep])
            return []
        skipped = []
        stack = [(dep, pos) for dep in self._dependants[pos]]
        while stack:
            dep, because = stack.pop()
            if self._state[dep] != WAITING:
                continue
            self._state[dep] = DONE
            skipped.append((dep, because))
            stack.extend((after, dep) for after in self._dependants[dep])
        skipped.sort()
        return skipped

    def requeue(self, pos: int) -> None:
        """A started position goes back to the ready heap (its worker died, or a retry)."""
        if self._state[pos] not in (RUNNING, BACKOFF):
            return
        self._release(pos)
        self._state[pos] = READY
        heapq.heappush(self._ready, self._order[pos])

    def back_off(self, pos: int) -> None:
        """A failed attempt waits before its retry, holding nothing meanwhile."""
        self._release(pos)
        self._state[pos] = BACKOFF

    def stop(self) -> list[int]:
        """No more picks. Returns positions that never started (and are not backing off)."""
        self.stopped = True
        state = self._state
        waiting = [p for p in range(self.n) if state[p] in (WAITING, READY, PARKED)]
        for pos in waiting:
            state[pos] = DONE
        self._ready.clear()
        self._dirty.clear()
        return waiting

    def idle(self) -> bool:
        """Nothing held: every lock free, every resource and the memory budget unused."""
        ledger = self.ledger
        return (
            not ledger.held
            and ledger.memory_used == 0
            and all(abs(v) < EPSILON for v in ledger.used.values())
        )

    # -- taking and giving back --------------------------------------------------------------------
    def _blocker(self, pos: int) -> Gate | None:
        r = self.reservation
        if r is not None and pos != r.pos and self._overlaps(pos, r):
            return r.gate
        ledger = self.ledger
        locks = self._locks[pos]
        if locks:
            held = ledger.held
            for name in locks:
                if name in held:
                    return self._gate_for_lock(name)
        uses = self._uses[pos]
        if uses:
            used, capacity = ledger.used, self.capacity
            for name, amount in uses:
                if used[name] + amount > capacity[name] + EPSILON:
                    return self._gate_for_use(name, amount)
        memory = self._memory[pos]
        if memory and ledger.memory_used + memory > self.budget:
            return self._gate_for_memory(memory)
        return None

    def _overlaps(self, pos: int, r: Reservation) -> bool:
        if r.memory and self._memory[pos]:
            return True
        if r.locks and any(name in r.locks for name in self._locks[pos]):
            return True
        return bool(r.uses) and any(name in r.uses for name, _ in self._uses[pos])

    def _acquire(self, pos: int) -> None:
        ledger = self.ledger
        ledger.held.update(self._locks[pos])
        for name, amount in self._uses[pos]:
            ledger.used[name] += amount
        ledger.memory_used += self._memory[pos]
        self._state[pos] = RUNNING
        self._started += 1
        self._blocked_since.pop(pos, None)
        r = self.reservation
        if r is not None and r.pos == pos:
            self.reservation = None
            r.gate.opened = True
            if r.gate.waiters:
                self._dirty[r.gate] = None
        self._check_starving()

    def _release(self, pos: int) -> None:
        """Give back what ``pos`` holds; a no-op unless it is running (so: exactly once)."""
        if self._state[pos] != RUNNING:
            return
        self._state[pos] = READY  # the caller sets the real next state
        ledger = self.ledger
        locks, uses, memory = self._locks[pos], self._uses[pos], self._memory[pos]
        ledger.held.difference_update(locks)
        for name, amount in uses:
            ledger.used[name] -= amount
        ledger.memory_used -= memory
        for scheduler in ledger.schedulers:
            scheduler._released(locks, uses, memory)

    def _released(self, locks: tuple[str, ...], uses: Any, memory: int) -> None:
        """Something was given back (by this batch or another on the ledger): the gates
        waiting for it may have opened."""
        dirty = self._dirty
        for name in locks:
            gate = self._lock_gates.get(name)
            if gate is not None and gate.waiters:
                dirty[gate] = None
        for name, _ in uses:
            for gate in self._use_gates.get(name, {}).values():
                if gate.waiters:
                    dirty[gate] = None
        if memory:
            for gate in self._memory_gates.values():
                if gate.waiters:
                    dirty[gate] = None

    # -- gates -------------------------------------------------------------------------------------
    def _park(self, pos: int, gate: Gate) -> None:
        heapq.heappush(gate.waiters, self._order[pos])
        self._state[pos] = PARKED
        if pos not in self._blocked_since:
            self._blocked_since[pos] = self._started
            self._blocked_fifo.append((self._started, pos))

    def _pump(self) -> None:
        """Send the best waiter of each gate that opened back to the ready heap.

        Each gate in ``_dirty`` is looked at once and leaves it: a closed one is re-added by
        the next release that concerns it (or the end of its reservation), one whose waiter
        went back to the heap when ``pick`` pops that waiter. So a pump costs the gates that
        changed, not every gate with waiters."""
        dirty = self._dirty
        while dirty:
            gate = next(iter(dirty))
            del dirty[gate]
            if gate.pending is not None or not gate.waiters or not self._is_open(gate):
                continue
            order = heapq.heappop(gate.waiters)
            pos = order[2]
            gate.pending = pos
            self._pending[pos] = gate
            self._state[pos] = READY
            heapq.heappush(self._ready, order)

    def _is_open(self, gate: Gate) -> bool:
        kind, ledger = gate.kind, self.ledger
        if kind == "lock":
            return gate.name not in ledger.held
        if kind == "uses":
            return ledger.used[gate.name] + gate.amount <= self.capacity[gate.name] + EPSILON
        if kind == "memory":
            return ledger.memory_used + gate.amount <= self.budget
        return gate.opened

    def _gate_for_lock(self, name: str) -> Gate:
        gate = self._lock_gates.get(name)
        if gate is None:
            gate = self._lock_gates[name] = Gate("lock", name)
        return gate

    def _gate_for_use(self, name: str, amount: float) -> Gate:
        gates = self._use_gates.setdefault(name, {})
        gate = gates.get(amount)
        if gate is None:
            gate = gates[amount] = Gate("uses", name, amount)
        return gate

    def _gate_for_memory(self, amount: int) -> Gate:
        gate = self._memory_gates.get(amount)
        if gate is None:
            gate = self._memory_gates[amount] = Gate("memory", amount=amount)
        return gate

    # -- starvation --------------------------------------------------------------------------------
    def _check_starving(self) -> None:
        if self.reservation is not None:
            return
        fifo = self._blocked_fifo
        while fifo:
            since, pos = fifo[0]
            if self._blocked_since.get(pos) != since:
                fifo.popleft()  # started (or re-blocked later) since
                continue
            if self._started - since > self._limit:
                fifo.popleft()
                self.reservation = Reservation(
                    pos, self._locks[pos], self._uses[pos], self._memory[pos]
                )
            return
