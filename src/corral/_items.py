"""The items of a growing batch (``imap``, submitted tasks): parts as they were added.

Engine thread only (``Batch`` owns one). An ``imap`` over a generator adds its input in
parts (its window) and forgets each item once its task is final, so that an endless stream
runs in bounded memory. A dict by position did that at a cost per item on every step
(insert, look up, pop: most of the gap between ``imap`` of a generator and ``map`` of a
list, benchmark S6); here a part is one list, a Call of consecutive positions is one slice,
and a part is let go as a whole once all its items are forgotten::

    parts:  [0 .. 4095] [4096 .. 8191] [8192 ..]      (start, items, how many not forgotten)
             dropped     live            live
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import Any

_GONE: Any = object()
"""What a forgotten item's place holds (an item may be None)."""


class GrowingItems:
    def __init__(self, first: Sequence[Any] = ()) -> None:
        self._starts: list[int] = []
        self._parts: list[list[Any] | None] = []
        self._left: list[int] = []  # items of each part not yet forgotten
        self._head = 0  # the first part not dropped
        self._index = 0  # the part the last ``_locate`` found
        self._n = 0
        if first:
            self.extend(first)

    def __len__(self) -> int:
        return self._n

    def extend(self, items: Sequence[Any]) -> None:
        if not items:
            return
        self._starts.append(self._n)
        self._parts.append(list(items))
        self._left.append(len(items))
        self._n += len(items)

    def __getitem__(self, pos: int) -> Any:
        found = self._locate(pos)
        if found is None or found[0][found[1]] is _GONE:
            raise KeyError(pos)
        return found[0][found[1]]

    def take(self, positions: Sequence[int]) -> list[Any]:
        """The items at ``positions`` (a Call's payload): one slice when they are a range in
        one part."""
        if isinstance(positions, range) and positions.step == 1 and len(positions):
            found = self._locate(positions.start)
            if found is not None and found[1] + len(positions) <= len(found[0]):
                a = found[1]
                items = found[0][a : a + len(positions)]
                if _GONE not in items:
                    return items
        return [self[pos] for pos in positions]

    def forget(self, positions: Sequence[int]) -> None:
        """Let the items at ``positions`` go (their tasks are final); unknown or forgotten
        positions are ignored."""
        if isinstance(positions, range) and positions.step == 1 and len(positions):
            found = self._locate(positions.start)
            if found is not None and found[1] + len(positions) <= len(found[0]):
                part, a = found
                b = a + len(positions)
                gone = part[a:b].count(_GONE)
                part[a:b] = [_GONE] * (b - a)
                self._lost(self._index, (b - a) - gone)
                return
        for pos in positions:
            found = self._locate(pos)
            if found is not None and found[0][found[1]] is not _GONE:
                found[0][found[1]] = _GONE
                self._lost(self._index, 1)

    def __iter__(self) -> Iterator[int]:
        """The positions whose items are kept."""
        for start, part in zip(self._starts, self._parts, strict=True):
            if part is not None:
                yield from (start + k for k, item in enumerate(part) if item is not _GONE)

    def _locate(self, pos: int) -> tuple[list[Any], int] | None:
        """The live part holding ``pos`` and its offset there (``_index``: the part's
        index), or None."""
        i = bisect_right(self._starts, pos, lo=self._head) - 1
        if i < self._head:
            return None
        part = self._parts[i]
        offset = pos - self._starts[i]
        if part is None or offset >= len(part):
            return None
        self._index = i
        return part, offset

    def _lost(self, i: int, k: int) -> None:
        """``k`` more items of part ``i`` are forgotten: a part with none left goes."""
        self._left[i] -= k
        if self._left[i] == 0:
            self._parts[i] = None
            self._drop_done()

    def _drop_done(self) -> None:
        """Move past the leading parts that are gone, and shorten the index lists now and
        then (a retried item keeps only its own part)."""
        head, parts = self._head, self._parts
        while head < len(parts) and parts[head] is None:
            head += 1
        if head > 64 and head * 2 > len(parts):  # keep the index lists short
            del self._starts[:head], self._parts[:head], self._left[:head]
            head = 0
        self._head = head
