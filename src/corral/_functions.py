"""The table of task functions a Pool has pickled: pickled per batch, sent once per worker.

A function is pickled for every batch (``map``, ``run``, ``imap`` call, ``submit``), on the
caller's thread, so that a batch runs what the function *is* when the batch is submitted: a
function of ``__main__`` or a closure is pickled by value, with the globals it reads and the
cells it closes over, and a warm Pool must see a change of them as ``corral.map`` and a serial
loop do. An unpicklable function fails there, before any work starts. The bytes are then
looked up by their digest: identical bytes get the same id, and a worker that already has that
id is not sent them again.

Two shortcuts keep this cheap for a function submitted again and again (``submit`` in a loop):
a function that cloudpickle pickles by reference (an importable module's function: its bytes
are its name) is known by identity and never pickled again; from its second batch on, the same
function object gets a *fingerprint* of what it reads (``_codec.fingerprint``, a few times
cheaper than pickling, made before pickling), and while that equals the one taken with its
last pickle, the bytes are the same and are not made again.

The engine thread looks functions up while their batches run and releases them when the
batches end; a lock guards the table because both sides touch it. An entry's life::

    acquire ──► IN USE (refs > 0: the function and its bytes are held here, for workers
       ▲           │    that start or restart during the batch)
       │           │ last release
       │           ├── bigger than KEEP_BYTES_EACH ──────────────────────────► FORGOTTEN
       │           ▼                                                              ▲
       └───── IDLE (the pickle, its digest and timings are held ─────────────────┘
              here, not the function; workers that have it keep it)
                                               pushed out by KEEP_IDLE / KEEP_IDLE_BYTES

A forgotten id is never used again; ``forgotten()`` hands the engine the ids that workers may
drop (sent with each worker's next Call, ``Slot.drop``). So what a worker keeps of finished
batches is bounded by the same budget as the table: at most ``KEEP_IDLE`` functions, together
at most ``KEEP_IDLE_BYTES`` of pickles, each at most ``KEEP_BYTES_EACH``; the coordinator keeps
those pickles, not the functions (a weak reference to each keeps nothing alive). The table
also remembers how long a function's calls take, which lets the first chunks of its next batch
be sized well (``Batch.chunk_size``).

With the serial backend nothing is pickled: functions are known by identity.
"""

from __future__ import annotations

import functools
import itertools
import pickle
import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from ._codec import PROTOCOL, SizeWarnings, blake2b, dump_function, fingerprint
from ._record import Record

KEEP_IDLE = 32
"""Idle functions kept (here pickled, in workers unpickled) for the next batches."""
KEEP_IDLE_BYTES = 8 << 20
"""Their pickles together at most this big."""
KEEP_BYTES_EACH = 1 << 20
"""A function that pickles bigger is forgotten as soon as no batch uses it."""

SEEN_MAX = 256
"""Function objects whose last bytes are remembered (by weak reference and fingerprint)."""

_BY_REFERENCE_MAX = 512
"""A pickle by reference is a module and a name: longer ones are not looked at."""


class _Entry(Record):
    """``key``: the digest of the pickle; with the serial backend, the entry's own id.
    ``fn``: held while in use (and always for a function pickled by reference).
    ``blob``: the pickle (None with the serial backend): for workers that do not have it yet.
    Idle entries keep it too: within the idle budget, and a function reacquired by
    fingerprint (not pickled again) needs it."""

    __slots__ = ("fn_id", "key", "fn", "blob", "size", "refs", "by_reference", "seconds",  # noqa: RUF023
                 "calls")  # fmt: skip

    def __init__(
        self,
        fn_id: int,
        key: Hashable,
        fn: Callable[..., Any] | None,
        blob: bytes | None,
        size: int,
        refs: int = 0,
        by_reference: bool = False,
        seconds: float = 0.0,
        calls: int = 0,
    ) -> None:
        self.fn_id = fn_id
        self.key = key
        self.fn = fn
        self.blob = blob
        self.size = size
        self.refs = refs
        self.by_reference = by_reference
        self.seconds = seconds
        self.calls = calls


