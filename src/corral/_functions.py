"""The table of task functions a Pool has pickled, so each is pickled once and sent once.

Callers register functions on their own threads (pickling happens there, at the boundary, so an
unpicklable function fails before any work starts); the engine thread looks them up and releases
them when the batches that used them are done. A lock guards the table because both sides
touch it.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._codec import dump_function


@dataclass
class _Entry:
    fn: Callable[..., Any]
    fn_id: int
    blob: bytes | None
    refs: int


class FunctionTable:
    def __init__(self, *, pickle: bool) -> None:
        self._pickle = pickle
        self._lock = threading.Lock()
        self._by_object: dict[int, _Entry] = {}
        self._by_id: dict[int, _Entry] = {}
        self._ids = itertools.count()

    def acquire(self, fn: Callable[..., Any]) -> int:
        """The id of ``fn``, pickling it if this table has not seen it (raises
        SerializationError naming the function when it cannot be pickled)."""
        with self._lock:
            entry = self._by_object.get(id(fn))
            if entry is not None and entry.fn is fn:
                entry.refs += 1
                return entry.fn_id
        blob = dump_function(fn) if self._pickle else None
        with self._lock:
            entry = _Entry(fn, next(self._ids), blob, 1)
            self._by_object[id(fn)] = entry
            self._by_id[entry.fn_id] = entry
            return entry.fn_id

    def release(self, fn_id: int) -> bool:
        """Drop one reference; True when the function is gone and workers may forget it."""
        with self._lock:
            entry = self._by_id.get(fn_id)
            if entry is None:
                return False
            entry.refs -= 1
            if entry.refs > 0:
                return False
            del self._by_id[fn_id]
            if self._by_object.get(id(entry.fn)) is entry:
                del self._by_object[id(entry.fn)]
            return True

    def blob(self, fn_id: int) -> bytes | None:
        with self._lock:
            return self._by_id[fn_id].blob

    def function(self, fn_id: int) -> Callable[..., Any]:
        with self._lock:
            return self._by_id[fn_id].fn
