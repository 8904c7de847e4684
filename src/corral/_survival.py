"""What lets a batch survive its machine: relative timeouts, a memory floor, draining.

Engine thread only (the parsing at the top runs at the options boundary). The engine owns one
``Survival`` and calls it at small, marked hook points ("survival hook"); it owns the state
of all three features::

    options ── timeout="3x" ──► RelativeTimeout ──► Batch.relative = RelativeLimit
                                   Engine._on_result ──► RelativeLimit.learn(each ok item)
                                   Batch.timeout_of ──► limit(): factor x median, or the floor

    Engine.step ── may_dispatch ──► available (probe) < min_free_memory: no start
    tick (every MEMORY_CHECK s, a deadline) ──► available < half of it and 2+ Calls running:
                 Crew.evict(youngest slot): its worker is killed, its tasks requeued, no
                 attempt counted (the oldest running task is never evicted: progress)

    deadline= (a deadline) ─┐
    SIGUSR1 / SIGTERM ──────┴─► drain(batch, why): waiting tasks end cancelled ("drained");
                 running ones finish, for up to drain_grace s; then Engine.cancel kills them
                 (the signals are caught in the caller's main thread: ``_draining``)

    Crew.on_died (SIGKILL) ──► oom_cause: the kernel's OOM-kill count grew: "out of memory"

What it owns: each batch's ``RelativeLimit`` (built here, kept on the batch), the memory
probe, the armed tick, the eviction count, the last OOM-kill count, and which batches drain
(``Batch.drained``, the reason, written only by ``drain``). It reads the slots (who runs
what, since when) and asks the Crew to evict and the engine to cancel.

Invariant: a drained batch takes no new work (its positions are stopped); a position evicted
for memory goes back to its queue exactly as one that never started (no attempt counted).
"""

from __future__ import annotations

import functools
import heapq
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, TypeGuard

from ._errors import ConfigError

if TYPE_CHECKING:
    import datetime

    from ._batch import Batch
    from ._deadlines import Deadlines
    from ._messages import Result
    from ._slots import Slot

RELATIVE_MIN_SAMPLES = 5
"""Succeeded tasks needed before a relative timeout is computed from their median."""

MEMORY_CHECK = 0.25
"""Seconds between two readings of available memory while a batch has ``min_free_memory``."""


@functools.cache
def _relative() -> re.Pattern[str]:
    """Compiled on first use, not at every import (issue 15, start-up)."""
    return re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(x|%)\s*$", re.IGNORECASE)


class RelativeTimeout(NamedTuple):
    """``timeout="3x"`` (``factor=3``) or ``"200%"`` (``factor=2``), as given (``text``)."""

    factor: float
    text: str


def parse_relative_timeout(value: str) -> RelativeTimeout:
    match = _relative().match(value)
    factor = float(match.group(1)) / (100 if match.group(2) == "%" else 1) if match else 0.0
    if not match or not factor > 0:
        raise ConfigError(
            f"timeout must be seconds, or a multiple of the median task duration like "
            f"'3x' or '200%', not {value!r}"
        )
    return RelativeTimeout(factor, value.strip())


def is_datetime(value: object) -> TypeGuard[datetime.datetime]:
    """``isinstance(value, datetime.datetime)``, without importing ``datetime`` on every first
    map (issue 15, start-up): a datetime object exists only once its module is imported."""
    module = sys.modules.get("datetime")
    return module is not None and isinstance(value, module.datetime)


def deadline_seconds(deadline: float | datetime.datetime, now: float) -> float:
    """Seconds from ``now`` (``time.time()``) to ``deadline``; a naive datetime is local time."""
    if is_datetime(deadline):
        return deadline.timestamp() - now
    return float(deadline)  # type: ignore[arg-type]  # not a datetime: a number


class RelativeLimit:
    """One batch's relative timeout: ``factor`` times the running median of the durations of
    its succeeded tasks (two heaps: O(log n) per task), ``floor`` seconds until there are
    ``RELATIVE_MIN_SAMPLES`` of them (no limit before then when ``floor`` is None). The
    median of the successes, not their mean: one slow success does not stretch the limit."""

    def __init__(self, spec: RelativeTimeout, floor: float | None) -> None:
        self.spec = spec
        self.floor = floor
        self._low: list[float] = []  # max-heap (negated): the lower half
        self._high: list[float] = []  # min-heap: the upper half

    def learn(self, seconds: float) -> None:
        if not self._low or seconds <= -self._low[0]:
            heapq.heappush(self._low, -seconds)
        else:
            heapq.heappush(self._high, seconds)
        if len(self._low) > len(self._high) + 1:
            heapq.heappush(self._high, -heapq.heappop(self._low))
        elif len(self._high) > len(self._low):
            heapq.heappush(self._low, -heapq.heappop(self._high))

    @property
    def samples(self) -> int:
        return len(self._low) + len(self._high)

    def median(self) -> float | None:
        if not self._low:
            return None
        if len(self._low) > len(self._high):
            return -self._low[0]
        return (-self._low[0] + self._high[0]) / 2

    def limit(self) -> float | None:
        median = self.median()
        if self.samples < RELATIVE_MIN_SAMPLES or median is None:
            return self.floor
        return self.spec.factor * median

    def basis(self) -> str:
        """How the current limit was derived, for the TaskTimeout message."""
        median = self.median()
        if self.samples < RELATIVE_MIN_SAMPLES or median is None:
            return (
                f"timeout_floor={self.floor:g} s, as fewer than {RELATIVE_MIN_SAMPLES} tasks "
                f"had succeeded for timeout={self.spec.text!r}"
            )
        return (
            f"timeout={self.spec.text!r}: {self.spec.factor:g} x the median {median:.3g} s "
            f"of {self.samples} succeeded tasks"
        )


