"""A heap of timed actions (timeouts, retry back-off), on a clock the owner passes in.

Owned by the engine thread alone. Cancelling is lazy: a cancelled entry stays in the heap and
is skipped when it comes due, which keeps ``cancel`` O(1).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from ._record import Record

Action = Callable[[], None]
"""What a deadline does when it comes due (on the engine thread)."""


class Deadline(Record):
    """Compared (``==``, and ordered, as the heap needs) by ``(when, seq)`` only, as the
    dataclass it was (``order=True``; ``action`` and ``cancelled`` with ``compare=False``)."""

    __slots__ = ("when", "seq", "action", "cancelled")  # noqa: RUF023

    def __init__(self, when: float, seq: int, action: Action, cancelled: bool = False) -> None:
        self.when = when
        self.seq = seq
        self.action = action
        self.cancelled = cancelled

    def _values(self) -> tuple[Any, ...]:  # what ``==`` compares (``Record``)
        return (self.when, self.seq)

    def __lt__(self, other: Any) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.when, self.seq) < (other.when, other.seq)

    def __le__(self, other: Any) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.when, self.seq) <= (other.when, other.seq)

    def __gt__(self, other: Any) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.when, self.seq) > (other.when, other.seq)

    def __ge__(self, other: Any) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.when, self.seq) >= (other.when, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._seq = itertools.count()

    def add(self, when: float, action: Action) -> Deadline:
        entry = Deadline(when, next(self._seq), action)
        heapq.heappush(self._heap, entry)
        return entry

    def next_time(self) -> float | None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].when if self._heap else None

    def pop_due(self, now: float) -> list[Action]:
        """Actions whose time has come, earliest first."""
        due = []
        while self._heap and self._heap[0].when <= now:
            entry = heapq.heappop(self._heap)
            if not entry.cancelled:
                due.append(entry.action)
        return due