class _Seen(Record):
    """A function object acquired recently, and what its bytes were then.

    ``ref``: a weak reference; a strong one for what is pickled by name and cannot be weakly
    referenced (a builtin such as ``abs``: its module holds it anyway). ``fn_id``: its
    entry's id (not the entry: a forgotten entry's pickle must not stay alive here)."""

    __slots__ = ("ref", "fingerprint", "fn_id")  # noqa: RUF023

    def __init__(self, ref: Callable[[], Any], fingerprint: bytes | None, fn_id: int) -> None:
        self.ref = ref
        self.fingerprint = fingerprint
        self.fn_id = fn_id


class FunctionTable:
    def __init__(self, *, pickle: bool) -> None:
        self._pickle = pickle
        self._lock = threading.Lock()
        self._by_id: dict[int, _Entry] = {}
        self._by_key: dict[Hashable, _Entry] = {}
        self._seen: OrderedDict[int, _Seen] = OrderedDict()
        """id(fn) -> what it was, for the SEEN_MAX function objects acquired last."""
        self._idle: OrderedDict[int, _Entry] = OrderedDict()
        self._idle_bytes = 0
        self._forgotten: list[int] = []
        self._ids = itertools.count()
        self.pickles = 0
        """How many times a function was pickled (tests read it)."""
        self.sizes = SizeWarnings()

    # -- caller threads -----------------------------------------------------------------------
    def acquire(self, fn: Callable[..., Any]) -> int:
        """The id of ``fn`` as it is now, for one batch (raises SerializationError naming the
        function when it cannot be pickled). Released with ``release`` when the batch ends."""
        with self._lock:  # the common case, known by identity: no pickling, one lock
            entry = self._known(fn, None)
            if entry is not None:
                self._take_once(entry, fn, set())
                return entry.fn_id
        return self.acquire_all([fn])[0]

    def acquire_all(self, fns: Iterable[Callable[..., Any]]) -> list[int]:
        """The ids of ``fns`` for one batch, each distinct function pickled at most once; one
        reference is taken per distinct id (release each id of the batch once). Nothing is
        acquired when one of them cannot be pickled."""
        fns = list(fns)
        distinct = {id(fn): fn for fn in fns}
        ids: dict[int, int] = {}  # id(fn) -> fn_id
        taken: set[int] = set()
        prints: dict[int, bytes | None] = {}
        seen_before: list[int] = []
        for fingerprinted in (False, True):  # known by identity alone, then by fingerprint
            if fingerprinted:
                # Only for an object seen before: a fresh lambda per batch or per Task is
                # pickled without paying for a fingerprint too.
                prints = {k: fingerprint(distinct[k]) for k in seen_before if k not in ids}
            with self._lock:
                for k, fn in distinct.items():
                    if k in ids:
                        continue
                    entry = self._known(fn, prints.get(k))
                    if entry is not None:
                        ids[k] = entry.fn_id
                        self._take_once(entry, fn, taken)
                    elif not fingerprinted and self._pickle and self._seen_before(fn):
                        seen_before.append(k)
        made: dict[int, tuple[Hashable, bytes | None, bool]] = {}
        try:
            for k, fn in distinct.items():
                if k not in ids:
                    made[k] = self._pickled(fn)
        except BaseException:
            for fn_id in taken:
                self.release(fn_id)
            raise
        with self._lock:
            for k, (key, blob, by_reference) in made.items():
                fn = distinct[k]
                entry = self._entry_for(fn, key, blob, by_reference)
                self._remember(fn, prints.get(k), entry)
                ids[k] = entry.fn_id
                self._take_once(entry, fn, taken)
        return [ids[id(fn)] for fn in fns]

    def _known(self, fn: Callable[..., Any], print_: bytes | None) -> _Entry | None:
        """The entry of ``fn`` if its bytes are known not to have changed (lock held)."""
        seen = self._seen.get(id(fn))
        entry = self._by_id.get(seen.fn_id) if seen is not None else None
        if seen is None or entry is None or seen.ref() is not fn:
            return None
        same = (
            not self._pickle
            or entry.by_reference
            or (print_ is not None and print_ == seen.fingerprint)
        )
        if not same:
            return None
        self._seen.move_to_end(id(fn))
        return entry

    def _seen_before(self, fn: Callable[..., Any]) -> bool:
        seen = self._seen.get(id(fn))
        return seen is not None and seen.ref() is fn

    def _remember(self, fn: Callable[..., Any], print_: bytes | None, entry: _Entry) -> None:
        """Note what ``fn`` pickled to, for its next batch (lock held). Without a fingerprint
        (the first time it is seen), the next batch pickles it again and makes one."""
        ref: Callable[[], Any]
        try:
            ref = weakref.ref(fn)
        except TypeError:  # not weakly referable: pickled every time, unless pickled by name
            if not entry.by_reference:
                return
            ref = functools.partial(_same, fn)
        self._seen[id(fn)] = _Seen(ref, print_, entry.fn_id)
        self._seen.move_to_end(id(fn))
        while len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)

    def _pickled(self, fn: Callable[..., Any]) -> tuple[Hashable, bytes | None, bool]:
        """``(key, blob, by_reference)`` of ``fn``, pickled now (no lock held: it is slow)."""
        if not self._pickle:
            return object(), None, False  # the serial backend: known by identity only
        blob = dump_function(fn)
        self.pickles += 1
        self.sizes.function(fn, len(blob))
        key = blake2b(blob, digest_size=16).digest()
        return key, blob, _by_reference(fn, blob)

    def _entry_for(
        self, fn: Callable[..., Any], key: Hashable, blob: bytes | None, by_reference: bool
    ) -> _Entry:
        """The entry with these bytes, or a new one (lock held)."""
        entry = self._by_key.get(key)
        if entry is None:
            entry = _Entry(next(self._ids), key, None, blob, len(blob or b""), 0, by_reference)
            self._by_id[entry.fn_id] = entry
            self._by_key[key] = entry
        elif entry.blob is None:
            entry.blob = blob
        return entry

    def _take_once(self, entry: _Entry, fn: Callable[..., Any], taken: set[int]) -> None:
        """One reference per batch on ``entry`` (lock held)."""
        if entry.fn_id in taken:
            return
        taken.add(entry.fn_id)
        entry.refs += 1
        if entry.fn is None:
            entry.fn = fn
        if self._idle.pop(entry.fn_id, None) is not None:
            self._idle_bytes -= entry.size

    # -- engine thread --------------------------------------------------------------------------
    def release(self, fn_id: int) -> None:
        """A batch that used ``fn_id`` has ended (once per id per batch)."""
        with self._lock:
            entry = self._by_id.get(fn_id)
            if entry is None:
                return
            entry.refs -= 1
            if entry.refs > 0:
                return
            if not entry.by_reference:  # what a closure or __main__ function holds goes
                entry.fn = None
            if entry.size > KEEP_BYTES_EACH:
                self._forget(entry)
                return
            self._idle[fn_id] = entry
            self._idle_bytes += entry.size
            while len(self._idle) > KEEP_IDLE or self._idle_bytes > KEEP_IDLE_BYTES:
                self._forget(next(iter(self._idle.values())))

    def _forget(self, entry: _Entry) -> None:
        if self._idle.pop(entry.fn_id, None) is not None:
            self._idle_bytes -= entry.size
        del self._by_id[entry.fn_id]
        if self._by_key.get(entry.key) is entry:
            del self._by_key[entry.key]
        if self._pickle:  # (what _seen says of it is ignored from now on: not in _by_id)
            self._forgotten.append(entry.fn_id)

    def forgotten(self) -> list[int]:
        """The ids forgotten since the last call: workers that have them may drop them."""
        with self._lock:
            gone, self._forgotten = self._forgotten, []
            return gone

    def blob(self, fn_id: int) -> bytes:
        with self._lock:
            blob = self._by_id[fn_id].blob
        if blob is None:
            raise LookupError(f"function {fn_id} is not used by any batch")
        return blob

    def function(self, fn_id: int) -> Callable[..., Any]:
        with self._lock:
            fn = self._by_id[fn_id].fn
        if fn is None:
            raise LookupError(f"function {fn_id} is not used by any batch")
        return fn

    def idle_bytes(self) -> int:
        with self._lock:
            return self._idle_bytes

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


def _by_reference(fn: Callable[..., Any], blob: bytes) -> bool:
    """Whether cloudpickle pickled ``fn`` by reference (as plain pickle would: by module and
    name), so that its bytes cannot change while it is the same object."""
    if len(blob) > _BY_REFERENCE_MAX or not isinstance(
        fn, types.FunctionType | types.BuiltinFunctionType
    ):
        return False
    try:
        return pickle.dumps(fn, PROTOCOL) == blob
    except Exception:  # a lambda, a __main__ function pickled by value: not by reference
        return False


def _same(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn
