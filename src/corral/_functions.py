"""The table of task functions a Pool has pickled, so each is pickled once and sent once.

Callers register functions on their own threads (pickling happens there, at the boundary, so an
unpicklable function fails before any work starts); the engine thread looks them up and releases
them when the batches that used them are done. A lock guards the table because both sides
touch it.

A released function stays in the table (and in the workers that have it) while it is among the
``KEEP_IDLE`` most recently used, so a warm Pool that maps the same function again and again
pickles and ships it once. The table also remembers how long the function's calls take, which
lets the first chunks of the next batch be sized well (``Batch.chunk_size``).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._codec import dump_function

KEEP_IDLE = 32


@dataclass
class _Entry:
    fn: Callable[..., Any]
    fn_id: int
    blob: bytes | None
    refs: int
    seconds: float = 0.0
    calls: int = 0


class FunctionTable:
    def __init__(self, *, pickle: bool) -> None:
        self._pickle = pickle
        self._lock = threading.Lock()
        self._by_object: dict[int, _Entry] = {}
        self._by_id: dict[int, _Entry] = {}
        self._idle: OrderedDict[int, _Entry] = OrderedDict()
        self._ids = itertools.count()

    def acquire(self, fn: Callable[..., Any]) -> int:
        """The id of ``fn``, pickling it if this table has not seen it (raises
        SerializationError naming the function when it cannot be pickled)."""
        with self._lock:
            entry = self._by_object.get(id(fn))
            if entry is not None and entry.fn is fn:
                entry.refs += 1
                self._idle.pop(entry.fn_id, None)
                return entry.fn_id
        blob = dump_function(fn) if self._pickle else None
        with self._lock:
            entry = _Entry(fn, next(self._ids), blob, 1)
            self._by_object[id(fn)] = entry
            self._by_id[entry.fn_id] = entry
            return entry.fn_id

    def release(self, fn_id: int) -> list[int]:
        """Drop one reference; the ids of functions the workers may now forget."""
        with self._lock:
            entry = self._by_id.get(fn_id)
            if entry is None:
                return []
            entry.refs -= 1
            if entry.refs > 0:
                return []
            self._idle[fn_id] = entry
            forget = []
            while len(self._idle) > KEEP_IDLE:
                _, old = self._idle.popitem(last=False)
                del self._by_id[old.fn_id]
                if self._by_object.get(id(old.fn)) is old:
                    del self._by_object[id(old.fn)]
                forget.append(old.fn_id)
            return forget

    def blob(self, fn_id: int) -> bytes | None:
        with self._lock:
            return self._by_id[fn_id].blob

    def function(self, fn_id: int) -> Callable[..., Any]:
        with self._lock:
            return self._by_id[fn_id].fn

    def learn(self, fn_id: int, seconds: float, calls: int) -> None:
        with self._lock:
            entry = self._by_id.get(fn_id)
            if entry is not None:
                entry.seconds += seconds
                entry.calls += calls

    def mean_seconds(self, fn_id: int) -> float | None:
        """Mean duration of the function's calls so far, or None when never measured."""
        with self._lock:
            entry = self._by_id.get(fn_id)
            if entry is None or not entry.calls:
                return None
            return entry.seconds / entry.calls