def relative_limit(timeout: object, floor: float | None) -> RelativeLimit | None:
    return RelativeLimit(timeout, floor) if isinstance(timeout, RelativeTimeout) else None


def timeout_basis(batch: Batch, pos: int) -> str | None:
    """How the timeout of ``pos`` was derived, when it is relative (not its Task's own)."""
    own = batch.timeouts is not None and batch.timeouts[pos] is not None
    return batch.relative.basis() if batch.relative is not None and not own else None


def available_memory() -> int:
    """Bytes the machine can give without swapping (``MemAvailable``), as psutil reads it."""
    import psutil  # only with min_free_memory: not on every first map

    return int(psutil.virtual_memory().available)


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (None: unknown)."""
    try:
        with open("/proc/vmstat") as stats:
            for line in stats:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


Evict = Callable[[int], None]


class Survival:
    """The engine's owner of the memory floor and of draining (see the module docstring)."""

    def __init__(
        self,
        slots: list[Slot],
        batches: Sequence[Batch],
        deadlines: Deadlines,
        evict: Evict,
        cancel: Callable[[Batch, bool], None],
    ) -> None:
        self.probe: Callable[[], int] = available_memory  # tests may swap it for their own
        self._slots = slots
        self._batches = batches  # read only: the engine adds and removes batches
        self._deadlines = deadlines
        self._evict = evict
        self._cancel = cancel
        self._ticking = False
        self.evictions = 0  # workers stopped for memory, over the Pool's life
        self._oom_kills = oom_kills()  # the kernel's count when last read

    # -- accepting a batch -------------------------------------------------------------------
    def accept(self, batch: Batch) -> None:
        options = batch.options
        if options.deadline is not None:
            seconds = deadline_seconds(options.deadline, time.time())
            if seconds <= 0:  # past already: nothing starts
                self.drain(batch, "deadline")
            else:
                self._deadlines.add(
                    time.monotonic() + seconds, lambda: self.drain(batch, "deadline")
                )
        if options.min_free_memory is not None and not self._ticking:
            self._ticking = True
            self._deadlines.add(time.monotonic() + MEMORY_CHECK, self._tick)

    # -- the memory floor --------------------------------------------------------------------
    def _floor(self) -> int | None:
        floors = [b.options.min_free_memory for b in self._batches if not b.cancelled]
        return max((int(f) for f in floors if f is not None), default=None)

    def may_dispatch(self) -> bool:
        """Whether new tasks may start: available memory is at least every running batch's
        ``min_free_memory`` (checked once per engine step; no floor: no reading)."""
        if not self._ticking:  # no batch has a floor: the hot path reads nothing
            return True
        floor = self._floor()
        return floor is None or self.probe() >= floor

    def _tick(self) -> None:
        floor = self._floor()
        if floor is None:
            self._ticking = False
            return
        self._deadlines.add(time.monotonic() + MEMORY_CHECK, self._tick)
        if self.probe() >= floor // 2:
            return
        busy = [(s.calls[0].started, k) for k, s in enumerate(self._slots) if s.calls and s.alive]
        if len(busy) < 2:
            return  # the oldest running task always goes on: the batch progresses
        _, youngest = max(busy)
        self.evictions += 1
        self._evict(youngest)

    # -- the kernel's OOM killer ----------------------------------------------------------
    def oom_cause(self, exitcode: int | None) -> str | None:
        """Why a worker died of SIGKILL that corral did not send, when the kernel's count of
        OOM kills (``/proc/vmstat``, machine-wide: any cgroup) grew since the last reading."""
        if exitcode != -signal.SIGKILL:
            return None
        count, self._oom_kills = self._oom_kills, oom_kills()
        if count is None or self._oom_kills is None or self._oom_kills <= count:
            return None
        return (
            "killed by the kernel's OOM killer: out of memory (its cgroup's limit or the "
            "machine's); see max_worker_memory and min_free_memory"
        )

    # -- draining ----------------------------------------------------------------------------
    def drain(self, batch: Batch, why: str) -> None:
        """Stop ``batch`` taking work (its waiting tasks end cancelled, saying ``why``); its
        running tasks finish, for up to ``drain_grace`` seconds, then are cancelled."""
        if batch.done or batch.drained is not None:
            return
        batch.drained = why
        grace = batch.options.drain_grace
        self._cancel(batch, grace <= 0)  # the waiting ones now; the running ones with no grace
        if grace > 0:
            self._deadlines.add(time.monotonic() + grace, lambda: self._cancel(batch, True))


def learn_relative(limit: RelativeLimit, result: Result) -> None:
    """Each item of ``result`` that succeeded teaches ``limit`` its duration."""
    errors = result.errors or {}
    n = len(result.values)
    ends = result.finished
    for offset in range(n):
        if offset in errors:
            continue
        if ends is None:  # one duration for the whole Call (a chunk): its mean per item
            limit.learn((result.ended - result.started) / max(1, n))
        else:
            limit.learn(ends[offset] - (result.started if offset == 0 else ends[offset - 1]))
