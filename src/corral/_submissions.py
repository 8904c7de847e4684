"""Tasks submitted one at a time (``Pool.submit``, ``Executor.submit``, the joblib backend) on
their way to the engine, gathered into batches.

    caller threads                            engine thread
    ──────────────                            ─────────────
    submit(fn, args, kwargs)
      acquire fn (pickled here if it changed)
      Future
      append to pending ── lock ──┐
      post a flush if pending     │
      was empty ──────────────────┼──► inbox ──► flush: take all of pending; each entry joins
                                  └────────────         the current batch (Engine.extend), or
                                                        starts a new one (Engine.accept) when
                                                        that one is done, stopped or full

One batch per submitted task would cost the engine a batch's set-up and completion per task,
and the caller one wakeup write per task. Here a flood of submits shares a few batches: the
dispatcher hands their positions out in chunks like a ``map``'s (a chunk's futures are set
running when it is sent, as ``ProcessPoolExecutor`` does with the calls it queues), and only
the first submit after a flush wakes the engine. A batch is created closed (no ``extend`` is
promised), so it completes as soon as its tasks are final and nothing is left open when the
pool closes, is collected, or the interpreter exits; the next flush then starts a new one.

Ownership. ``_pending`` belongs to the callers, under ``_lock``: they append, the flush takes
the whole list. Everything else (the current batch, its keys, the function references it
holds, the sink's futures) belongs to the engine thread.

Invariant: a flush is posted exactly when ``_pending`` goes from empty to non-empty, so every
entry is taken by the flush posted for it or by one still queued before it.

Functions: each submit acquires one reference to its function's entry (``_functions``); a
batch keeps one reference per distinct function, which the engine releases when the batch
completes, and the flush releases the extra ones at once.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from types import ModuleType
from typing import Any

from ._batch import Batch, OkRecord
from ._engine import Engine
from ._errors import CorralError, RemoteTraceback, SerializationError
from ._functions import FunctionTable
from ._options import RunOptions
from ._outcome import Outcome
from ._sinks import _callbacks_guarded as callbacks_guarded

BATCH_MAX = 4096
"""Positions per batch before a new one starts: a batch's records (states, keys) live as long
as it has unfinished tasks, so a never-ending stream of submits must not keep one batch."""

_Entry = tuple[int, tuple[Any, ...], dict[str, Any], "Future[Any]", Any]
"""(function id, args, kwargs, future, key) of one submitted task."""


class Submissions:
    """The submit path of one Pool: callers' ``submit``, the engine thread's ``_flush``.

    Refers to the engine, never to the Pool (``_pool``: a Pool dropped while a flush waits in
    the inbox must still be collected)."""

    def __init__(
        self,
        engine: Engine,
        functions: FunctionTable,
        options: RunOptions,
        post: Callable[[Callable[[], None]], None],
    ) -> None:
        self._engine = engine
        self._functions = functions
        self._options = options
        self._post = post
        self._lock = threading.Lock()
        self._pending: list[_Entry] = []
        self._flush_action = functools.partial(_flush, self)  # no bound method: no cycle
        self.conform = False
        """Fail futures as ``concurrent.futures`` does (``conform``): ``conform_errors``."""
        # engine thread only:
        self._batch: Batch | None = None
        self._held: set[int] = set()  # function ids the current batch holds a reference to
        self._count = itertools.count()

    def conform_errors(self) -> None:
        """Fail futures as ``concurrent.futures`` does from now on (the Executor)."""
        _import_process()
        self.conform = True

    # -- caller threads ---------------------------------------------------------------------
    def submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], key: Any
    ) -> Future[Any]:
        fn_id = self._functions.acquire(fn)  # raises SerializationError: nothing acquired
        future: Future[Any] = Future()
        with self._lock:
            first = not self._pending
            self._pending.append((fn_id, args, kwargs, future, key))
        if first:
            self._post(self._flush_action)
        return future

    def sync(self, timeout: float = 10.0) -> None:
        """Return once the engine has taken every task submitted so far and handed what it
        could to the workers (their futures are then running): what is still pending after
        that no worker has. Bounded: an engine stuck in a done callback is not waited for."""
        reached = threading.Event()
        self._post(functools.partial(self._engine.after_dispatch, reached.set))
        reached.wait(timeout)

    # -- engine thread ----------------------------------------------------------------------
    def flush(self) -> None:
        with self._lock:
            entries, self._pending = self._pending, []
        engine = self._engine
        batch = self._batch
        start = 0
        while start < len(entries):
            if batch is None or batch.done or batch.cancelled or batch.n >= BATCH_MAX:
                self._held = set()
                part = entries[start : start + BATCH_MAX]
                sink = FuturesSink(self.conform)
                keys: list[Any] = []
                items = self._admit(sink, keys, 0, part)
                batch = Batch(
                    dict(enumerate(items)),
                    fn_ids=frozenset(self._held),  # released when the batch completes
                    fn_id=-1,
                    star=True,
                    options=self._options,
                    sink=sink,
                    keys=keys,
                )
                engine.accept(batch)
            else:
                assert isinstance(batch.sink, FuturesSink) and isinstance(batch.keys, list)
                part = entries[start : start + BATCH_MAX - batch.n]
                items = self._admit(batch.sink, batch.keys, batch.n, part)
                batch.fn_ids = frozenset(self._held)
                engine.extend(batch, items, True)
            start += len(part)
        self._batch = batch

    def _admit(
        self, sink: FuturesSink, keys: list[Any], n: int, entries: Sequence[_Entry]
    ) -> list[Any]:
        """The items of ``entries``, to be positions ``n``, ``n + 1``... of the current
        batch; their futures and keys recorded in its sink and key list."""
        futures, held, count = sink.futures, self._held, self._count
        items = []
        for offset, (fn_id, args, kwargs, future, key) in enumerate(entries):
            if fn_id in held:
                self._functions.release(fn_id)  # the batch holds one reference already
            else:
                held.add(fn_id)
            futures[n + offset] = future
            number = next(count)
            keys.append(number if key is None else key)
            items.append((fn_id, args, kwargs))
        return items


def _flush(submissions: Submissions) -> None:
    submissions.flush()


class FuturesSink:
    """Completes the futures of a batch of submitted tasks, one per position. Engine thread."""

    claims = True

    def __init__(self, conform: bool = False) -> None:
        self.futures: dict[int, Future[Any]] = {}
        self.conform = conform

    def claim(self, pos: int) -> bool:
        # A future is set running once: claimed already, it was sent to a worker that died
        # before starting it (or was queued behind a Call that crashed) and is sent again.
        future = self.futures[pos]
        return future.running() or future.set_running_or_notify_cancel()

    def ok(self, positions: Sequence[int], values: list[Any], record: OkRecord) -> None:
        futures = self.futures
        for pos, value in zip(positions, values, strict=True):
            future = futures.pop(pos)
            with callbacks_guarded(future):
                future.set_result(value)

    def failed(self, pos: int, outcome: Outcome) -> None:
        future = self.futures.pop(pos, None)
        if future is None or future.done():
            return
        if not future.running() and not future.set_running_or_notify_cancel():
            return  # cancelled by its caller: it stays cancelled
        error = outcome.error
        if self.conform and error is not None:
            try:
                error = conform(error)
            except Exception:  # never on the engine thread's way: keep corral's error
                logging.getLogger("corral").exception("conforming the error of %r failed", pos)
        with callbacks_guarded(future):
            future.set_exception(error)

    def given(self, pos: int, outcome: Outcome) -> None:  # pragma: no cover - never given
        raise AssertionError("submitted tasks have no outcomes given up front")

    def close(self) -> None:
        futures, self.futures = self.futures, {}
        for future in futures.values():  # only when the engine itself failed
            if future.done():
                continue
            error = CorralError("the corral engine stopped before this task ran")
            with callbacks_guarded(future):
                if future.set_running_or_notify_cancel():
                    future.set_exception(error)


_process: ModuleType | None = None
"""``concurrent.futures.process``, once an Executor needs it (``_import_process``)."""


def _import_process() -> None:
    """Import ``concurrent.futures.process`` (and its queue, multiprocessing.queues) for
    ``conform``: on the caller's thread when an Executor is made, never lazily in ``conform``
    (an import on the engine thread may fail at interpreter exit), nor for every first map."""
    global _process
    from concurrent.futures import process

    _process = process


def conform(error: BaseException) -> BaseException:
    """``error`` as ``concurrent.futures.ProcessPoolExecutor`` would give it: the worker's
    traceback as a ``concurrent.futures.process._RemoteTraceback`` cause (corral's own
    ``RemoteTraceback`` has the same ``tb`` text), and an argument that would not pickle as
    the exception pickling raised (the task named in a note, on Python 3.11+) instead of
    corral's ``SerializationError`` (a ``TypeError``, kept on 3.10)."""
    cause = error.__cause__
    if type(cause) is RemoteTraceback and _process is not None:
        error.__cause__ = _process._RemoteTraceback(cause.tb)
    elif (
        isinstance(error, SerializationError)
        and isinstance(cause, BaseException)
        and hasattr(cause, "add_note")
    ):
        cause.add_note(
            f"corral: the arguments of task {getattr(error, 'key', None)!r} cannot be pickled"
        )
        return cause
    return error
